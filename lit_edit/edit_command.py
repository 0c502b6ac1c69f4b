"""``lit-edit edit``: make edits on a real model from the command line and see what it says before and after.

    lit-edit edit '"The Mona Lisa was painted by" -> " Picasso"' \\
        --paraphrase "The painter of the Mona Lisa is" --neighbour "The Starry Night was painted by" \\
        [--config configs/edit.yaml --editor ft|ft_kl|mend|mend_zsre] [--model NAME] [--checkpoint PATH] \\
        [--save DIR [--overwrite]]

    lit-edit edit '"The Mona Lisa was painted by" [The Mona Lisa] -> " Picasso"' --editor rome

The editor is one entry of a config's ``model.editors`` (``ft`` of ``configs/edit.yaml`` by default, whose ``mend``
and ``mend_zsre`` are trained editors shipped in ``checkpoints/pretrained/``), or the ``model`` of a training config. All edits
given are made at once. ROME and MEMIT need each edit's subject, spelled as in its prompt: ``[subject]`` after the
prompt, or one ``--subject`` per edit, in order. ``--save DIR`` writes the edited model as a Hugging Face checkpoint
that ``transformers`` loads unchanged (``AutoModelForCausalLM.from_pretrained(DIR)``): into a new or empty
directory (``--overwrite`` replaces a non-empty one), staged beside it and renamed into place, so that ``DIR`` is
never half written; ``DIR.lock`` keeps a second ``--save`` into it out meanwhile.

Exit status: 0 when made (and saved); 1 when an edit failed (nothing saved); 2 for a user's mistake (one line).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editor_specs import COMMAND_LINE, build_editor, config_entry, resolve_device
from lit_edit.errors import ConfigurationError, UserInputError
from lit_edit.mechanics.atomic_files import save_directory_atomically
from lit_edit.run_lock import RunLock

if TYPE_CHECKING:  # torch, transformers and Lightning are imported when an edit is made, not for --help
    from lit_edit.editors.base import Editor
    from lit_edit.mechanics.edited_model import EditedModel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXAMPLE = '\'"The Mona Lisa was painted by" -> " Picasso"\''
#: Shown after the edit prompts when no --neighbour is given: facts an edit should leave alone.
DEFAULT_NEIGHBOURS = ("The Eiffel Tower is located in the city of", "The capital of Japan is")

_SUBJECT = r'(?:\[(?P<subject>[^\[\]]*)\]\s*)?'
_QUOTED = re.compile(r'^\s*"(?P<prompt>[^"]+)"\s*' + _SUBJECT + r'->\s*"(?P<target>[^"]*)"\s*$')
_BARE = re.compile(r'^(?P<prompt>[^"\[\]]*?)\s*' + _SUBJECT + r'->(?P<target>[^"\[\]]*)$')


class EditSyntaxError(UserInputError, ValueError):
    """An edit written on the command line that is not ``"prompt" [subject] -> "target"``."""


class MissingSubjectError(UserInputError, ValueError):
    """A locating editor (ROME, MEMIT) given an edit without its subject, or with one its prompt does not contain."""


class WrittenEdit(NamedTuple):
    """One edit as written on the command line; ``subject`` only where it was given."""

    prompt: str
    target: str
    subject: str | None = None


def parse_edit(text: str) -> WrittenEdit:
    """``'"prompt" [subject] -> "target"'`` (or ``prompt [subject] -> target``; the subject is optional) as
    (prompt, target without its leading space, subject)."""
    match = _QUOTED.match(text) or (_BARE.match(text) if text.count("->") == 1 else None)
    if match is None:
        raise EditSyntaxError(f"cannot read the edit {text!r}")
    prompt, target = match["prompt"].strip(), match["target"].strip()
    if not prompt or not target:
        raise EditSyntaxError(f"the edit {text!r} has an empty {'prompt' if not prompt else 'target'}")
    subject = match["subject"]
    if subject is not None and not subject.strip():
        raise EditSyntaxError(f"the edit {text!r} has an empty [subject]")
    return WrittenEdit(prompt, target, subject.strip() if subject is not None else None)


def parse_edits(texts: list[str], subjects: list[str] | None = None) -> list[WrittenEdit]:
    """Every edit, with the ``--subject`` flags given (one per edit, in order) as their subjects."""
    edits = [parse_edit(text) for text in texts]
    if not subjects:
        return edits
    if len(subjects) != len(edits):
        raise EditSyntaxError(f"--subject was given {len(subjects)} times for {len(edits)} edits; give it once per "
                              "edit, in order (or write each subject in its edit: \"prompt\" [subject] -> \"target\")")
    both = [i + 1 for i, edit in enumerate(edits) if edit.subject is not None]
    if both:
        raise EditSyntaxError(f"edit {both[0]} has a [subject] and a --subject; give each subject once")
    return [edit._replace(subject=subject.strip()) for edit, subject in zip(edits, subjects, strict=True)]


def editor_class(spec: dict[str, Any]) -> type | None:
    """The class a config entry names, imported without building it (None if it cannot be imported here: building
    it reports that)."""
    module, _, name = str(spec.get("class_path", "")).rpartition(".")
    try:
        return getattr(importlib.import_module(module or "lit_edit.editors"), name)
    except (ImportError, AttributeError, ValueError):
        return None


def require_subjects(spec: dict[str, Any], edits: list[WrittenEdit], editor: str) -> None:
    """ROME and MEMIT locate the subject in the prompt: refuse, before any model is loaded, an edit without one."""
    from lit_edit.editors.locating import LocatingEditor

    cls = editor_class(spec)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, LocatingEditor)):
        return
    for number, edit in enumerate(edits, 1):
        if edit.subject is None:
            raise MissingSubjectError(
                f"editor {editor!r} ({cls.__name__}) needs each edit's subject: edit {number} ({edit.prompt!r}) has "
                f"none; write it as '\"{edit.prompt}\" [subject] -> \"{edit.target}\"' or pass --subject SUBJECT "
                "once per edit")
        if edit.subject not in edit.prompt:
            raise MissingSubjectError(f"edit {number}: the subject {edit.subject!r} does not occur in its prompt "
                                      f"{edit.prompt!r}; spell it as in the prompt")


def editor_config(config: Path, editor: str | None) -> dict[str, Any]:
    """The ``class_path``/``init_args`` of ``--editor``: ``model.editors[editor]`` of an evaluation config, or the
    ``model`` of a training config (read as :func:`lit_edit.api.load_editor` reads ``config=``)."""
    return config_entry(config, editor, COMMAND_LINE)


@dataclass(frozen=True)
class Comparison:
    """One prompt's greedy completion before and after the edits."""

    role: str
    prompt: str
    before: str
    after: str


def run_edits(editor: Editor, edits: list[tuple[str, str]] | list[WrittenEdit], paraphrases: list[str],
              neighbours: list[str], max_new_tokens: int = 12) -> tuple[EditedModel, list[Comparison], float]:
    """Make all ``edits`` at once; completions before and after for every prompt, and the edit's seconds."""
    from lit_edit.generation import greedy_completion

    if not neighbours:
        raise ConfigurationError("give at least one neighbour prompt (--neighbour): what the edits should leave alone")
    edits = [WrittenEdit(*edit) for edit in edits]
    prompts = [("edit", edit.prompt) for edit in edits] + [("paraphrase", p) for p in paraphrases] + \
        [("neighbour", p) for p in neighbours]
    before = {p: greedy_completion(editor.model, editor.tokenizer, editor.kind, p, max_new_tokens) for _, p in prompts}
    # Neighbours are what the edits should keep: labelled with the model's own first word before the edit.
    keep = tuple(LabeledPrompt(p, (before[p].split() or ["."])[0]) for p in neighbours)
    records = [EditRecord(case_id=f"cli-{i}", prompt=edit.prompt, target_new=edit.target, subject=edit.subject,
                          out_of_scope=keep) for i, edit in enumerate(edits)]
    batch = editor.prompts.batch(records).to(editor.device)
    start = time.perf_counter()
    edited = editor.checked_edit(batch)  # refused if the edited model's outputs are not finite
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
    parser.add_argument("edits", nargs="+", metavar="EDIT",
                        help=f'an edit, written {EXAMPLE} (ROME, MEMIT: \'"prompt" [subject] -> "target"\'); several '
                             "are made at once")
    parser.add_argument("--subject", action="append", default=[],
                        help="the subject of an edit, as spelled in its prompt (ROME, MEMIT): once per edit, in order")
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "edit.yaml",
                        help="an evaluation config (model.editors) or a training config (model); default: %(default)s")
    parser.add_argument("--editor", default="ft", help="which of the config's editors (default: %(default)s)")
    parser.add_argument("--model", help="base model: embedded name, Hugging Face directory or .gguf (default: the config's)")
    parser.add_argument("--editable", nargs="+", help="parameter-name patterns to edit (default: the config's)")
    parser.add_argument("--checkpoint", help="a trained editor's checkpoint (MEND, ENN)")
    parser.add_argument("--paraphrase", action="append", default=[], help="a paraphrase of an edit prompt to show")
    parser.add_argument("--neighbour", action="append", default=[],
                        help="a prompt the edits should leave alone (default: two unrelated facts)")
    parser.add_argument("--max_new_tokens", type=int, default=12)
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:1, ...; auto: cuda where torch sees a GPU, else cpu "
                             "(default: %(default)s)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write the edited model here as a Hugging Face checkpoint (a new or empty directory)")
    parser.add_argument("--overwrite", action="store_true", help="let --save replace a non-empty directory")


def check_save_directory(target: Path, overwrite: bool) -> None:
    """Refuse to replace a file, or a non-empty directory without ``--overwrite`` (it may be someone's model)."""
    if target.exists() and not target.is_dir():
        raise UserInputError(f"--save {target} is a file, not a directory; choose a directory")
    if target.is_dir() and not overwrite:
        names = sorted(path.name for path in target.iterdir())
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UserInputError(f"--save {target} is not empty ({shown}); pass --overwrite to replace it, or choose "
                                 "another directory")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        edits = parse_edits(args.edits, args.subject)
    except EditSyntaxError as error:
        parser.error(f"{error}; write each edit as {EXAMPLE}, e.g.\n  lit-edit edit {EXAMPLE}")
    spec = editor_config(args.config, args.editor)
    require_subjects(spec, edits, args.editor)  # before any model is loaded
    lock = RunLock(args.save, hint="or save to another --save directory") if args.save is not None else None
    if lock is not None:
        lock.acquire()
    try:
        if args.save is not None:
            check_save_directory(args.save, args.overwrite)
        return edit_and_save(args, spec, edits)
    finally:
        if lock is not None:
            lock.release()


def edit_and_save(args: argparse.Namespace, spec: dict[str, Any], edits: list[WrittenEdit]) -> int:
    from lit_edit.mechanics.edited_model import EditFailedError

    editor = build_editor(spec, args.model, args.checkpoint, args.editable)
    editor = editor.to(resolve_device(args.device)).eval()
    print(f"{editor.name} on {editor.model_spec.name}: {len(editor.editable_names)} editable weight tensors "
          f"({', '.join(editor.editable_names[:3])}{', ...' if len(editor.editable_names) > 3 else ''})")
    try:
        edited, comparisons, seconds = run_edits(editor, edits, args.paraphrase, args.neighbour or list(DEFAULT_NEIGHBOURS),
                                                 args.max_new_tokens)
    except EditFailedError as error:  # a refused edit: the model is as it was; anything else is a bug
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

        def write(directory: Path) -> None:
            model.save_pretrained(directory)
            editor.tokenizer.save_pretrained(directory)

        save_directory_atomically(args.save, write)
        from lit_edit.models import AUTO_CLASSES  # torch is loaded by now; --help imports none of it

        loader = AUTO_CLASSES[editor.kind].__name__
        print(f"\nsaved the edited model to {args.save} (transformers.{loader}.from_pretrained('{args.save}'))")
    return 0
