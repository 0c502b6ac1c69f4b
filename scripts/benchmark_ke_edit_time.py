"""KE's and MEND's edit time as a ratio to one forward+backward pass on the same edit, and where KE's goes.

    python scripts/benchmark_ke_edit_time.py --data "shared:counterfact/counterfact-val.json#0:20" \
        --format counterfact_easyedit --device cpu

A KE edit is one forward+backward of the edit, the base model's greedy answer to the edit prompt (one forward
pass per target token; memoised per prompt, so it is paid the first time a prompt is edited), the condition
LSTM and the gate networks. Each edit is timed twice: first sight of its prompt, then again (answer memoised).
Ratios, not seconds: these machines are noisy; every figure of one edit is taken back to back.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import KE, MEND, Editor
from lit_edit.editors.edited_model import aligned_logits, nll_loss
from lit_edit.profiling import synchronized_clock


def seconds(fn: Callable[..., Any], *args: Any) -> float:
    start = synchronized_clock()
    fn(*args)
    return synchronized_clock() - start


def forward_backward(editor: Editor, batch) -> None:
    leaves = {n: p.detach().requires_grad_(True) for n, p in editor.base_params().items()}
    torch.autograd.grad(nll_loss(*aligned_logits(editor.model, batch.edit, editor.kind, leaves)), list(leaves.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="builtin:test")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--limit", type=int, default=20, help="edits timed (one edit each; one more warms up)")
    parser.add_argument("--ke", default="checkpoints/ke-smollm2-135m/best.ckpt")
    parser.add_argument("--mend", default="checkpoints/mend-smollm2-135m/best.ckpt")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    ke, mend = KE(checkpoint=args.ke).eval().to(args.device), MEND(checkpoint=args.mend).eval().to(args.device)
    warm_up, *records = load_split(args.data, args.format)[: args.limit + 1]
    warm = ke.prompts.batch([warm_up]).to(args.device)
    for editor in (ke, mend):  # first-call overheads (allocator, kernels) out of the way
        editor.edit(warm)
    ratios: dict[str, list[float]] = {"KE, first sight of the prompt": [], "KE, answer memoised": [], "MEND": []}
    for record in records:
        batch = ke.prompts.batch([record]).to(args.device)
        reference = statistics.median(seconds(forward_backward, ke, batch) for _ in range(3))
        ratios["KE, first sight of the prompt"].append(seconds(ke.edit, batch) / reference)
        ratios["KE, answer memoised"].append(seconds(ke.edit, batch) / reference)
        ratios["MEND"].append(seconds(mend.edit, batch) / reference)
    print(f"edit time / one forward+backward, median over {len(records)} edits of {args.data} on {args.device}:")
    for name, values in ratios.items():
        print(f"  {name:30s} {statistics.median(values):6.2f}x  (p90 {sorted(values)[int(0.9 * len(values))]:.2f}x)")


if __name__ == "__main__":
    main()
