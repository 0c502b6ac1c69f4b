"""The two records an evaluation writes, typed: a per-batch log entry and an editor's results record.

Each is built in one place and has one JSON form (``to_json``/``from_json``), so the suite that writes them and
the report that reads them cannot drift apart. The JSON is what earlier versions wrote, key for key and in the same
order; keys this version does not know are kept as read.

This module imports no torch (``lit-edit report --help`` imports it); only :meth:`EditorResult.from_entries`
does, when it tallies metric states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict

__all__ = ["EditorResult", "Failure", "LogEntry"]


class Failure(TypedDict):
    """Edits that failed together (one batch), and why."""

    cases: list[str]
    reason: str


def _require(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = record.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"not {what}: its {key!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One finished (editor, batch) of a run's per-batch log: the metric states of its edits, or why they failed.

    A sequential run's entry also carries the retention-curve point measured after it, when one was due.
    """

    editor: str
    cases: list[str]
    status: Literal["done", "failed"]
    states: dict[str, dict[str, Any]] | None = None
    """Each metric's summed states (``torchmetrics`` state name -> number or list), for a done batch."""
    reason: str | None = None
    """``ErrorType: message`` of a failed batch."""
    curve: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.status not in ("done", "failed"):
            raise ValueError(f"a log entry's status is 'done' or 'failed', got {self.status!r}")
        if self.status == "done" and self.states is None:
            raise ValueError(f"a done log entry needs its metric states (editor {self.editor!r})")
        if self.status == "failed" and self.reason is None:
            raise ValueError(f"a failed log entry needs its reason (editor {self.editor!r})")

    @classmethod
    def done(cls, editor: str, cases: Sequence[str], states: dict[str, dict[str, Any]],
             curve: dict[str, float] | None = None) -> LogEntry:
        return cls(editor=editor, cases=list(cases), status="done", states=states, curve=curve)

    @classmethod
    def failed(cls, editor: str, cases: Sequence[str], reason: str) -> LogEntry:
        return cls(editor=editor, cases=list(cases), status="failed", reason=reason)

    def to_json(self) -> dict[str, Any]:
        """The log line: ``editor``, ``cases``, ``status``, then ``states`` (and ``curve``) or ``reason``."""
        line: dict[str, Any] = {"editor": self.editor, "cases": list(self.cases), "status": self.status}
        if self.status == "failed":
            line["reason"] = self.reason
            return line
        line["states"] = self.states
        if self.curve is not None:
            line["curve"] = self.curve
        return line

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> LogEntry:
        """A log line as :meth:`to_json` writes it; ``ValueError`` says what is missing."""
        what = "a per-batch log entry of evaluate.py"
        editor = _require(line, "editor", str, what)
        cases = [str(case) for case in _require(line, "cases", list, what)]
        if line.get("status") == "failed":
            return cls.failed(editor, cases, _require(line, "reason", str, what))
        if line.get("status") != "done":
            raise ValueError(f"not {what}: its status is {line.get('status')!r}, not 'done' or 'failed'")
        return cls.done(editor, cases, _require(line, "states", dict, what), line.get("curve"))


@dataclass(kw_only=True)
class EditorResult:
    """One editor's figures over a run: a record of the results JSON, or the same read from a per-batch log.

    ``None`` marks a key the record does not have: a run that is not sequential has no ``sequential`` curve, a
    record read from a log has no provenance, one read from a results JSON no ``finished``. Fields are in the
    order of the JSON's keys.
    """

    editor: str
    """The editor's name in the run's config (the table's row)."""
    name: str | None = None
    """Its class's name."""
    class_path: str | None = None
    init_args: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    """``mode`` (single, batch or sequential), ``edits_per_batch`` and, for sequential runs, ``measure_every``."""
    edits: int | None = None
    """Edits made and scored (failed ones not counted)."""
    failed_edits: int | None = None
    failures: list[Failure] | None = None
    metrics: dict[str, float]
    """Logged metric name -> value over the run; nan where nothing was measured."""
    sequential: list[dict[str, float]] | None = None
    """A sequential run's retention curve: one point per measurement."""
    data: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    finished: bool | None = None
    """For a record read from a per-batch log: whether the run had finished."""
    source: str | None = None
    """The file the record was read from (set by the report)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a record that this version does not know, kept as read and written after the rest."""

    @classmethod
    def from_entries(cls, entries: Sequence[LogEntry], editor: str, **context: Any) -> EditorResult:
        """``editor``'s record over a run's logged batches: the one place results are computed, for the finished
        run's JSON and for a report of its log alike. ``context``: the other fields (``init_args``, ``data``, ...)."""
        from lit_edit.protocol import tally  # torch, Lightning: not needed to read a results JSON

        scores, failures = tally([entry.to_json() for entry in entries if entry.editor == editor], editor)
        edits = int(scores.edit_seconds.weight.item())
        metrics = {name: float(metric.compute()) if edits else math.nan for name, metric in scores.as_logged().items()}
        return cls(editor=editor, edits=edits, failed_edits=sum(len(failure["cases"]) for failure in failures),
                   failures=failures, metrics=metrics, **context)

    def to_json(self) -> dict[str, Any]:
        """The results JSON's record: every field that is set, in order, then :attr:`extra`."""
        record = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name != "extra" and getattr(self, f.name) is not None}
        return {**record, **self.extra}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EditorResult:
        """A record as :meth:`to_json` writes it (an object with at least ``editor`` and ``metrics``)."""
        what = "an editor record of evaluate.py"
        _require(record, "editor", str, what)
        _require(record, "metrics", dict, what)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{key: value for key, value in record.items() if key in known and value is not None},
                   extra={key: value for key, value in record.items() if key not in known})
