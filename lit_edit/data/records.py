"""Typed edit records: the one shape every reader produces and every editor consumes.

Targets are stored as natural strings without a leading space ("Paris", not " Paris");
tokenization decides how a target is joined to its prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lit_edit.errors import UserInputError


class EditDataError(UserInputError, ValueError):
    """A malformed edit record or data file. The message names the file, the record (and line) and the field;
    a problem with the whole file (bad bytes, no records) has ``record`` and ``field_name`` None."""

    def __init__(self, source: str, record: int | str | None, field_name: str | None, problem: str,
                 line: int | None = None) -> None:
        parts = [source]
        if record is not None:
            parts.append(f"record {record}" + (f" (line {line})" if line is not None else ""))
        elif line is not None:
            parts.append(f"line {line}")
        if field_name is not None:
            parts.append(f"field '{field_name}'")
        super().__init__(": ".join([*parts, problem]))
        self.source = source
        self.record = record
        self.line = line
        self.field_name = field_name


class DataFileNotFoundError(UserInputError, FileNotFoundError):
    """A data path that names no file (a FileNotFoundError too, for callers that catch that)."""


@dataclass(frozen=True)
class LabeledPrompt:
    """A prompt and the answer it should complete with."""

    prompt: str
    target: str


@dataclass(frozen=True)
class EditRecord:
    """One edit descriptor (x_e, y_e) with the inputs that measure its scope.

    in-scope inputs: ``prompt`` itself and ``paraphrases`` (all should now give ``target_new``);
    out-of-scope inputs: ``out_of_scope`` (unrelated facts) and ``hard_out_of_scope``
    (look-alikes: same subject with another relation, or same relation with another subject);
    ``portability``: questions whose answer should follow from the edit without being the edited fact itself
    (multi-hop questions, reasoning, aliases), each labelled with the answer it should have after the edit.
    Records sharing a ``group`` are one chained edit (MQuAKE): evaluation applies them together, and a group's
    portability questions sit on its first record, so they are asked once, after all of its edits.
    ``references``: texts about the new target that generations after the edit are compared with (consistency).
    """

    case_id: str
    prompt: str
    target_new: str
    subject: str | None = None
    target_true: str | None = None
    relation: str | None = None
    paraphrases: tuple[str, ...] = ()
    out_of_scope: tuple[LabeledPrompt, ...] = ()
    hard_out_of_scope: tuple[LabeledPrompt, ...] = ()
    portability: tuple[LabeledPrompt, ...] = ()
    group: str | None = None
    references: tuple[str, ...] = ()

    @property
    def in_scope(self) -> tuple[LabeledPrompt, ...]:
        """The edit prompt and its paraphrases, each labelled with the new target."""
        return tuple(LabeledPrompt(p, self.target_new) for p in (self.prompt, *self.paraphrases))

    @property
    def paraphrase_scope(self) -> tuple[LabeledPrompt, ...]:
        """Only the paraphrases (generalisation beyond the literal edit prompt)."""
        return tuple(LabeledPrompt(p, self.target_new) for p in self.paraphrases)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :func:`record_from_dict` inverts it."""
        return asdict(self)


def record_from_dict(data: dict[str, Any], source: str = "<dict>", index: int | str = 0, line: int | None = None) -> EditRecord:
    """Build an :class:`EditRecord` from the project's own JSON layout, validating every field."""

    def fail(name: str, problem: str) -> EditDataError:
        return EditDataError(source, index, name, problem, line)

    if not isinstance(data, dict):
        raise fail("<record>", f"expected an object, got {type(data).__name__}")

    def text(name: str, required: bool = True) -> str | None:
        value = data.get(name)
        if value is None:
            if required:
                raise fail(name, "missing")
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(name, f"expected a non-empty string, got {value!r}")
        return value

    def texts(name: str) -> tuple[str, ...]:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail(name, f"expected a list of non-empty strings, got {value!r}")
        return tuple(value)

    def labeled(name: str) -> tuple[LabeledPrompt, ...]:
        value = data.get(name, [])
        if not isinstance(value, list):
            raise fail(name, f"expected a list of {{prompt, target}} objects, got {value!r}")
        out = []
        for i, item in enumerate(value):
            if not (isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("target"), str)
                    and item["prompt"].strip() and item["target"].strip()):
                raise fail(f"{name}[{i}]", f"expected {{prompt, target}} with non-empty strings, got {item!r}")
            out.append(LabeledPrompt(item["prompt"], item["target"]))
        return tuple(out)

    case_id = data.get("case_id", index)
    return EditRecord(
        case_id=str(case_id),
        prompt=text("prompt"),  # type: ignore[arg-type]
        target_new=text("target_new"),  # type: ignore[arg-type]
        subject=text("subject", required=False),
        target_true=text("target_true", required=False),
        relation=text("relation", required=False),
        paraphrases=texts("paraphrases"),
        out_of_scope=labeled("out_of_scope"),
        hard_out_of_scope=labeled("hard_out_of_scope"),
        portability=labeled("portability"),
        group=text("group", required=False),
        references=texts("references"),
    )


def chained_groups(records: list[EditRecord]) -> list[list[int]]:
    """Indices of ``records`` in runs of one chained edit (consecutive records sharing a ``group``); a record
    without a group is a run of its own."""
    groups: list[list[int]] = []
    for index, record in enumerate(records):
        if groups and record.group is not None and records[groups[-1][0]].group == record.group:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups
