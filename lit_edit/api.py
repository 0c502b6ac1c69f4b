"""The Python API: an editor by name, edits as plain values, an edited model to generate with and to save.

    import lit_edit

    editor = lit_edit.load_editor("rome", model="smollm2-135m")
    edited = editor.edit([{"prompt": "The Mona Lisa was painted by", "target": "Picasso", "subject": "The Mona Lisa"}])
    edited.generate("The Mona Lisa was painted by")      # greedy, by the edited model
    edited.save_pretrained("edited-model")               # transformers.AutoModelForCausalLM.from_pretrained loads it
    again = editor.edit([("The capital of Japan is", "Osaka")], on=edited)   # both edits hold in ``again``

An editor is built exactly as ``lit-edit edit`` builds one (:mod:`lit_edit.editor_specs`): a registry name
(:mod:`lit_edit.editors.registry`) with its defaults, a ``class_path``, or an entry of a config (``config=``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editor_specs import PYTHON, build_editor, config_entry, merged, resolve_device
from lit_edit.errors import ConfigurationError, UserInputError
from lit_edit.model_names import DEFAULT_MODEL

if TYPE_CHECKING:  # torch, transformers and Lightning load with the first editor, not with ``import lit_edit``
    from transformers import PreTrainedModel

    from lit_edit.editors.base import Editor
    from lit_edit.editors.registry import RegisteredEditor
    from lit_edit.mechanics.edit_result import EditResult
    from lit_edit.models import ModelSpec

#: Prompts an edit should leave alone where none are given (as ``lit-edit edit``): a batch needs out-of-scope rows.
DEFAULT_NEIGHBOURS = ("The Eiffel Tower is located in the city of", "The capital of Japan is")
#: New tokens generated from a neighbour to label it with the unedited model's first word.
_LABEL_TOKENS = 8
_EDIT_FORMS = ('("prompt", "target"), ("prompt", "target", "subject"), {"prompt": ..., "target": ..., '
               '"subject": ...}, \'"prompt" [subject] -> "target"\' or an EditRecord')


def load_editor(name_or_class_path: str, model: str | Mapping[str, Any] | ModelSpec | None = None, *,
                checkpoint: str | None = None, device: str = "auto", config: str | Path | None = None,
                **init_args: Any) -> LoadedEditor:
    """Build an editor, ready to edit.

    Args:
        name_or_class_path: a registered name (``"rome"``, ``"ft_kl"``, ``"mend"``: its defaults apply), a
            ``class_path`` (``"lit_edit.editors.ROME"``), or with ``config=`` an entry of that config's
            ``model.editors`` (``load_editor("mend_zsre", config="configs/edit.yaml")``).
        model: the base model: a name (``"smollm2-135m"``, a Hugging Face directory, a ``.gguf``) or
            :class:`~lit_edit.models.ModelSpec` (or its fields as a mapping: ``{"name": ..., "editable": [...]}``).
        checkpoint: a trained editor's weights (``pretrained:NAME``, a ``.ckpt``). A registered trained editor given
            none uses its shipped one when ``model`` is the base model it was trained for, and is refused otherwise.
        device: ``auto`` (cuda where torch sees a GPU, else cpu), ``cpu``, ``cuda:1``, ...
        init_args: the editor's settings, over the registry's defaults or the config's (mappings merge key by key).
    """
    spec, entry = _spec(name_or_class_path, config, init_args)
    model_args = _model_args(model)
    if checkpoint is None and not spec["init_args"].get("checkpoint") and entry is not None and entry.trained:
        checkpoint, model_args = _shipped_checkpoint(entry, name_or_class_path, spec, model_args)
    editor = build_editor(spec, model_args or None, checkpoint, naming=PYTHON)
    return LoadedEditor(editor.to(resolve_device(device)).eval())


def _spec(name: str, config: str | Path | None,
          init_args: Mapping[str, Any]) -> tuple[dict[str, Any], RegisteredEditor | None]:
    """(the spec to build, the registry entry whose training rule applies: None for a config's entry, which is built
    as the config says, as ``lit-edit edit`` builds it)."""
    from lit_edit.editors.registry import editor_names, registered

    if config is not None:
        found = config_entry(Path(config), name, PYTHON)
        return {"class_path": found["class_path"],
                "init_args": merged(found.get("init_args") or {}, init_args)}, None
    if "." in name:
        trained = [registered(n) for n in editor_names() if registered(n).class_path == name and registered(n).trained]
        return {"class_path": name, "init_args": dict(init_args)}, (trained[0] if trained else None)
    entry = registered(name)  # an unknown name is refused naming every editor
    return {"class_path": entry.class_path, "init_args": merged(entry.defaults, init_args)}, entry


def _model_args(model: str | Mapping[str, Any] | ModelSpec | None) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, str):
        return {"name": model}
    if is_dataclass(model) and not isinstance(model, type):
        return asdict(model)
    if isinstance(model, Mapping):
        return dict(model)
    raise ConfigurationError(f"model={model!r}: give a base model's name or a mapping of ModelSpec fields")


def _shipped_checkpoint(entry: RegisteredEditor, asked: str, spec: dict[str, Any],
                        model_args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The shipped weights of a trained editor given no checkpoint, and the model fields they were trained with (for
    those not given); refused, saying what to do, where none was trained for this base model."""
    from lit_edit.pretrained import read_manifest, resolve_editor_path

    base = model_args.get("name") or (spec["init_args"].get("model") or {}).get("name") or DEFAULT_MODEL
    train = f"train it (python train.py --config {_training_config(entry.name)}) and pass checkpoint=PATH"
    if "." in asked:  # a class path: no shipped weights are picked behind the caller's back
        shipped = f"; load_editor({entry.name!r}) uses the shipped {entry.pretrained}" if entry.pretrained else ""
        raise ConfigurationError(f"{asked} is a trained editor and no checkpoint was given: {train}{shipped}")
    if entry.pretrained is None:
        raise ConfigurationError(f"{entry.name!r} is a trained editor and none is shipped: {train}")
    manifest = read_manifest(resolve_editor_path(entry.pretrained))
    trained_for = (manifest.get("made_for") or {}).get("model", {}).get("name")
    if trained_for != base:
        raise ConfigurationError(f"{entry.name!r} is a trained editor and its shipped {entry.pretrained} was trained "
                                 f"for base model {trained_for!r}, not {base!r}: {train}")
    made_with = {key: value for key, value in (manifest.get("init_args") or {}).get("model", {}).items()
                 if key in ("kind", "editable")}
    return entry.pretrained, merged(made_with, model_args)


def _training_config(name: str) -> str:
    """The shipped training config of editor ``name``, as a user types it (``configs/train/mend.yaml``)."""
    repository = Path(__file__).resolve().parents[1]
    for where in (Path("configs") / "train" / f"{name}.yaml", Path("configs") / f"{name}.yaml"):
        if (repository / where).is_file():
            return str(where)
    return "CONFIG"


class LoadedEditor:
    """An editor ready to edit its base model: ``.edit(...)`` makes edits, ``.generate(...)`` shows the unedited
    model; ``.editor`` is the LightningModule itself."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor

    def __repr__(self) -> str:
        return (f"LoadedEditor({self.editor.name} on {self.editor.model_spec.name}, "
                f"{len(self.editor.editable_names)} editable weight tensors, {self.editor.device})")

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 20) -> str | list[str]:
        """The unedited model's greedy completion of each prompt (one string for one prompt)."""
        return _generate(self.editor, self.editor.model, prompts, max_new_tokens)

    def edit(self, edits: Any, *, on: Edited | None = None,
             neighbours: Sequence[str] = DEFAULT_NEIGHBOURS) -> Edited:
        """Make all ``edits`` at once and return the edited model. An edit is ``("prompt", "target")`` (a subject
        third, for ROME and MEMIT), ``{"prompt": ..., "target": ..., "subject": ..., "paraphrases": [...]}``,
        ``'"prompt" [subject] -> "target"'`` as ``lit-edit edit`` reads it, or an :class:`EditRecord`.

        ``on``: an earlier result of this editor (weight edits: of any editor of the same base model): the edits are
        made on the model it edited, and the result holds its edits and these. ``neighbours``: prompts the edits
        should leave alone, kept at the unedited model's answer (FT+KL's KL term and MEND's locality read them).
        A refused edit raises :class:`~lit_edit.mechanics.edited_model.EditFailedError` and changes nothing.
        """
        import time

        editor = self.editor
        if on is not None and (not isinstance(on, Edited) or on.edited_model.base is not editor.model):
            raise ConfigurationError("on= must be what edit() returned for an editor of this base model")
        if not neighbours:
            raise ConfigurationError("neighbours=: give at least one prompt the edits should leave alone")
        earlier = on.records if on is not None else ()
        keep = tuple(LabeledPrompt(p, (_generate(editor, editor.model, p, _LABEL_TOKENS).split() or ["."])[0])
                     for p in neighbours)
        records = [_record(item, len(earlier) + number, keep) for number, item in enumerate(_items(edits), 1)]
        if not records:
            raise ConfigurationError("edit() was given no edits")
        batch = editor.prompts.batch(records).to(editor.device)
        start = time.perf_counter()
        # Made on top of ``on`` and composed with it, as sequential editing does (the editors' ``edit(batch, on=)``).
        edited = editor.checked_edit(batch) if on is None else editor.checked_edit(batch, on=on.edited_model)
        return Edited(self, edited, (*earlier, *records), time.perf_counter() - start)


def _items(edits: Any) -> list[Any]:
    """One edit or a sequence of them."""
    if isinstance(edits, (str, Mapping, EditRecord)):
        return [edits]
    if isinstance(edits, Sequence):
        return list(edits)
    raise EditInputError(f"edits={edits!r}: give a list of edits, each {_EDIT_FORMS}")


class EditInputError(UserInputError, ValueError):
    """An edit given to :meth:`LoadedEditor.edit` in none of the forms it reads."""


def _record(item: Any, number: int, keep: tuple[LabeledPrompt, ...]) -> EditRecord:
    """``item`` as an edit record (with ``keep`` as its out-of-scope prompts where it has none)."""
    from lit_edit.edit_command import EditSyntaxError, parse_edit

    if isinstance(item, EditRecord):
        has_own = item.out_of_scope or item.hard_out_of_scope
        return item if has_own else replace(item, out_of_scope=keep)
    fields: dict[str, Any]
    if isinstance(item, str):
        try:
            written = parse_edit(item)
        except EditSyntaxError as error:
            raise EditInputError(f"edit {number}: {error}; write it as {_EDIT_FORMS}") from None
        fields = written._asdict()
    elif isinstance(item, Mapping):
        unknown = set(item) - {"prompt", "target", "subject", "paraphrases"}
        if unknown:
            raise EditInputError(f"edit {number}: unknown keys {sorted(unknown)}; an edit has prompt, target and "
                                 "optionally subject and paraphrases")
        fields = dict(item)
    elif isinstance(item, Sequence) and 2 <= len(item) <= 3:
        fields = dict(zip(("prompt", "target", "subject"), item, strict=False))
    else:
        raise EditInputError(f"edit {number}: {item!r} is none of {_EDIT_FORMS}")
    prompt, target = fields.get("prompt"), fields.get("target")
    for key, value in (("prompt", prompt), ("target", target)):
        if not isinstance(value, str) or not value.strip():
            raise EditInputError(f"edit {number}: its {key} must be a non-empty string, got {value!r}")
    subject = fields.get("subject")
    paraphrases = fields.get("paraphrases") or ()
    if isinstance(paraphrases, str):
        paraphrases = (paraphrases,)
    return EditRecord(case_id=f"api-{number}", prompt=prompt.strip(), target_new=target.strip(),
                      subject=subject.strip() if isinstance(subject, str) else subject,
                      paraphrases=tuple(paraphrases), out_of_scope=keep)


def _generate(editor: Editor, model: Any, prompts: str | Sequence[str], max_new_tokens: int) -> str | list[str]:
    from lit_edit.generation import greedy_completion

    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    done = [greedy_completion(model, editor.tokenizer, editor.kind, text, max_new_tokens) for text in texts]
    return done[0] if isinstance(prompts, str) else done


class Edited:
    """The model as some edits left it: ``.generate(...)``, ``.save_pretrained(dir)``, ``.applied()``; the base
    model itself is never written (``.edited_model`` substitutes weights, or a memory answers)."""

    def __init__(self, session: LoadedEditor, edited_model: EditResult, records: tuple[EditRecord, ...],
                 seconds: float) -> None:
        self.session = session
        self.edited_model = edited_model
        #: Every edit this result holds, those of ``on=`` results first.
        self.records = records
        #: How long the last edit() took.
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Edited({len(self.records)} edit(s) by {self.session.editor.name}, {self.seconds:.2f} s)"

    @contextmanager
    def applied(self) -> Iterator[Any]:
        """The edited model as a module (its weights written into the base model; restored on exit)."""
        with self.edited_model.applied() as model:
            yield model

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 20) -> str | list[str]:
        """The edited model's greedy completion of each prompt (one string for one prompt)."""
        with self.applied() as model:
            return _generate(self.session.editor, model, prompts, max_new_tokens)

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the edited model and its tokenizer as a Hugging Face checkpoint into a new or empty ``directory``
        (``overwrite``: replace a non-empty one), atomically: staged beside it and renamed into place, under
        ``DIR.lock``. A memory-based edit (SERAC, cache) has no edited weights: EditFailedError, nothing written."""
        from lit_edit.mechanics.atomic_files import save_directory_atomically
        from lit_edit.run_lock import RunLock

        target = Path(directory)
        model: PreTrainedModel = self.edited_model.materialize()  # a memory-based edit raises EditFailedError
        tokenizer = self.session.editor.tokenizer

        def write(staged: Path) -> None:
            model.save_pretrained(staged)
            tokenizer.save_pretrained(staged)

        with RunLock(target, hint="or save into another directory"):
            _refuse_to_replace(target, overwrite)
            save_directory_atomically(target, write)
        return target


def _refuse_to_replace(target: Path, overwrite: bool) -> None:
    """A file, or a non-empty directory without ``overwrite``, may be someone's model: refused."""
    if target.exists() and not target.is_dir():
        raise UserInputError(f"save_pretrained({str(target)!r}): it is a file, not a directory")
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise UserInputError(f"save_pretrained({str(target)!r}): the directory is not empty; pass overwrite=True to "
                             "replace it, or choose another")
