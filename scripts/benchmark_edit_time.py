"""Edit time per edit as a ratio to one forward+backward pass on the same edit batch, in one run.

    python scripts/benchmark_edit_time.py --data shared:zsre/zsre_mend_train_10000.json#9500:9550 \
        --mend checkpoints/mend-smollm2-135m/best.ckpt

The forward+backward reference is what one fine-tuning step costs: a forward pass of the edit batch and
the backward pass to the editable weights. Ratios, not seconds, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import MEND, Editor, FineTune
from lit_edit.editors.edited_model import aligned_logits, nll_loss


def forward_backward_seconds(editor: Editor, batch) -> float:
    leaves = {n: p.detach().requires_grad_(True) for n, p in editor.base_params().items()}
    start = time.perf_counter()
    loss = nll_loss(*aligned_logits(editor.model, batch.edit, editor.kind, leaves))
    torch.autograd.grad(loss, list(leaves.values()))
    return time.perf_counter() - start


def edit_seconds(editor: Editor, batch) -> float:
    start = time.perf_counter()
    editor.edit(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="builtin:test")
    parser.add_argument("--edits", type=int, default=30, help="edit batches timed (one edit each)")
    parser.add_argument("--mend", default="checkpoints/mend-smollm2-135m/best.ckpt")
    args = parser.parse_args()
    editors: list[Editor] = [FineTune(steps=10), FineTune(steps=10, kl_weight=1.0), MEND(checkpoint=args.mend)]
    for editor in editors:
        editor.eval()
    records = load_split(args.data)[: args.edits]
    ratios: dict[str, list[float]] = {e.name: [] for e in editors}
    for record in records:
        batch = editors[0].prompts.batch([record])
        for editor in editors:
            edit_seconds(editor, batch)  # warm-up on this shape
            reference = statistics.median(forward_backward_seconds(editor, batch) for _ in range(3))
            ratios[editor.name].append(edit_seconds(editor, batch) / reference)
    print(f"edit time / one forward+backward, median over {len(records)} edits of {args.data}:")
    for name, values in ratios.items():
        print(f"  {name:6s} {statistics.median(values):6.2f}x  (p90 {sorted(values)[int(0.9 * len(values))]:.2f}x)")


if __name__ == "__main__":
    main()
