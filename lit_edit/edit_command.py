"""``lit-edit edit``: make edits on a real model from the command line and see what it says before and after.

    lit-edit edit '"The Mona Lisa was painted by" -> " Picasso"' \\
        --paraphrase "The painter of the Mona Lisa is" --neighbour "The Starry Night was painted by" \\
        [--config configs/evaluate.yaml --editor ft] [--model NAME] [--checkpoint PATH] [--save DIR]

The editor is one entry of an evaluation config's ``model.editors`` (``ft`` of ``configs/evaluate.yaml`` by
default; ``mend`` there loads the trained MEND checkpoint), or the ``model`` of a training config. All edits
given are made at once. ``--save DIR`` writes the edited model as a Hugging Face checkpoint that
``transformers`` loads unchanged (``AutoModelForCausalLM.from_pretrained(DIR)``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from omegaconf import OmegaConf

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors.base import Editor
from lit_edit.editors.edited_model import EditedModel, EditFailedError
from lit_edit.generation import greedy_completion

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXAMPLE = '\'"The Mona Lisa was painted by" -> " Picasso"\''
#: Shown after the edit prompts when no --neighbour is given: facts an edit should leave alone.
DEFAULT_NEIGHBOURS = ("The Eiffel Tower is located in the city of", "The capital of Japan is")

_QUOTED = re.compile(r'^\s*"(?P<prompt>[^"]+)"\s*->\s*"(?P<target>[^"]*)"\s*$')


class EditSyntaxError(ValueError):
    """An edit written on the command line that is not ``"prompt" -> "target"``."""


def parse_edit(text: str) -> tuple[str, str]:
    """``'"prompt" -> "target"'`` (or ``prompt -> target``) as (prompt, target without its leading space)."""
    match = _QUOTED.match(text)
    if match:
        prompt, target = match["prompt"], match["target"]
    elif text.count("->") == 1 and '"' not in text:
        prompt, target = text.split("->")
    else:
        raise EditSyntaxError(f"cannot read the edit {text!r}")
    prompt, target = prompt.strip(), target.strip()
    if not prompt or not target:
        raise EditSyntaxError(f"the edit {text!r} has an empty {'prompt' if not prompt else 'target'}")
    return prompt, target


def editor_config(config: Path, editor: str | None) -> dict[str, Any]:
    """The ``class_path``/``init_args`` of one editor: ``model.editors[editor]`` of an evaluation config, or the
    ``model`` of a training config."""
    if not config.is_file():
        raise FileNotFoundError(f"no config file {config}")
    loaded = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    model = loaded.get("model") or {}
    editors = model.get("editors") if isinstance(model, dict) else None
    if editors is None:
        if not isinstance(model, dict) or "class_path" not in model:
            raise ValueError(f"{config} defines neither model.editors nor a model class_path")
        return model
    if editor not in editors:
        raise ValueError(f"{config} has no editor {editor!r}; it has: {', '.join(editors)}")
    return editors[editor]


def build_editor(spec: dict[str, Any], model: str | None = None, checkpoint: str | None = None,
                 editable: list[str] | None = None) -> Editor:
    """Instantiate an editor from its config entry, with the command line's overrides."""
    spec = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}
    init_args = spec["init_args"]
    model_args = dict(init_args.get("model") or {})
    if model is not None:
        model_args["name"] = model
    if editable:
        model_args["editable"] = editable
    if model_args:
        init_args["model"] = model_args
    if checkpoint is not None:
        init_args["checkpoint"] = checkpoint
    if init_args.get("checkpoint") and not Path(init_args["checkpoint"]).exists():
        raise FileNotFoundError(f"no editor checkpoint at {init_args['checkpoint']}: train the editor first "
                                "(python train.py --config configs/...) or pass --checkpoint PATH")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--editor", type=Editor)
    return parser.instantiate_classes(parser.parse_object({"editor": spec})).editor


@dataclass(frozen=True)
class Comparison:
    """One prompt's greedy completion before and after the edits."""

    role: str
    prompt: str
    before: str
    after: str


def run_edits(editor: Editor, edits: list[tuple[str, str]], paraphrases: list[str], neighbours: list[str],
              max_new_tokens: int = 12) -> tuple[EditedModel, list[Comparison], float]:
    """Make all ``edits`` at once; completions before and after for every prompt, and the edit's seconds."""
    if not neighbours:
        raise ValueError("give at least one neighbour prompt: what the edits should leave alone")
    prompts = [("edit", p) for p, _ in edits] + [("paraphrase", p) for p in paraphrases] + \
        [("neighbour", p) for p in neighbours]
    before = {p: greedy_completion(editor.model, editor.tokenizer, editor.kind, p, max_new_tokens) for _, p in prompts}
    # Neighbours are what the edits should keep: labelled with the model's own first word before the edit.
    keep = tuple(LabeledPrompt(p, (before[p].split() or ["."])[0]) for p in neighbours)
    records = [EditRecord(case_id=f"cli-{i}", prompt=p, target_new=t, out_of_scope=keep)
               for i, (p, t) in enumerate(edits)]
    batch = editor.prompts.batch(records).to(editor.device)
    start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        edited = editor.edit(batch)
    seconds = time.perf_counter() - start
    with edited.applied() as model:
        after = {p: greedy_completion(model, editor.tokenizer, editor.kind, p, max_new_tokens) for _, p in prompts}
    return edited, [Comparison(role, p, before[p], after[p]) for role, p in prompts], seconds


def report(comparisons: list[Comparison]) -> str:
    width = max(len(c.role) for c in comparisons)
    lines = []
    for c in comparisons:
        lines += [f"{c.role:<{width}}  {c.prompt}", f"{'':<{width}}    before: {c.before}",
                  f"{'':<{width}}    after:  {c.after}" + ("" if c.after != c.before else "   (unchanged)")]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("edits", nargs="+", metavar="EDIT", help=f'an edit, written {EXAMPLE}; several are made at once')
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "evaluate.yaml",
                        help="an evaluation config (model.editors) or a training config (model); default: %(default)s")
    parser.add_argument("--editor", default="ft", help="which of the config's editors (default: %(default)s)")
    parser.add_argument("--model", help="base model: embedded name, Hugging Face directory or .gguf (default: the config's)")
    parser.add_argument("--editable", nargs="+", help="parameter-name patterns to edit (default: the config's)")
    parser.add_argument("--checkpoint", help="a trained editor's checkpoint (MEND, ENN)")
    parser.add_argument("--paraphrase", action="append", default=[], help="a paraphrase of an edit prompt to show")
    parser.add_argument("--neighbour", action="append", default=[],
                        help="a prompt the edits should leave alone (default: two unrelated facts)")
    parser.add_argument("--max_new_tokens", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write the edited model here as a Hugging Face checkpoint")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        edits = [parse_edit(text) for text in args.edits]
    except EditSyntaxError as error:
        parser.error(f"{error}; write each edit as {EXAMPLE}, e.g.\n  lit-edit edit {EXAMPLE}")
    try:
        editor = build_editor(editor_config(args.config, args.editor), args.model, args.checkpoint, args.editable)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    editor = editor.to(args.device).eval()
    print(f"{editor.name} on {editor.model_spec.name}: {len(editor.editable_names)} editable weight tensors "
          f"({', '.join(editor.editable_names[:3])}{', ...' if len(editor.editable_names) > 3 else ''})")
    try:
        edited, comparisons, seconds = run_edits(editor, edits, args.paraphrase, args.neighbour or list(DEFAULT_NEIGHBOURS),
                                                 args.max_new_tokens)
    except (EditFailedError, RuntimeError) as error:  # edits are functional: the model is as it was
        print(f"edit failed: {error}; nothing was saved", file=sys.stderr)
        return 1
    print(f"{len(edits)} edit(s) made in {seconds:.2f} s\n")
    print(report(comparisons))
    if args.save is not None:
        try:
            model = edited.materialize()
        except EditFailedError as error:  # a memory-based edit has no edited weights to save
            print(f"\nnot saved: {error}", file=sys.stderr)
            return 1
        model.save_pretrained(args.save)
        editor.tokenizer.save_pretrained(args.save)
        loader = "AutoModelForCausalLM" if editor.kind == "causal" else "AutoModelForSeq2SeqLM"
        print(f"\nsaved the edited model to {args.save} (transformers.{loader}.from_pretrained('{args.save}'))")
    return 0
