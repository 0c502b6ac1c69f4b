"""Evaluate several editors on the same test batches and report one table (markdown + JSON).

A run holds ``<output>.lock`` (:mod:`lit_edit.run_lock`) from its start to its end: a second run with the same
``output`` is refused instead of mixing its edits into this one's log. SIGTERM stops a run at the next editor's
batch: the per-batch log is kept, one line on stderr says how far it got, and the status is 143 (128 + 15); the
same command resumes it.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor
from lit_edit.errors import ConfigurationError, RunInUseError
from lit_edit.evaluation.paper_scores import inverse_document_frequencies
from lit_edit.evaluation.report import COLUMNS, OPTIONAL_COLUMNS, results_table, write_run_report
from lit_edit.evaluation.results import EditorResult, LogEntry
from lit_edit.evaluation.scores import EditScores
from lit_edit.evaluation.scoring import log_scores, score, timed_edit, unedited_logits
from lit_edit.generation import greedy_completion
from lit_edit.json_ready import json_ready
from lit_edit.mechanics.edited_model import EditFailedError
from lit_edit.preemption import Preempted, StopRequest
from lit_edit.protocol import ResultsLog, SequentialEditing, account, metric_states, read_run
from lit_edit.provenance import run_provenance
from lit_edit.run_lock import RunLock

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "EditorSuite", "only_editors", "results_table"]  # the table is the report's

class EditorSuite(LightningModule):
    """Runs every editor on each test batch; ``output`` receives one JSON record per editor.

    The protocol (:mod:`lit_edit.protocol`): single or batch editing by ``data.eval_edits_per_batch``, or
    ``sequential``. Each finished (editor, batch) goes to ``output``'s ``.jsonl`` log, from which a rerun resumes.
    Rank zero holds ``output``'s :class:`~lit_edit.run_lock.RunLock` for the whole run; on SIGTERM every rank skips
    its remaining batches and the run ends with :class:`~lit_edit.preemption.Preempted` (status 143), log kept.
    """

    def __init__(self, editors: dict[str, Editor], output: str = "results/evaluate.json",
                 only: list[str] | None = None, sequential: bool = False, measure_every: int = 10,
                 resume: bool = True, fluency_tokens: int = 0) -> None:
        """
        Args:
            editors: the editors to compare, by the names the table uses.
            output: the results JSON; the per-batch log is the same path with ``.jsonl``.
            only: the editors to run (default: all), to re-run or skip one without editing the config.
            sequential: apply each batch on top of the earlier ones instead of on the unedited model.
            measure_every: in a sequential run, re-measure every edit so far after this many batches (and the last).
            resume: continue from the log of an earlier, interrupted run of the same output (false: start afresh).
            fluency_tokens: when above 0, generate this many tokens greedily from each edit prompt and paraphrase
                after the edit and report their n-gram entropy (ROME's fluency) and, for records with reference
                texts (``data.references``), their TF-IDF similarity to them (ROME's consistency); costs one
                generation per prompt.
        """
        super().__init__()
        if only is not None:
            editors = only_editors(editors, only)
        if not editors:
            raise ConfigurationError("model.editors is empty: an evaluation needs at least one editor")
        specs = {(e.model_spec.name, e.model_spec.kind, e.model_spec.dtype) for e in editors.values()}
        if len(specs) > 1:
            raise ConfigurationError("all editors of one evaluation must edit the same base model (model.editors.*."
                                     f"init_args.model), got {sorted(specs)}")
        self.editors = nn.ModuleDict(editors)
        self.output = Path(output)
        self.log_path = self.output.with_suffix(".jsonl")
        self.resume = resume
        state_dir = self.output.parent / f"{self.output.stem}_sequential"
        self.sequence = SequentialEditing(measure_every, state_dir) if sequential else None
        self.fluency_tokens = fluency_tokens
        self.results: list[dict[str, Any]] = []  # the results JSON's records, once the run has finished
        self.resolved_config: str | None = None  # set by evaluate.py, stored with the results
        self.run_lock: RunLock | None = None
        self.stop = StopRequest()
        self.stopping = False  # this rank skips its remaining batches: a stop signal came

    @property
    def base(self) -> Editor:
        """An editor that stands for the base model: every editor edits the same one (checked at construction),
        so its unedited logits and prompts serve them all."""
        return next(iter(self.editors.values()))

    @property
    def prompts(self) -> Any:
        return self.base.prompts

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, EditBatch) else batch

    def configure_callbacks(self) -> list[Callback]:
        return [_EndRunOnException()]

    def on_test_start(self) -> None:
        scored = {key: {name: value for name, value in editor.hparams.items() if name not in editor.unscored_hparams}
                  for key, editor in self.editors.items()}
        fingerprint = json.dumps({"editors": json_ready(scored),
                                  "data": json_ready(dict(self.trainer.datamodule.hparams)),
                                  "protocol": self.protocol()}, sort_keys=True)
        trainer = self.trainer
        if self.sequence is not None and trainer.world_size > 1:
            raise ConfigurationError("a sequential run edits one model batch after batch, so it runs on one device; "
                                     f"got {trainer.world_size} (set trainer.devices: 1)")
        self.take_run_lock()
        self.stopping = False
        self.stop = StopRequest()
        self.stop.install(forward=getattr(trainer.strategy.launcher, "kill", None))  # to the ranks it started
        if trainer.received_sigterm:  # came after Lightning set its handler, before ours
            self.stop.received = signal.SIGTERM
        # Each rank edits its share of the batches and logs them in its own file; all read the whole run's logs.
        self.log_book = ResultsLog(self.log_path, fingerprint, trainer.global_rank, trainer.world_size)
        resumed = trainer.strategy.broadcast(self.log_book.start(self.resume) if trainer.is_global_zero else None)
        self.log_book.load()
        if self.sequence is not None and not resumed:
            self.sequence.discard_saved()  # the saved weights belong to another (or a finished) run
        records = self.trainer.datamodule.records("test")
        if self.sequence is not None:
            self.sequence.records_by_id = {r.case_id: r for r in records}
        # Consistency's IDF: every distinct reference text of the run is one document.
        self.idf = inverse_document_frequencies(sorted({text for r in records for text in r.references}))

    def take_run_lock(self) -> None:
        """Rank zero locks ``output`` for the run; every rank is told if another run holds it."""
        trainer = self.trainer
        refusal = None
        if trainer.is_global_zero:
            self.run_lock = RunLock(self.output, hint="give this run another output (--model.output)")
            try:
                self.run_lock.acquire()
            except RunInUseError as error:
                refusal = str(error)
        refusal = trainer.strategy.broadcast(refusal)
        if refusal is not None:
            raise RunInUseError(refusal)

    def end_run(self) -> None:
        """Release the run's lock and the stop signal's handler (the run finished, stopped or failed)."""
        self.stop.restore()
        if self.run_lock is not None:
            self.run_lock.release()

    def on_test_end(self) -> None:
        self.end_run()

    def test_step(self, batch: EditBatch, batch_idx: int) -> None:
        cases = [record.case_id for record in batch.records]
        last = batch_idx == self.trainer.num_test_batches[0] - 1
        pre = None
        for key, editor in self.editors.items():
            # Every rank logs every editor's figures at every step, stopped or not: their syncs at the epoch's end
            # are collectives, which hang unless all ranks make the same ones.
            log_scores(self, editor.test_scores, key, len(batch))
            if self.stopping or self.stop.received is not None:
                self.stopping = True  # the rest of the batches are left to the resumed run
                continue
            logged = self.log_book.get(key, cases)
            resumed = self.sequence.finished(key, cases) if self.sequence is not None else logged is not None
            if resumed and logged is not None:
                self.account(key, editor, logged)
                continue
            if pre is None:  # one base model: the unedited logits serve every editor
                pre = unedited_logits(self.base, batch)
            self.account(key, editor, self.log_book.add(key, cases, self.edit(key, editor, batch, pre, last).to_json()))

    def edit(self, key: str, editor: Editor, batch: EditBatch, pre: Any, last: bool) -> LogEntry:
        """Score one batch for one editor: its log entry. A failed edit is recorded with its reason, and the run
        goes on."""
        cases = [record.case_id for record in batch.records]
        scores = EditScores(compare_targets=True).to(self.device)
        on = self.sequence.current(key, editor) if self.sequence is not None else None
        try:
            edited = score(editor, batch, scores, pre, made=timed_edit(editor, batch, on))
            if self.fluency_tokens > 0:
                self.score_generations(editor, edited, batch, scores)
        except EditFailedError as error:  # a refused edit: the model is as it was; anything else is a bug
            return LogEntry.failed(key, cases, f"{type(error).__name__}: {error}")
        states, point = metric_states(scores), None
        if self.sequence is not None:
            self.sequence.commit(key, edited, batch.records)
            if self.sequence.due(key, last):
                point = self.sequence.measure(key, editor)
                for logger in self.loggers:  # the retention curve, against the number of edits made
                    logger.log_metrics({f"{key}/sequential_{name}": point[name]
                                        for name in ("es", "first_edit_es", "dd", "retention")}, step=point["edits"])
        return LogEntry.done(key, cases, states, point)

    def score_generations(self, editor: Editor, edited: Any, batch: EditBatch, scores: EditScores) -> None:
        """Greedy generations after the edit from each edit prompt and paraphrase: their fluency, and their
        consistency with the record's reference texts where it has some."""
        with torch.no_grad(), edited.applied() as model:
            generated = [[greedy_completion(model, editor.tokenizer, editor.kind, prompt, self.fluency_tokens)
                          for prompt in (record.prompt, *record.paraphrases)] for record in batch.records]
        scores.fluency.update([text for texts in generated for text in texts])
        referenced = [(" ".join(texts), " ".join(record.references))
                      for record, texts in zip(batch.records, generated, strict=True) if record.references]
        if referenced:
            scores.consistency.update(*map(list, zip(*referenced, strict=True)), self.idf)

    def account(self, key: str, editor: Editor, entry: dict[str, Any]) -> None:
        account(entry, editor.test_scores, [])  # the running figures Lightning logs; results come from the log

    def on_test_epoch_end(self) -> None:
        """Results from the run's log: every batch, whichever rank (or earlier, resumed run) edited it."""
        self.trainer.strategy.barrier()  # every rank has logged its last batch
        if self.trainer.strategy.reduce_boolean_decision(self.stopping, all=False):
            self.stop_run()
        if self.trainer.is_global_zero:
            self.results = [record.to_json() for record in self.write_results(self.log_book.finish())]
        self.results = self.trainer.strategy.broadcast(self.results)

    def stop_run(self) -> None:
        """End a run that a signal stopped: its log is kept for the same command to resume; one line says so."""
        trainer = self.trainer
        local = torch.tensor(float(trainer.num_test_batches[0]), device=self.device)
        batches = int(trainer.strategy.reduce(local, reduce_op="sum").item())
        received = self.stop.received or signal.SIGTERM  # another rank's signal stopped this one
        if trainer.is_global_zero:
            done = len(read_run(self.log_path)[1])
            again = ("run the same command again to resume" if self.resume else
                     "run the same command with --model.resume true to resume")
            print(f"stopped by {received.name} after {done} of {batches * len(self.editors)} batches ({batches} "
                  f"test batches x {len(self.editors)} editors); the log {self.log_path} is kept; {again}",
                  file=sys.stderr, flush=True)
        raise Preempted(128 + int(received))

    def write_results(self, entries: list[dict[str, Any]]) -> list[EditorResult]:
        """Each editor's figures over the logged ``entries``, written as the results JSON, its table and plots."""
        logged = [LogEntry.from_json(entry) for entry in entries]
        datamodule = self.trainer.datamodule
        data = dict(datamodule.hparams) if datamodule is not None else {}
        provenance = run_provenance(self.base, datamodule, self.resolved_config)
        results = [EditorResult.from_entries(
            logged, key, name=editor.name, class_path=f"{type(editor).__module__}.{type(editor).__qualname__}",
            init_args=json_ready(dict(editor.hparams)), model=json_ready(editor.model_spec), protocol=self.protocol(),
            sequential=self.sequence.history(key).curve if self.sequence is not None else None,
            data=json_ready(data), provenance=provenance) for key, editor in self.editors.items()]
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(json.dumps([record.to_json() for record in results], indent=1))
        table = results_table(results)
        written = [self.output, *write_run_report(results, self.output, table)]
        print("\n" + table + "\n\nwritten: " + ", ".join(str(path) for path in written))
        return results

    def protocol(self) -> dict[str, Any]:
        datamodule = self.trainer.datamodule
        k = getattr(datamodule, "eval_edits_per_batch", 1)
        mode = "sequential" if self.sequence is not None else ("single" if k == 1 else "batch")
        described = {"mode": mode, "edits_per_batch": k}
        if self.sequence is not None:
            described["measure_every"] = self.sequence.measure_every
        return described


def only_editors(editors: dict[str, Any], only: list[str]) -> dict[str, Any]:
    """The entries of ``editors`` (built editors or their configs) named in ``only``; an unknown name is an error."""
    unknown = sorted(set(only) - set(editors))
    if unknown:
        raise ConfigurationError(f"--model.only names editors the config does not define: {unknown}; "
                                 f"defined: {sorted(editors)}")
    return {key: editor for key, editor in editors.items() if key in only}


class _EndRunOnException(Callback):
    """Releases a failed run's lock at once (a module has no exception hook): a run started again in the same
    process, as a notebook or a test does, must not find the lock still held."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, EditorSuite):
            pl_module.end_run()

