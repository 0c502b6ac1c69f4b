"""Readers that turn published edit-benchmark files into :class:`EditRecord` lists.

Every format goes through one parser (:func:`iter_json_records`), so each reader is only a field
mapping, and every malformed record is reported with file, record index, line and field.
A file ending in ``.jsonl`` holds one record per line; any other file holds a JSON array.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt, record_from_dict

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NQ_PREFIX = "nq question: "


def _missing_file(path: Path) -> FileNotFoundError:
    """A FileNotFoundError that points at the shared data folder when the path is meant to be in it."""
    message = f"edit data file not found: {path}"
    parts = path.absolute().parts
    if any(parts[i:i + 2] == ("shared", "data") for i in range(len(parts) - 1)):
        message += (" (the benchmark data lives in ../shared/data beside the project, not inside it;"
                    " set LIT_EDIT_DATA_DIR or pass another path if it is elsewhere)")
    return FileNotFoundError(message)


def iter_json_records(path: str | Path) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, obj)`` for each record of a JSON array or JSONL file.

    ``line`` is the 1-based line where the record starts, so errors can point into the file.
    Array elements are decoded one at a time with ``raw_decode`` to learn their offsets.
    """
    path = Path(path)
    if not path.exists():
        raise _missing_file(path)
    source = str(path)
    text = path.read_text(encoding="utf-8-sig")

    if path.suffix == ".jsonl":
        index = 0
        for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON may hold U+2028
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise EditDataError(source, index, "<json>", f"invalid JSON: {err.msg} (column {err.colno})",
                                        lineno) from None
                yield index, lineno, obj
                index += 1
        return

    def invalid(index: int, problem: str, pos: int) -> EditDataError:
        return EditDataError(source, index, "<json>", f"invalid JSON: {problem}", text.count("\n", 0, pos) + 1)

    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text).end()
    if not text.startswith("[", pos):
        raise invalid(0, "expected a JSON array of records (use the .jsonl suffix for one object per line)", pos)
    pos, line, counted, index = pos + 1, 1, 0, 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if index == 0 and text.startswith("]", pos):
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise EditDataError(source, index, "<json>", f"invalid JSON: {err.msg} (column {err.colno})",
                                err.lineno) from None
        line += text.count("\n", counted, pos)
        counted = pos
        yield index, line, obj
        index += 1
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            break
        else:
            raise invalid(index, "expected ',' or ']' after a record", pos)
    if _WHITESPACE.match(text, pos + 1).end() != len(text):
        raise invalid(index, "extra data after the closing ']'", pos + 1)


@dataclass(frozen=True)
class _Fields:
    """One raw record and where it came from: typed field access whose errors name the field."""

    obj: dict[str, Any]
    source: str
    index: int
    line: int
    prefix: str = ""  # for an object nested in the record: its path, e.g. "neighbours[2]."

    def error(self, name: str, problem: str) -> EditDataError:
        return EditDataError(self.source, self.index, f"{self.prefix}{name}", problem, self.line)

    def get(self, name: str, required: bool = True) -> Any:
        """The value at a dotted path such as ``requested_rewrite.target_new.str``."""
        value: Any = self.obj
        for part in name.split("."):
            if not isinstance(value, dict):
                raise self.error(name, f"expected an object holding '{part}', got {value!r}")
            value = value.get(part)
            if value is None:
                if required:
                    raise self.error(name, "missing")
                return None
        return value

    def text(self, name: str, target: bool = False) -> str:
        """A required non-empty string; targets lose surrounding spaces (records store bare targets)."""
        value = self.get(name)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        return value.strip() if target else value

    def texts(self, name: str) -> tuple[str, ...]:
        """A required list of non-empty strings."""
        value = self.get(name)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list of strings, got {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{name}[{i}]", f"expected a non-empty string, got {item!r}")
        return tuple(value)

    def case_id(self) -> str:
        """The record's own ``case_id``, else its position in the file."""
        value = self.obj.get("case_id", self.index)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error("case_id", f"expected an integer or string, got {value!r}")
        return str(value)


def _read(path: str | Path, convert: Callable[[_Fields], EditRecord], skip_invalid: bool) -> list[EditRecord]:
    """Convert every record of ``path``; with ``skip_invalid`` a malformed record is warned about and dropped."""
    records = []
    for index, line, obj in iter_json_records(path):
        record = _Fields(obj, str(path), index, line)
        try:
            if not isinstance(obj, dict):
                raise record.error("<record>", f"expected an object, got {type(obj).__name__}")
            records.append(convert(record))
        except EditDataError as err:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping malformed record: {err}", stacklevel=3)
    return records


def _plain_question(loc: str) -> str:
    """An NQ locality question as a model should see it: no ``nq question:`` tag, capitalised."""
    question = loc.removeprefix(_NQ_PREFIX).strip()
    return question[:1].upper() + question[1:]


def _zsre_mend(r: _Fields) -> EditRecord:
    target_true = None
    if r.obj.get("answers") is not None:  # only the full MEND variant has the true answers
        answers = r.texts("answers")
        if not answers:
            raise r.error("answers", "expected at least one answer")
        target_true = answers[0].strip()
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("src"),
        target_new=r.text("alt", target=True),
        subject=r.text("subject"),
        target_true=target_true,
        paraphrases=(r.text("rephrase"),),
        out_of_scope=(LabeledPrompt(_plain_question(r.text("loc")), r.text("loc_ans", target=True)),),
    )


def read_zsre_mend(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """zsRE as prepared by MEND (both the ``train_10000`` and the full ``{pred, answers, cond}`` variant).

    ``src`` -> prompt, ``alt`` -> target_new, ``answers[0]`` -> target_true (when present),
    ``rephrase`` -> paraphrase, and the NQ question ``loc`` (tag stripped) with ``loc_ans`` -> out_of_scope.
    zsRE has no relation ids; a record without ``case_id`` is numbered by its position.
    """
    return _read(path, _zsre_mend, skip_invalid)


def _counterfact_easyedit(r: _Fields) -> EditRecord:
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("prompt"),
        target_new=r.text("target_new", target=True),
        subject=r.text("subject"),
        target_true=r.text("ground_truth", target=True),
        paraphrases=(r.text("rephrase_prompt"),),
        hard_out_of_scope=(LabeledPrompt(r.text("locality_prompt"), r.text("locality_ground_truth", target=True)),),
    )


def read_counterfact_easyedit(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """CounterFact as split by EasyEdit (one rephrase and one locality prompt per case).

    The locality prompt is one of CounterFact's neighbourhood prompts (same relation, another subject
    sharing the true object), the look-alike most easily damaged by the edit, so it goes to
    ``hard_out_of_scope``; ``out_of_scope`` stays empty because this split has no unrelated facts.
    """
    return _read(path, _counterfact_easyedit, skip_invalid)


def _rome_counterfact(r: _Fields) -> EditRecord:
    template, subject = r.text("requested_rewrite.prompt"), r.text("requested_rewrite.subject")
    if template.count("{}") != 1:
        raise r.error("requested_rewrite.prompt", f"expected one '{{}}' where the subject goes, got {template!r}")
    target_new = r.text("requested_rewrite.target_new.str", target=True)
    target_true = r.text("requested_rewrite.target_true.str", target=True)
    return EditRecord(
        case_id=r.case_id(),
        prompt=template.replace("{}", subject),
        target_new=target_new,
        subject=subject,
        target_true=target_true,
        relation=r.text("requested_rewrite.relation_id"),
        paraphrases=r.texts("paraphrase_prompts"),
        out_of_scope=tuple(LabeledPrompt(p, target_new) for p in r.texts("attribute_prompts")),
        hard_out_of_scope=tuple(LabeledPrompt(p, target_true) for p in r.texts("neighborhood_prompts")),
    )


def read_rome_counterfact(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """CounterFact in ROME's original ``counterfact.json`` layout (``requested_rewrite`` etc.).

    ``neighborhood_prompts`` (same relation, other subjects whose true answer is ``target_true``) are the
    look-alikes an edit tends to bleed into -> ``hard_out_of_scope`` labelled ``target_true``;
    ``attribute_prompts`` (other subjects that truly have ``target_new``) -> ``out_of_scope`` labelled
    ``target_new``. ``generation_prompts`` carry no labels and are not read.
    """
    return _read(path, _rome_counterfact, skip_invalid)


def _prompt_target(r: _Fields) -> EditRecord:
    neighbours = r.get("neighbours", required=False) or []
    if not isinstance(neighbours, list):
        raise r.error("neighbours", f"expected a list of {{prompt, target}} objects, got {neighbours!r}")
    kept = []
    for i, item in enumerate(neighbours):
        if not isinstance(item, dict):
            raise r.error(f"neighbours[{i}]", f"expected an object with prompt and target, got {item!r}")
        neighbour = _Fields(item, r.source, r.index, r.line, prefix=f"neighbours[{i}].")
        kept.append(LabeledPrompt(neighbour.text("prompt"), neighbour.text("target", target=True)))
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("prompt"),
        target_new=r.text("target", target=True),
        subject=r.text("subject") if r.get("subject", required=False) is not None else None,
        target_true=r.text("target_true", target=True) if r.get("target_true", required=False) is not None else None,
        paraphrases=r.texts("paraphrases") if r.get("paraphrases", required=False) is not None else (),
        out_of_scope=tuple(kept),
    )


def read_prompt_target(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """Users' own edits: JSON lines (or an array) of ``{"prompt": ..., "target": ...}``, optionally with
    ``paraphrases`` (strings), ``neighbours`` (``{"prompt", "target"}`` objects that the edit should leave
    alone), ``subject`` and ``target_true``. Evaluation needs at least one neighbour per batch to measure DD."""
    return _read(path, _prompt_target, skip_invalid)


def read_edit_records(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """The project's own format: objects in :func:`record_from_dict`'s layout (JSON array or JSONL)."""
    return _read(path, lambda r: record_from_dict(r.obj, r.source, r.index, r.line), skip_invalid)


def write_edit_records(records: Iterable[EditRecord], path: str | Path) -> Path:
    """Write records in the project's format (JSONL for a ``.jsonl`` path, else an indented JSON array)."""
    path = Path(path)
    rows = [record.to_dict() for record in records]
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


READERS: dict[str, Callable[..., list[EditRecord]]] = {
    "zsre_mend": read_zsre_mend,
    "counterfact_easyedit": read_counterfact_easyedit,
    "rome_counterfact": read_rome_counterfact,
    "lit_edit": read_edit_records,
    "prompt_target": read_prompt_target,
}

_LIT_EDIT_KEYS = frozenset(f.name for f in dataclass_fields(EditRecord))


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from the keys of its first record."""
    first = next((obj for _, _, obj in iter_json_records(path)), None)
    keys = set(first) if isinstance(first, dict) else set()
    if "requested_rewrite" in keys:
        return "rome_counterfact"
    if {"src", "alt"} <= keys:
        return "zsre_mend"
    if "rephrase_prompt" in keys:
        return "counterfact_easyedit"
    if {"prompt", "target"} <= keys and "target_new" not in keys:
        return "prompt_target"
    if {"prompt", "target_new"} <= keys <= _LIT_EDIT_KEYS and isinstance(first["prompt"], str):  # type: ignore[index]
        return "lit_edit"
    seen = "no records" if first is None else f"first record keys {sorted(keys)}" if keys else f"first record {first!r}"
    raise ValueError(f"{path}: cannot tell the edit data format ({seen}); "
                     f"pass format= one of {sorted(READERS)}")


def load_edit_records(path: str | Path, format: str = "auto", *, skip_invalid: bool = False) -> list[EditRecord]:
    """Read any supported file; ``format="auto"`` sniffs it with :func:`detect_format`."""
    name = detect_format(path) if format == "auto" else format
    if name not in READERS:
        raise ValueError(f"unknown edit data format {format!r}; expected 'auto' or one of {sorted(READERS)}")
    return READERS[name](path, skip_invalid=skip_invalid)
