"""The search for v* (ROME) or z* (MEMIT) against the same search at an earlier revision, timed in one run.

    python scripts/benchmark_target_search.py --facts 1 --baseline 6bb9298   # one ROME-sized search: logits
    python scripts/benchmark_target_search.py --facts 8 --baseline 64d755a   # one MEMIT chunk: per-fact stopping

Both versions of ``lit_edit.editors.key_value.optimise_shift`` (the baseline's read with ``git show``) search
for the same facts of CounterFact val, on SmolLM2 at MEMIT's last layer, in alternating repeats. Ratios, not
seconds, because these machines are noisy. The run's figures are appended to ``--output``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import MEMIT
from lit_edit.editors.key_value import essence_rows, fact_rows, optimise_shift
from lit_edit.profiling import record_row, synchronized_clock


def module_at(revision: str, path: str = "lit_edit/editors/key_value.py") -> ModuleType:
    """``path`` as it was at ``revision``, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp()) / "key_value_baseline.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision whose optimise_shift is compared")
    parser.add_argument("--facts", type=int, default=8, help="facts searched for together (one MEMIT chunk)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each version")
    parser.add_argument("--data", default="shared:counterfact/counterfact-val.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="results/benchmark_target_search.jsonl")
    args = parser.parse_args()

    baseline = module_at(args.baseline).optimise_shift
    editor = MEMIT().to(args.device).eval()
    records = load_split(f"{args.data}#0:{args.facts}", "counterfact_easyedit")
    requests = editor.requests(editor.prompts.batch(records))
    rows = fact_rows(editor.prompts, requests, editor.prefixes()).to(editor.device)
    essence = essence_rows(editor.tokenizer, requests, editor.device)
    block = editor.layout.blocks[editor.layers[-1]]
    seconds: dict[str, list[float]] = {"baseline": [], "current": []}
    shifts: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, search in (("baseline", baseline), ("current", optimise_shift)):
            start = synchronized_clock()
            _, shifts[name] = search(editor.model, {}, editor.kind, block, rows, essence, editor.target)
            seconds[name].append(synchronized_clock() - start)
            print(name, f"{seconds[name][-1]:.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    row = {"facts": args.facts, "rows": len(rows.fact), "baseline": args.baseline, "device": args.device,
           "threads": torch.get_num_threads(), "seconds": median, "ratio": median["current"] / median["baseline"],
           "shift_change": float((shifts["current"] - shifts["baseline"]).abs().max()
                                 / shifts["baseline"].abs().max().clamp_min(1e-12)),
           "command": " ".join(sys.argv)}
    record_row(row, args.output)


if __name__ == "__main__":
    main()
