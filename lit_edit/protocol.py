"""Evaluation protocols: single, batch and sequential editing, with a per-batch log that makes a run resumable.

* **single** (``data.eval_edits_per_batch: 1``): each edit is made on the unedited model, then measured.
* **batch** (``eval_edits_per_batch: k``): k edits are made at once on the unedited model, then all measured.
* **sequential** (``EditorSuite(sequential=True)``): each batch of edits is made on the model that all earlier
  batches edited. Right after each batch its own edits are measured as above (against the *unedited* model's
  out-of-scope predictions); every ``measure_every`` batches, and after the last, every edit so far is measured
  again on the current model: the retention curve.

Every finished (editor, batch) is appended to a JSON-lines log with its metric states, or with the reason its
edit failed; a rerun reads the log, skips those batches and merges their states once, so an interrupted
evaluation resumes without redoing or double counting an edit. A sequential run makes each batch's edits ``on``
the result of all before (``editor.edit(batch, on=...)``: weights and memories alike), keeps that result's file at
each curve point and resumes from the last one.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_edit.data.records import EditRecord
from lit_edit.editors.base import Editor, EditScores
from lit_edit.evaluation.metrics import AccuracyDrawdown, EditSuccess, Retention
from lit_edit.mechanics.atomic_files import save_file_atomically
from lit_edit.mechanics.edit_result import EditResult
from lit_edit.mechanics.edited_model import EditedModel
from lit_edit.safe_files import load_tensors_file

#: Records per forward pass when the whole history of a sequential run is measured again.
MEASURE_CHUNK = 8


def metric_states(scores: EditScores) -> dict[str, dict[str, Any]]:
    """Every metric's summed states, as JSON-ready numbers."""
    return {name: {key: value.tolist() for key, value in metric.metric_state.items()}
            for name, metric in scores.as_logged().items()}


def merge_states(scores: EditScores, states: dict[str, dict[str, Any]]) -> None:
    """Add logged states to ``scores`` (exactly as if their batch had been scored into it). A metric that a log
    written before it existed lacks stays unmeasured (nan), and the rest are counted."""
    for name, metric in scores.as_logged().items():
        if name not in states:
            continue
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


def rank_logs(path: Path) -> list[Path]:
    """The per-rank logs beside a run's log ``RESULTS.jsonl``: ``RESULTS.rank0.jsonl``, ... (multi-device runs)."""
    return sorted(path.parent.glob(f"{path.stem}.rank*.jsonl"))


def read_run(path: Path) -> tuple[str, list[dict[str, Any]], bool]:
    """:func:`read_log` over a whole run: its log ``path`` and, if it ran on several devices, the ranks' logs
    beside it that carry the same fingerprint (the run's fingerprint and whether it finished are ``path``'s)."""
    fingerprint, entries, complete = read_log(path)
    merged = {(entry["editor"], tuple(entry["cases"])): entry for entry in entries}
    for log in rank_logs(path):
        rank_fingerprint, rank_entries, _ = read_log(log)
        if rank_fingerprint == fingerprint:  # a rank log of another run is not this run's
            merged.update({(entry["editor"], tuple(entry["cases"])): entry for entry in rank_entries})
    return fingerprint, list(merged.values()), complete


def _local() -> bool:
    return False


def tally(entries: Sequence[dict[str, Any]], editor: str) -> tuple[EditScores, list[dict[str, Any]]]:
    """One editor's scores and failures from a run's logged (editor, batch) entries."""
    scores, failures = EditScores(compare_targets=True), []
    for metric in scores.as_logged().values():  # the entries are every rank's already: compute gathers nothing
        metric.distributed_available_fn = _local
    for entry in entries:
        if entry["editor"] == editor:
            account(entry, scores, failures)
    return scores, failures


class ResultsLog:
    """Append-only JSON lines, one per (editor, batch of case ids), after a header with the run's fingerprint.

    An earlier log is resumed only when it was left unfinished by a run with the same fingerprint (editors,
    their settings, data, protocol); otherwise it is started afresh. The last line may be cut short by a crash.

    On several devices every rank appends to its own ``RESULTS.rankN.jsonl`` (no two processes write one file)
    and reads the whole run's logs, so a run resumes on any number of devices: the rank that edits a batch
    need not be the one that logged it. Rank zero :meth:`start` s the run before any rank :meth:`load` s it, and
    :meth:`finish` es it by gathering every entry into ``RESULTS.jsonl``, marked complete.
    """

    def __init__(self, path: Path | None, fingerprint: str = "", rank: int = 0, world_size: int = 1) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.own_path = path if path is None or world_size == 1 else path.with_suffix(f".rank{rank}.jsonl")
        self.entries: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}

    def start(self, resume: bool = True) -> bool:
        """Keep an unfinished log of this run (True: the run resumes), else begin the log afresh (False).

        Rank zero only, before any rank loads. Kept: the rank logs of this run are folded into the run's log,
        so that it alone holds what was done. A new log deletes every rank log of an earlier run.
        """
        if self.path is None:
            return False
        if resume and self.path.exists():
            fingerprint, entries, complete = read_run(self.path)
            if fingerprint == self.fingerprint and not complete:
                self._rewrite(entries)
                return True
        self._rewrite([])
        return False

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [{"fingerprint": self.fingerprint}, *entries]
        text = "".join(json.dumps(line) + "\n" for line in lines)
        save_file_atomically(self.path, lambda staged: staged.write_text(text))  # the old log or the new one
        for log in rank_logs(self.path):
            log.unlink()

    def load(self) -> None:
        """Read the run's logs (after :meth:`start`): the batches finished so far, on any rank."""
        if self.path is None:
            return
        _, entries, _ = read_run(self.path)
        self.entries = {(entry["editor"], tuple(entry["cases"])): entry for entry in entries}
        if self.own_path != self.path and not self.own_path.exists():
            self.own_path.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def get(self, editor: str, cases: Sequence[str]) -> dict[str, Any] | None:
        return self.entries.get((editor, tuple(cases)))

    def add(self, editor: str, cases: Sequence[str], entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"editor": editor, "cases": list(cases), **entry}
        self.entries[editor, tuple(cases)] = entry
        if self.own_path is not None:
            with self.own_path.open("a") as out:
                out.write(json.dumps(entry) + "\n")
        return entry

    def finish(self) -> list[dict[str, Any]]:
        """Every batch of the run, from all ranks; the run's log then holds them all and is marked complete (kept
        as the per-batch record; the next run starts afresh). Rank zero only, once every rank has logged its last."""
        if self.path is None:
            return list(self.entries.values())
        _, entries, _ = read_run(self.path)
        self._rewrite(entries)
        with self.path.open("a") as out:
            out.write(json.dumps({"complete": True}) + "\n")
        return entries


@dataclass
class EditHistory:
    """One editor's sequential run: every edit so far as one result (weights or memory alike), the edits made, the
    retention curve. A resumed history holds the file of its edit until an editor reads it (:meth:`SequentialEditing.
    current`)."""

    edit: EditResult | None = None
    records: list[EditRecord] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    batches: int = 0
    saved_edit: Path | None = None
    saved_params: dict[str, Tensor] = field(default_factory=dict)  # a state written before edits were saved apart


class SequentialEditing:
    """Keeps each editor's edits between batches (each batch is edited ``on`` all before it) and measures retention
    every ``measure_every`` batches."""

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

    def current(self, key: str, editor: Editor) -> EditResult | None:
        """Every edit so far as one result (None before the first): the ``on`` of this editor's next edit."""
        history = self.history(key)
        if history.edit is None and history.saved_edit is not None:
            history.edit = editor.load_edit(history.saved_edit)
        elif history.edit is None and history.saved_params:
            history.edit = EditedModel(editor.model, editor.kind, history.saved_params)
        return history.edit

    def commit(self, key: str, edited: EditResult, records: Sequence[EditRecord]) -> None:
        """Keep ``edited`` (made ``on`` :meth:`current`, so it holds every edit so far) as the history's edit."""
        history = self.history(key)
        history.edit = edited.detached()
        history.records.extend(records)
        history.batches += 1

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
            for pattern in ("*.sequential.pt", "*.edit-*", "*.memory.pt"):  # the last: memories of states before
                for path in self.state_dir.glob(pattern):
                    path.unlink(missing_ok=True)

    def _state_path(self, key: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / f"{key}.sequential.pt"

    def _save(self, key: str) -> None:
        """The edit's file first, under a name of its own (``KEY.edit-BATCHES`` and the edit's suffix), then the state
        that names it, then the older edit files: a crash anywhere leaves a state and the edit it names."""
        path = self._state_path(key)
        if path is None:
            return
        history = self.history(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        edit_file = None
        if history.edit is not None:
            edit_file = f"{key}.edit-{history.batches}{history.edit.file_suffix}"
            history.edit.save(path.with_name(edit_file))
        state = {"edit_file": edit_file, "cases": [r.case_id for r in history.records], "curve": history.curve,
                 "batches": history.batches}
        save_file_atomically(path, lambda staged: torch.save(state, staged))  # never a half-written state
        for old in path.parent.glob(f"{glob.escape(key)}.edit-*"):
            if old.name != edit_file:
                old.unlink()
        path.with_name(f"{key}.memory.pt").unlink(missing_ok=True)  # where a state written before kept its memory

    def _load(self, key: str) -> EditHistory | None:
        path = self._state_path(key)
        if path is None or not path.exists():
            return None
        saved = load_tensors_file(path, "sequential editing state")
        missing = [case for case in saved["cases"] if case not in self.records_by_id]
        if missing:
            raise ValueError(f"{path} holds edits {missing[:5]} that this run's data does not have; "
                             "delete it (and the results log) to start afresh")
        edit_file = saved.get("edit_file")
        if "edit_file" not in saved and path.with_name(f"{key}.memory.pt").exists():  # a state written before
            edit_file = f"{key}.memory.pt"
        if edit_file is not None and not path.with_name(edit_file).exists():
            raise ValueError(f"{path} names the edit {edit_file} beside it, which is not there; delete the state (and "
                             "the results log) to start afresh")
        return EditHistory(records=[self.records_by_id[c] for c in saved["cases"]], curve=saved["curve"],
                           batches=saved["batches"], saved_edit=None if edit_file is None else path.with_name(edit_file),
                           saved_params=saved.get("params") or {})
