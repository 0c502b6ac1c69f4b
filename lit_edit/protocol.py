"""Evaluation protocols: single, batch and sequential editing, with a per-batch log that makes a run resumable.

* **single** (``data.eval_edits_per_batch: 1``): each edit is made on the unedited model, then measured.
* **batch** (``eval_edits_per_batch: k``): k edits are made at once on the unedited model, then all measured.
* **sequential** (``EditorSuite(sequential=True)``): each batch of edits is made on the model that all earlier
  batches edited. Right after each batch its own edits are measured as above (against the *unedited* model's
  out-of-scope predictions); every ``measure_every`` batches, and after the last, every edit so far is measured
  again on the current model: the retention curve.

Every finished (editor, batch) is appended to a JSON-lines log with its metric states, or with the reason its
edit failed; a rerun reads the log, skips those batches and merges their states once, so an interrupted
evaluation resumes without redoing or double counting an edit. A sequential run also keeps the edited weights
at each curve point and resumes from the last one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_edit.data.records import EditRecord
from lit_edit.editors.base import Editor, EditScores
from lit_edit.editors.edited_model import EditedModel
from lit_edit.editors.memory import EditMemory
from lit_edit.editors.routed import RoutedModel
from lit_edit.metrics import AccuracyDrawdown, EditSuccess, Retention

#: Records per forward pass when the whole history of a sequential run is measured again.
MEASURE_CHUNK = 8


def metric_states(scores: EditScores) -> dict[str, dict[str, Any]]:
    """Every metric's summed states, as JSON-ready numbers."""
    return {name: {key: value.tolist() for key, value in metric.metric_state.items()}
            for name, metric in scores.as_logged().items()}


def merge_states(scores: EditScores, states: dict[str, dict[str, Any]]) -> None:
    """Add logged states to ``scores`` (exactly as if their batch had been scored into it)."""
    for name, metric in scores.as_logged().items():
        incoming = {key: torch.tensor(value, dtype=getattr(metric, key).dtype, device=getattr(metric, key).device)
                    for key, value in states[name].items()}
        metric.merge_state(incoming)
        metric._update_count += 1  # merge_state counts no update, and compute() would warn that none happened


def account(entry: dict[str, Any], scores: EditScores, failures: list[dict[str, Any]]) -> None:
    """Count one logged (editor, batch): its states into ``scores``, or its failure into ``failures``."""
    if entry["status"] == "failed":
        failures.append({"cases": entry["cases"], "reason": entry["reason"]})
    else:
        merge_states(scores, entry["states"])


def read_log(path: Path) -> tuple[str, list[dict[str, Any]], bool]:
    """A per-batch log's header fingerprint, its finished (editor, batch) entries and whether the run finished.

    The last line may be cut short by a crash (that batch is simply not finished); any other bad line is an error.
    A batch logged twice (a run started again before the last one had stopped) counts once, as last logged.
    """
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    entries: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    complete = False
    for number, line in enumerate(lines[1:], 2):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # written halfway when the run was killed: that batch is done again
            raise ValueError(f"{path}: line {number} is not JSON; delete the log to start afresh") from None
        if entry.get("complete"):
            complete = True
            break
        entries[entry["editor"], tuple(entry["cases"])] = entry
    return header.get("fingerprint", ""), list(entries.values()), complete


class ResultsLog:
    """Append-only JSON lines, one per (editor, batch of case ids), after a header with the run's fingerprint.

    An earlier log is resumed only when it was left unfinished by a run with the same fingerprint (editors,
    their settings, data, protocol); otherwise it is started afresh. The last line may be cut short by a crash.
    """

    def __init__(self, path: Path | None, fingerprint: str = "") -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.entries: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self.resumed = path is not None and self._read(path)
        if path is not None and not self.resumed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")

    def _read(self, path: Path) -> bool:
        """Load an unfinished log of the same run; False when there is none to resume."""
        if not path.exists():
            return False
        fingerprint, entries, complete = read_log(path)
        if fingerprint != self.fingerprint or complete:
            return False  # another run's log, or a finished run: a new one starts afresh
        self.entries = {(entry["editor"], tuple(entry["cases"])): entry for entry in entries}
        return True

    def get(self, editor: str, cases: Sequence[str]) -> dict[str, Any] | None:
        return self.entries.get((editor, tuple(cases)))

    def add(self, editor: str, cases: Sequence[str], entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"editor": editor, "cases": list(cases), **entry}
        self.entries[editor, tuple(cases)] = entry
        self._append(entry)
        return entry

    def complete(self) -> None:
        """Mark the run finished (kept as the per-batch record; the next run starts afresh)."""
        self._append({"complete": True})

    def _append(self, entry: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(json.dumps(entry) + "\n")


@dataclass
class EditHistory:
    """One editor's sequential run: the edited weights (or, for SERAC and the cache, the edit memory) so far, the
    edits made, the retention curve."""

    params: dict[str, Tensor] = field(default_factory=dict)
    memory: EditMemory | None = None
    records: list[EditRecord] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    batches: int = 0


class SequentialEditing:
    """Keeps each editor's edited weights between batches and measures retention every ``measure_every`` batches."""

    def __init__(self, measure_every: int, state_dir: Path | None) -> None:
        if measure_every < 1:
            raise ValueError(f"measure_every must be at least 1, got {measure_every}")
        self.measure_every = measure_every
        self.state_dir = state_dir
        self.histories: dict[str, EditHistory] = {}
        self.records_by_id: dict[str, EditRecord] = {}  # to rebuild a saved history's records

    def history(self, key: str) -> EditHistory:
        if key not in self.histories:
            self.histories[key] = self._load(key) or EditHistory()
        return self.histories[key]

    @contextmanager
    def applied(self, key: str, editor: Editor) -> Iterator[None]:
        """The base model holds this editor's edited weights so far (restored afterwards); a memory-based editor
        adds its next edits to a copy of its memory so far (the copy: a failed edit leaves the history as it was)."""
        history = self.history(key)
        if getattr(editor, "memory_based", False):
            editor.carried_memory = None if history.memory is None else copy.copy(history.memory)
            try:
                yield
            finally:
                editor.carried_memory = None
            return
        with EditedModel(editor.model, editor.kind, history.params).applied():
            yield

    def commit(self, key: str, edited: EditedModel, records: Sequence[EditRecord]) -> None:
        history = self.history(key)
        if isinstance(edited, RoutedModel):
            history.memory = edited.router.memory
        else:
            history.params.update({name: value.detach().clone() for name, value in edited.params.items()})
        history.records.extend(records)
        history.batches += 1

    def current(self, key: str, editor: Editor) -> EditedModel:
        """The model as every edit so far left it."""
        history = self.history(key)
        if getattr(editor, "memory_based", False):
            return editor.routed(history.memory if history.memory is not None else EditMemory(1))
        return EditedModel(editor.model, editor.kind, history.params)  # substituted functionally, not copied in

    def finished(self, key: str, cases: Sequence[str]) -> bool:
        """Whether these edits are already in the (resumed) history."""
        return set(cases) <= {record.case_id for record in self.history(key).records}

    def due(self, key: str, last: bool) -> bool:
        history = self.history(key)
        return history.batches % self.measure_every == 0 or last

    def measure(self, key: str, editor: Editor) -> dict[str, float]:
        """ES over every edit so far and over the first one, and DD/retention against the unedited model on all
        their out-of-scope prompts (no per-batch limit), all on the model as it is now; appended to the curve and
        saved."""
        history = self.history(key)
        current = self.current(key, editor)
        es, first_es, drawdown, retention = EditSuccess(), EditSuccess(), AccuracyDrawdown(), Retention()
        for start in range(0, len(history.records), MEASURE_CHUNK):
            batch = editor.prompts.batch(history.records[start:start + MEASURE_CHUNK]).to(editor.device)
            with torch.no_grad():
                pre_out, out_labels = editor.logits(batch.out_of_scope)
                post_in, in_labels = editor.logits(batch.in_scope, current)
                post_out, _ = editor.logits(batch.out_of_scope, current)
            es.update(post_in.cpu(), in_labels.cpu())
            drawdown.update(pre_out.cpu(), post_out.cpu(), out_labels.cpu())
            retention.update(pre_out.cpu(), post_out.cpu(), out_labels.cpu())
            if start == 0:
                first = 1 + len(history.records[0].paraphrases)  # the first edit's in-scope rows come first
                first_es.update(post_in[:first].cpu(), in_labels[:first].cpu())
        point = {"edits": len(history.records), "batches": history.batches, "es": float(es.compute()),
                 "first_edit_es": float(first_es.compute()), "dd": float(drawdown.compute()),
                 "retention": float(retention.compute())}
        history.curve.append(point)
        self._save(key)
        return point

    def discard_saved(self) -> None:
        if self.state_dir is not None:
            for path in [*self.state_dir.glob("*.sequential.pt"), *self.state_dir.glob("*.memory.pt")]:
                path.unlink()

    def _state_path(self, key: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / f"{key}.sequential.pt"

    @staticmethod
    def _memory_path(state_path: Path, key: str) -> Path:
        """Where a memory-based editor's memory is kept, beside its state."""
        return state_path.with_name(f"{key}.memory.pt")

    def _save(self, key: str) -> None:
        path = self._state_path(key)
        if path is None:
            return
        history = self.history(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if history.memory is not None:  # written first: the state that points to it is replaced last
            history.memory.save(self._memory_path(path, key))
        partial = path.with_suffix(".tmp")
        torch.save({"params": {k: v.cpu() for k, v in history.params.items()},
                    "cases": [r.case_id for r in history.records], "curve": history.curve,
                    "batches": history.batches}, partial)
        partial.replace(path)  # never a half-written state

    def _load(self, key: str) -> EditHistory | None:
        path = self._state_path(key)
        if path is None or not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        missing = [case for case in saved["cases"] if case not in self.records_by_id]
        if missing:
            raise ValueError(f"{path} holds edits {missing[:5]} that this run's data does not have; "
                             "delete it (and the results log) to start afresh")
        memory_path = self._memory_path(path, key)
        return EditHistory(params=saved["params"], records=[self.records_by_id[c] for c in saved["cases"]],
                           curve=saved["curve"], batches=saved["batches"],
                           memory=EditMemory.load(memory_path) if memory_path.exists() else None)
