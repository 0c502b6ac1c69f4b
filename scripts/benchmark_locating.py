"""Locating editors on CounterFact: ROME by layer, and MEMIT as the number of simultaneous edits grows.

    python scripts/benchmark_locating.py rome-layers --layers 2 4 5 6 8 --edits 50
    python scripts/benchmark_locating.py memit --sizes 1 10 100 1000 [--cache-targets]
    python scripts/benchmark_locating.py memit --sizes 1000 --targets-only 500:1000   # z* only, cached

Scores are CounterFact's (efficacy, paraphrase and neighbourhood: the fraction of prompts where the new target
beats the true one, or for neighbours the true beats the new) plus ES/DD, from the same ``EditScores`` that
``evaluate.py`` logs. Each run appends its figures, with the command, to ``--output`` (JSON lines).

With ``--cache-targets`` every z* is kept under ``checkpoints/targets/`` as soon as its chunk is searched, so a run
of 1,000 edits that is stopped resumes at the facts it had not reached, and reuses the z* that
``configs/evaluate_rome.yaml`` (which caches them too) found for the same facts. Each row says how many of its
targets were reused (``targets_reused``): its ``edit_seconds`` leave their search out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lit_edit.data.datamodule import load_split
from lit_edit.editors import MEMIT, ROME, Editor, NoEdit
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.evaluation.scores import EditScores
from lit_edit.evaluation.scoring import TimedEdit, score
from lit_edit.key_statistics import KeyStatisticsSpec, estimate_key_moments
from lit_edit.model_layout import ModelLayout
from lit_edit.profiling import synchronized_clock

SCORES = ("efficacy", "paraphrase_score", "neighbourhood_score", "es", "paraphrase_es", "dd", "edit_seconds")


def scored(editor: Editor, records: list, edits_per_batch: int) -> dict[str, float]:
    """Each batch of ``edits_per_batch`` edits made and scored (on the unedited model each time)."""
    scores = EditScores(compare_targets=True).to(editor.device)
    for start in range(0, len(records), edits_per_batch):
        batch = editor.prompts.batch(records[start: start + edits_per_batch]).to(editor.device)
        score(editor, batch, scores)
    return computed(scores)


def computed(scores: EditScores) -> dict[str, float]:
    logged = scores.as_logged()
    return {key: round(float(logged[key].compute()), 4) for key in SCORES}


def scored_at_once(editor: MEMIT, records: list, score_chunk: int = 20) -> dict[str, float]:
    """All ``records`` written by one edit, then scored in chunks (a thousand edits' prompts do not fit one pass)."""
    reused = sum(cache.hits for cache in editor.target_caches.values())
    start = synchronized_clock()
    edited = editor.edit(editor.prompts.batch(records).to(editor.device))
    seconds = synchronized_clock() - start
    reused = sum(cache.hits for cache in editor.target_caches.values()) - reused
    scores = EditScores(compare_targets=True).to(editor.device)
    made = TimedEdit(edited, seconds / len(records))
    for first in range(0, len(records), score_chunk):  # the one edit of all records, scored chunk by chunk
        score(editor, editor.prompts.batch(records[first: first + score_chunk]).to(editor.device), scores, made=made)
    return {**computed(scores), "batch_edit_seconds": round(seconds, 2), "targets_reused": reused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["rome-layers", "memit"])
    parser.add_argument("--data", default="shared:counterfact/counterfact-val.json")
    parser.add_argument("--format", default="counterfact_easyedit")
    parser.add_argument("--edits", type=int, default=50, help="edits scored per ROME layer")
    parser.add_argument("--layers", type=int, nargs="+", default=[5])
    parser.add_argument("--memit-layers", type=int, nargs="+", default=[3, 4, 5, 6, 7])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--samples", type=int, default=1000, help="passages C is estimated from")
    parser.add_argument("--statistics-batch", type=int, default=64, help="passages sampled per batch for C")
    parser.add_argument("--moment-weight", type=float, default=None, help="MEMIT's λ (default: MEMIT's own)")
    parser.add_argument("--prefixes-per-length", type=int, default=None,
                        help="sampled prefixes per length, 5 and 10 tokens (default: each editor's own: ROME five "
                             "of each, MEMIT five of 10 tokens)")
    parser.add_argument("--cache-targets", action="store_true", help="keep and reuse z* (checkpoints/targets/)")
    parser.add_argument("--targets-only", metavar="A:B", default=None,
                        help="memit: only search and cache the z* of edits A:B, then stop (slices of a large run can "
                             "go to separate processes or SLURM array tasks; the run then finds them cached)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="results/benchmark_locating.jsonl")
    args = parser.parse_args()
    statistics = KeyStatisticsSpec(samples=args.samples, batch_size=args.statistics_batch)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)

    def record(row: dict) -> None:
        """Printed and appended at once, so an interrupted run keeps what it measured."""
        print(row, flush=True)
        with open(args.output, "a") as log:
            log.write(json.dumps({**row, "device": device, "command": " ".join(sys.argv)}) + "\n")

    prefixes = None if args.prefixes_per_length is None else ContextPrefixes(per_length=args.prefixes_per_length)
    if args.what == "rome-layers":
        records = load_split(f"{args.data}#0:{args.edits}", args.format)
        reference = NoEdit().to(args.device).eval()
        record({"editor": "unedited", "edits": len(records), **scored(reference, records, 1)})
        estimate_key_moments(reference.model, reference.tokenizer, ModelLayout(reference.model), args.layers,
                             statistics)  # every layer's C in one pass over the text, before any clock starts
        for layer in args.layers:
            editor = ROME(layer=layer, statistics=statistics, prefixes=prefixes).to(args.device).eval()
            record({"editor": "ROME", "layer": layer, "edits": len(records), **scored(editor, records, 1)})
    else:
        records = load_split(f"{args.data}#0:{max(args.sizes)}", args.format)
        weight = {} if args.moment_weight is None else {"moment_weight": args.moment_weight}
        editor = MEMIT(layers=args.memit_layers, statistics=statistics, prefixes=prefixes,
                       cache_targets=args.cache_targets or args.targets_only is not None, **weight).to(args.device).eval()
        if args.targets_only is not None:
            first, last = (int(x) for x in args.targets_only.split(":"))
            block = editor.layout.block_name(editor.layers[-1])
            for start in range(first, last, editor.facts_per_chunk):  # each chunk on disk before the next starts
                chunk = records[start: min(start + editor.facts_per_chunk, last)]
                editor.searched_targets(block, editor.requests(editor.prompts.batch(chunk)), {}, editor.facts_per_chunk)
                cache = editor.target_caches[block]
                print(f"z* of edits {first}:{start + len(chunk)} cached ({cache.hits} were already)", flush=True)
            return
        for layer in args.memit_layers:
            editor.key_moment(layer)
        for size in args.sizes:
            record({"editor": "MEMIT", "layers": args.memit_layers, "moment_weight": editor.moment_weight,
                    "edits": size, **scored_at_once(editor, records[:size])})


if __name__ == "__main__":
    main()
