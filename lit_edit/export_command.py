"""``lit-edit export-editor CHECKPOINT NAME``: a trained editor as shipped weights (safetensors) and a manifest.

    lit-edit export-editor checkpoints/mend-zsre-smollm2-135m/best.ckpt mend-smollm2-zsre \\
        --made-by "python train.py --config configs/mend_zsre.yaml" \\
        --results results/evaluate_zsre.json --results-editor mend

writes ``checkpoints/pretrained/NAME/`` (at most 20 MB), which an editor config names as ``checkpoint: pretrained:NAME``.
The manifest records the base model and its hash, the editable weights, the editor's settings, the training step,
the command given and, from an ``evaluate.py`` results file, the figures it scored (:mod:`lit_edit.pretrained`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lit_edit.errors import UserInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a train.py checkpoint (.ckpt file or DeepSpeed directory)")
    parser.add_argument("name", help="the shipped name: checkpoint: pretrained:NAME")
    parser.add_argument("--made-by", default="", help="the command that trained it (recorded in the manifest)")
    parser.add_argument("--results", type=Path, help="an evaluate.py results JSON with this editor's figures")
    parser.add_argument("--results-editor", help="which editor of --results (default: the only one not 'unedited')")
    parser.add_argument("--notes", default="", help="anything else a user should know (recorded in the manifest)")
    parser.add_argument("--root", type=Path, help="where shipped editors live (default: checkpoints/pretrained)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export of NAME")


def results_record(path: Path, editor: str | None) -> dict[str, Any]:
    """One editor's record of an ``evaluate.py`` results file."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"--results {path}: not a readable evaluate.py results JSON ({error})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "editor" in r for r in records):
        raise UserInputError(f"--results {path}: not an evaluate.py results JSON (a list of editor records)")
    candidates = [r for r in records if (r["editor"] == editor if editor else r["editor"] != "unedited")]
    if len(candidates) != 1:
        names = ", ".join(str(r["editor"]) for r in records)
        raise UserInputError(f"--results {path}: name one of its editors with --results-editor ({names})")
    return candidates[0]


def main(args: argparse.Namespace) -> Path:
    from lit_edit.pretrained import export_editor  # torch: not for --help

    results = results_record(args.results, args.results_editor) if args.results else None
    target = export_editor(args.checkpoint, args.name, command=args.made_by, results=results, notes=args.notes,
                           root=args.root, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} to {target} (checkpoint: pretrained:{args.name})")
    return target
