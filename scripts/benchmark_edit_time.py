"""Edit time per edit as a ratio to one forward+backward pass on the same edit batch, in one run.

    python scripts/benchmark_edit_time.py --data shared:zsre/zsre_mend_train_10000.json#9500:9550 \
        --mend checkpoints/mend-smollm2-135m/best.ckpt
    python scripts/benchmark_edit_time.py --data shared:counterfact/counterfact-val.json#0:30 \
        --format counterfact_easyedit --editors rome memit --device cuda
    python scripts/benchmark_edit_time.py --data shared:counterfact/counterfact-val.json#0:5 \
        --format counterfact_easyedit --editors rome memit --samples 200 --statistics-batch 16   # CPU-sized C

ROME and MEMIT read C = E[kk^T] from its cache (estimated once, before the timing starts).

The forward+backward reference is what one fine-tuning step costs: a forward pass of the edit batch and
the backward pass to the editable weights. Ratios, not seconds, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import MEMIT, MEND, ROME, Editor, FineTune
from lit_edit.editors.edited_model import aligned_logits, nll_loss
from lit_edit.key_statistics import KeyStatisticsSpec
from lit_edit.profiling import synchronized_clock


def forward_backward_seconds(editor: Editor, batch) -> float:
    leaves = {n: p.detach().requires_grad_(True) for n, p in editor.base_params().items()}
    start = synchronized_clock()
    loss = nll_loss(*aligned_logits(editor.model, batch.edit, editor.kind, leaves))
    torch.autograd.grad(loss, list(leaves.values()))
    return synchronized_clock() - start


def edit_seconds(editor: Editor, batch) -> float:
    start = synchronized_clock()
    editor.edit(batch)
    return synchronized_clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="builtin:test")
    parser.add_argument("--edits", type=int, default=30, help="edit batches timed (one edit each)")
    parser.add_argument("--format", default="auto", help="reader of --data")
    parser.add_argument("--mend", default="checkpoints/mend-smollm2-135m/best.ckpt")
    parser.add_argument("--editors", nargs="+", default=["ft", "ft_kl", "mend"],
                        choices=["ft", "ft_kl", "mend", "rome", "memit"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=KeyStatisticsSpec.samples,
                        help="passages ROME/MEMIT's C is estimated from (a cached estimate of this size is reused)")
    parser.add_argument("--statistics-batch", type=int, default=KeyStatisticsSpec.batch_size)
    args = parser.parse_args()
    statistics_spec = KeyStatisticsSpec(samples=args.samples, batch_size=args.statistics_batch)
    build = {"ft": lambda: FineTune(steps=10), "ft_kl": lambda: FineTune(steps=10, kl_weight=1.0),
             "mend": lambda: MEND(checkpoint=args.mend), "rome": lambda: ROME(statistics=statistics_spec),
             "memit": lambda: MEMIT(statistics=statistics_spec)}
    editors: list[Editor] = [build[name]().to(args.device).eval() for name in args.editors]
    for editor in editors:
        for layer in getattr(editor, "layers", []):
            editor.key_moment(layer)  # estimated once and cached, as in use
    records = load_split(args.data, args.format)[: args.edits]
    ratios: dict[str, list[float]] = {e.name: [] for e in editors}
    for record in records:
        batch = editors[0].prompts.batch([record]).to(args.device)
        for editor in editors:
            edit_seconds(editor, batch)  # warm-up on this shape
            reference = statistics.median(forward_backward_seconds(editor, batch) for _ in range(3))
            ratios[editor.name].append(edit_seconds(editor, batch) / reference)
    print(f"edit time / one forward+backward, median over {len(records)} edits of {args.data}:")
    for name, values in ratios.items():
        print(f"  {name:6s} {statistics.median(values):6.2f}x  (p90 {sorted(values)[int(0.9 * len(values))]:.2f}x)")


if __name__ == "__main__":
    main()
