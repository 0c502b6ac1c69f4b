"""Edits per second of a learned editor's training step, and what the step spends its time on, in one run.

    python scripts/benchmark_training_step.py --editor mend --steps 30
    python scripts/benchmark_training_step.py --editor mend --data shared:zsre/zsre_mend_train_10000.json#0:200 \
        --format zsre_mend --edits-per-batch 1 --output results/benchmark_training_step.jsonl

A step is what ``training_step`` does (edit, the in-scope NLL through the edited model, the out-of-scope KL against
the unedited model) plus its backward pass and an Adam step. It is timed twice on every batch, alternately, with
the blocks below the edited ones replayed (:mod:`lit_edit.editors.lower_blocks`, what training uses: the unedited
out-of-scope pass records them for the edited one; MEND's edit pass, made over every row the step reads, records
them for all the other passes) and with every pass in full, so the speed-up is a ratio taken under the same load.
The breakdown is one more replayed step (not counted in edits/s) under ``torch.profiler``, read by the parts the step
labels itself.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import KE, MEND, Editor
from lit_edit.editors.objective import STEP_PARTS
from lit_edit.profiling import record_row, synchronized_clock


def step_seconds(editor: Editor, batch, optimizer: torch.optim.Optimizer, replay: bool) -> float:
    """One training step (forward, backward, optimizer step), with or without the lower-block replay."""
    saved = editor.lower_blocks
    if not replay:
        editor.__dict__["_lower_blocks"] = None
    try:
        start = synchronized_clock()
        optimizer.zero_grad()
        loss = editor.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        return synchronized_clock() - start
    finally:
        editor.__dict__["_lower_blocks"] = saved


def breakdown(editor: Editor, batch) -> dict[str, float]:
    """Seconds of each part of one replayed training step, as the step itself labels them for ``torch.profiler``
    (:data:`lit_edit.editors.objective.STEP_PARTS`), and of its backward pass."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        loss = editor.training_step(batch, 0)
    start = synchronized_clock()
    loss.backward()
    backward = synchronized_clock() - start
    seconds = {event.key: event.cpu_time_total / 1e6 for event in profiler.key_averages()}
    return {**{label: seconds[label] for label in STEP_PARTS.values()}, "backward to the editor's weights": backward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--editor", choices=["mend", "ke"], default="mend")
    parser.add_argument("--data", default="builtin:train")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--edits-per-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="batches timed (after two warm-up steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="results/benchmark_training_step.jsonl", help="a line is appended")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the step logs; there is no Trainer here
    editor: Editor = (MEND() if args.editor == "mend" else KE()).to(args.device).eval()
    if editor.lower_blocks is None:
        raise SystemExit(f"{args.editor}: nothing below its edited weights to replay")
    optimizer = torch.optim.Adam([p for p in editor.parameters() if p.requires_grad], lr=1.0e-5)
    data = EditDataModule(train=args.data, val=args.data, format=args.format, model=editor.model_spec,
                          edits_per_batch=args.edits_per_batch)
    data.setup("fit")
    batches = [batch.to(args.device) for batch in itertools.islice(data.train_dataloader(), args.steps + 2)]
    for batch in batches[:2]:
        step_seconds(editor, batch, optimizer, replay=True)  # warm-up, and the replay's one check
    times: dict[str, list[float]] = {"replayed": [], "full": []}
    for i, batch in enumerate(batches[2:]):
        for replay in ((True, False) if i % 2 == 0 else (False, True)):
            times["replayed" if replay else "full"].append(step_seconds(editor, batch, optimizer, replay))
    parts = breakdown(editor, batches[2])
    edits = args.edits_per_batch
    result = {
        "editor": args.editor, "data": args.data, "edits_per_batch": edits, "steps": args.steps,
        "device": args.device, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "edited_blocks_from": editor.lower_blocks.first_edited,
        "edits_per_second": {k: edits / statistics.median(v) for k, v in times.items()},
        "median_step_seconds": {k: statistics.median(v) for k, v in times.items()},
        "speedup_of_replay": statistics.median(times["full"]) / statistics.median(times["replayed"]),
        "breakdown_seconds": parts,
    }
    print(f"{args.editor}, {edits} edit(s) per step, {args.steps} steps of {args.data}, {result['threads']} thread(s):")
    for name, value in result["edits_per_second"].items():
        print(f"  {name:9s} {value:6.2f} edits/s  (median step {result['median_step_seconds'][name]:.3f} s)")
    print(f"  replaying blocks 0..{result['edited_blocks_from'] - 1}: {result['speedup_of_replay']:.2f}x")
    total = sum(parts.values())
    for name, seconds in parts.items():
        print(f"    {100 * seconds / total:5.1f}%  {name}")
    record_row(result, args.output)


if __name__ == "__main__":
    main()
