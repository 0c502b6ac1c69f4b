"""MEMIT's pass that reads keys and states, stopped after the last edited block against the whole model, in one run.

    python scripts/benchmark_key_pass.py --facts 32 --repeats 3

MEMIT writes a batch of facts one layer at a time, and before each layer reads every fact's key there and its hidden
state at the last edited layer: one no-grad pass per chunk of ``facts_per_chunk`` facts in all their contexts, for
each of the layers. Those activations come from blocks 3–7 of SmolLM2's 30, so the pass stops after block 7
(``key_value.run_until``) instead of running the blocks above and the 49,152-way output head. Both versions run on
the same CounterFact-val facts in alternating repeats, and must read the same keys and states; the ratio of their
times is printed and appended to ``--output``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import nullcontext
from unittest import mock

import torch

import lit_edit.editors.memit.memit as memit_module
from lit_edit.data.datamodule import load_split
from lit_edit.editors import MEMIT
from lit_edit.editors.key_value import fact_rows, run
from lit_edit.profiling import record_row, synchronized_clock


def whole_pass(model, params, _module, **inputs) -> None:
    """The pass as it was: every block and the output head."""
    run(model, params, **inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=32, help="facts in the chunk (MEMIT's facts_per_chunk)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each version")
    parser.add_argument("--data", default="shared:counterfact/counterfact-val.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="results/benchmark_key_pass.jsonl")
    args = parser.parse_args()

    editor = MEMIT().to(args.device).eval()
    records = load_split(f"{args.data}#0:{args.facts}", "counterfact_easyedit")
    rows = [fact_rows(editor.prompts, editor.requests(editor.prompts.batch(records)), editor.prefixes()).to(editor.device)]
    layer = editor.layers[0]
    seconds: dict[str, list[float]] = {"stopped": [], "whole": []}
    read: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    editor.keys_and_states(layer, {}, rows)  # warm-up
    for _ in range(args.repeats):
        for version in ("whole", "stopped"):
            patch = mock.patch.object(memit_module, "run_until", whole_pass) if version == "whole" else nullcontext()
            with patch:
                start = synchronized_clock()
                read[version] = editor.keys_and_states(layer, {}, rows)
                seconds[version].append(synchronized_clock() - start)
    for got, want in zip(read["stopped"], read["whole"], strict=True):
        torch.testing.assert_close(got, want)
    ratio = statistics.median(s / w for s, w in zip(seconds["stopped"], seconds["whole"], strict=True))
    row = {"facts": args.facts, "rows": int(rows[0].examples.input_ids.shape[0]),
           "tokens": int(rows[0].examples.input_ids.shape[1]), "layers": editor.layers,
           "blocks": len(editor.layout.blocks), "whole_s": seconds["whole"], "stopped_s": seconds["stopped"],
           "ratio_median": round(ratio, 3), "threads": torch.get_num_threads(), "device": args.device,
           "command": " ".join(sys.argv)}
    record_row(row, args.output)


if __name__ == "__main__":
    main()
