"""KN's integrated gradients with the prompt's states read once, against running the whole prompt at every step.

    python scripts/benchmark_kn_attribution.py --prompts 3 --layers 18-29 --steps 8

Both ways attribute the true answer of the first ``--prompts`` CounterFact-val edit prompts on SmolLM2, alternating
per prompt, in one process; the figure is the ratio of median times (these machines are noisy) and the largest
difference of the attributions relative to their largest value. Appended to ``--output``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import KnowledgeNeurons
from lit_edit.editors.knowledge_neurons import integrated_gradients
from lit_edit.profiling import record_row, synchronized_clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--layers", default="18-29", help="first-last layer attributed (configs/evaluate_kn.yaml's)")
    parser.add_argument("--steps", type=int, default=8, help="integrated-gradients steps (one batch)")
    parser.add_argument("--data", default="shared:counterfact/counterfact-val.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="results/benchmark_kn_attribution.jsonl")
    args = parser.parse_args()
    first, last = (int(x) for x in args.layers.split("-"))
    editor = KnowledgeNeurons(layers=list(range(first, last + 1))).to(args.device).eval()
    seconds: dict[str, list[float]] = {"whole": [], "reused": []}
    difference = 0.0
    for record in load_split(f"{args.data}#0:{args.prompts}", "counterfact_easyedit"):
        ids = torch.tensor([editor.tokenizer(record.prompt)["input_ids"]], device=editor.device)
        target = editor.tokenizer(" " + record.target_true, add_special_tokens=False)["input_ids"][0]
        found = {}
        for name in seconds:
            start = synchronized_clock()
            found[name] = integrated_gradients(editor.layout, ids, target, editor.layers, args.steps, args.steps,
                                               reuse_prefix_states=name == "reused")
            seconds[name].append(synchronized_clock() - start)
        difference = max(difference, float((found["reused"] - found["whole"]).abs().max() / found["whole"].abs().max()))
        print({name: round(values[-1], 2) for name, values in seconds.items()}, flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    row = {"prompts": args.prompts, "layers": args.layers, "steps": args.steps, "device": args.device,
           "threads": torch.get_num_threads(), "seconds": median, "ratio": median["reused"] / median["whole"],
           "relative_difference": difference, "command": " ".join(sys.argv)}
    record_row(row, args.output)


if __name__ == "__main__":
    main()
