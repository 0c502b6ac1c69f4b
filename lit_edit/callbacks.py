"""Callbacks: before/after edit examples as TensorBoard text; progress lines for a run whose output is a file."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_edit.data.datamodule import group_batches
from lit_edit.editors.base import Editor
from lit_edit.generation import before_and_after
from lit_edit.mechanics.edited_model import EditFailedError


class EditExamples(Callback):
    """Edit a few facts and log greedy completions before and after as TensorBoard text: after each validation
    (training an editor, under ``edit_examples``), and after a test run of ``evaluate.py`` (every editor of the
    suite, under ``edit_examples/<editor>``)."""

    def __init__(self, count: int = 3, max_new_tokens: int = 6) -> None:
        self.count = count
        self.max_new_tokens = max_new_tokens

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and isinstance(pl_module, Editor):
            self.log_examples(trainer, {"": pl_module}, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        editors = getattr(pl_module, "editors", None)  # an EditorSuite
        if editors is not None and not getattr(pl_module, "stopping", False):  # a stopped run makes no more edits
            self.log_examples(trainer, {f"/{key}": editor for key, editor in editors.items()}, "test")

    def log_examples(self, trainer: Trainer, editors: dict[str, Editor], split: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not loggers or datamodule is None:
            return
        for suffix, editor in editors.items():
            text = self.examples(editor, datamodule.records(split)[: self.count], datamodule.collate)
            for logger in loggers:
                logger.experiment.add_text(f"edit_examples{suffix}", text, global_step=trainer.global_step)

    def examples(self, editor: Editor, records: list, collate: Any) -> str:
        """A markdown table: each record's prompt, a paraphrase and a look-alike, before and after its edit; a chain
        of edits (records of one ``group``) is made at once, and its first portability question is asked too."""
        lines = ["| prompt | new target | before | after |", "|---|---|---|---|"]
        for indices in group_batches(records, 1):
            chain = [records[i] for i in indices]
            batch = collate(chain).to(editor.device)
            try:
                edited = editor.checked_edit(batch)
            except EditFailedError as error:  # a refused edit; anything else is a bug and is raised
                lines += [f"| {record.prompt} | {record.target_new} | edit failed: {error} | |" for record in chain]
                continue
            asked = [(prompt, record.target_new) for record in chain for prompt in
                     (record.prompt, *record.paraphrases[:1], *(p.prompt for p in record.hard_out_of_scope[:1]))]
            asked += [(p.prompt, p.target) for record in chain for p in record.portability[:1]]
            prompts = [prompt for prompt, _ in asked]
            for (prompt, target), (before, after) in zip(
                    asked, before_and_after(editor, edited, prompts, self.max_new_tokens), strict=True):
                before, after = before.replace("|", "/"), after.replace("|", "/")  # keep the table's cells
                lines.append(f"| {prompt} | {target} | {before} | {after} |")
        return "\n".join(lines)


class ValidateAtLastStep(Callback):
    """Validation also runs at the step where ``max_steps`` ends training.

    Lightning validates every ``val_check_interval`` training batches, and with gradient accumulation (or epochs whose
    length is not a multiple of the accumulation) the last optimizer step rarely falls on such a batch: training then
    ends without validating the editor it ends with, and ``best.ckpt`` never sees it. Asking the trainer to stop at
    that step makes Lightning validate first (it validates before any requested stop)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and trainer.limit_val_batches != 0:
            trainer.should_stop = True


class StepTimer(Timer):
    """Lightning's ``max_time`` Timer, looking at the clock only after an optimizer step. Lightning's looks after
    every batch, so with ``accumulate_grad_batches`` it stops between the batches of a step: their gradients are
    dropped, and a checkpoint written then resumes in the wrong epoch. Its state is the Timer's (same key), so a
    run resumes from either's checkpoint with its time spent so far. ``train.py`` uses it for ``max_time``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_at_batch_start = -1

    @property
    def state_key(self) -> str:
        return "Timer"

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step != self._step_at_batch_start:  # an optimizer step was made
            super().on_train_batch_end(trainer, *args, **kwargs)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for a file, a pipe, SLURM's output file, pytest's capture)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def clock_time(seconds: float) -> str:
    """``HH:MM:SS`` (hours past 99 as they come): how ``max_time`` and elapsed times are shown."""
    whole = int(round(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def metric_fields(metrics: Mapping[str, Any], names: Sequence[str]) -> str:
    """``name value`` for each of ``names`` that was logged, in that order."""
    return "  ".join(f"{name} {float(metrics[name]):.4g}" for name in names if name in metrics)


class ProgressLines(Callback):
    """A line of progress every ``every_seconds`` (and/or every ``every_n_steps`` optimizer steps) while training,
    and one after each validation, when stdout is not a terminal: Lightning's progress bar draws only on a terminal,
    so a SLURM job's log or a redirected ``python train.py > log`` otherwise shows nothing until the run ends.

    ``step 120/300  elapsed 00:04:10  train/loss 0.4414  train/edit_loss 4.414  train/loc_loss 2.1e-05  train/es 0.25``
    ``validation at step 100: val/es 0.5  val/paraphrase_es 0.4  val/retention 0.9  val/score 0.3``

    When ``max_time`` runs out, Lightning's Timer stops training (:class:`StepTimer`: after an optimizer step) and
    Lightning runs one more validation, which the best checkpoint sees; but ``last.ckpt`` stays at its last
    ``every_n_train_steps`` save (or, if none was due yet, is written at the end of training marked as the epoch's
    end): resumed, the run would go back there with time left on its clock and train that stretch again, or skip to
    the next epoch. So at the step where the time ran out this callback writes ``last.ckpt`` (as a preemption does;
    ``ckpt_path: last`` resumes there), again after that last validation, with the checkpoints' own state (so it
    belongs after the ``ModelCheckpoint`` callbacks, where ``train.py`` puts it), and says so, in a terminal too:
    ``time limit 00:12:00 reached at step 73: final validation and last.ckpt written``. ``train.py`` adds one with
    the defaults to every run whose config lists none.
    """

    train_metrics = ("train/loss", "train/edit_loss", "train/loc_loss", "train/es")
    val_metrics = ("val/es", "val/paraphrase_es", "val/retention", "val/score")

    def __init__(self, every_seconds: float | None = 30.0, every_n_steps: int | None = None,
                 enabled: bool | None = None, save_at_time_limit: bool = True) -> None:
        """``every_seconds``: a line when this long has passed since the last one (None: never by time);
        ``every_n_steps``: a line at every multiple of this step (None: never by step); ``enabled``: None prints
        lines only when stdout is not a terminal, True always, False never (the time-limit line and its
        ``last.ckpt`` stay); ``save_at_time_limit``: write ``last.ckpt`` when ``max_time`` stops training."""
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"ProgressLines.every_seconds must be > 0 or null, got {every_seconds}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"ProgressLines.every_n_steps must be >= 1 or null, got {every_n_steps}")
        self.every_seconds = every_seconds
        self.every_n_steps = every_n_steps
        self.enabled = enabled
        self.save_at_time_limit = save_at_time_limit
        self.clock: Callable[[], float] = time.monotonic
        self.active = False
        self._started = self._last_line = 0.0
        self._last_step = -1
        self._trained = False
        self._validated_at: int | None = None
        self._stopped_at: int | None = None  # the step at which the time limit stopped training
        self._saved: Path | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_step = -1  # until on_train_start, which a run resumed with its time already spent never reaches

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.active = trainer.is_global_zero and (self.enabled if self.enabled is not None
                                                  else not is_terminal(sys.stdout))
        self._started = self._last_line = self.clock()
        self._last_step = trainer.global_step
        self._trained = False
        self._validated_at = self._stopped_at = self._saved = None
        timer = self.timer(trainer)
        left = timer.time_remaining() if timer is not None else None
        plan = f"training from step {trainer.global_step}"
        plan += f" to {trainer.max_steps}" if trainer.max_steps > 0 else ""
        plan += f", for at most {clock_time(max(left, 0.0))} more" if left is not None else ""
        every = [f"{self.every_seconds:g} s"] if self.every_seconds is not None else []
        every += [f"{self.every_n_steps} steps"] if self.every_n_steps is not None else []
        self.write(f"{plan}; a line every {' or '.join(every)} and after each validation" if every
                   else f"{plan}; a line after each validation")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:  # accumulating gradients: no optimizer step yet
            return
        self._last_step = step
        self._trained = True
        if self.active:
            self.progress_line(trainer)
        if self._stopped_at is None and self.time_ran_out(trainer):  # the Timer stops after this step too
            self._stopped_at = step
            self.save_last(trainer)  # resumable at this step boundary, as after a preemption

    def progress_line(self, trainer: Trainer) -> None:
        now = self.clock()
        step = trainer.global_step
        due_by_step = self.every_n_steps is not None and step % self.every_n_steps == 0
        due_by_time = self.every_seconds is not None and now - self._last_line >= self.every_seconds
        if due_by_step or due_by_time:
            self._last_line = now
            total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
            fields = metric_fields(trainer.callback_metrics, self.train_metrics)
            line = f"step {step}{total}  elapsed {clock_time(now - self._started)}"
            self.write(f"{line}  {fields}" if fields else line)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validated_at = trainer.global_step
        fields = metric_fields(trainer.callback_metrics, self.val_metrics)
        if self.active and fields:
            self.write(f"validation at step {trainer.global_step}: {fields}")
        if self._stopped_at is None and trainer.should_stop and self.time_ran_out(trainer):
            self._stopped_at = trainer.global_step  # the Timer came first at the step boundary
        if self._stopped_at == trainer.global_step:  # the final validation: last.ckpt with what it changed
            self.save_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._stopped_at is None and self._trained and self.time_ran_out(trainer):
            self._stopped_at = trainer.global_step  # stopped at an epoch's end (the Timer checks there too)
            self.save_last(trainer)
        if self._stopped_at is None:
            return
        done = ["final validation"] if self._validated_at == self._stopped_at else []
        if self._saved is not None:
            done.append(f"{self._saved.name} written")
        elif self.save_at_time_limit:
            done.append("no last.ckpt written (no ModelCheckpoint with save_last: true)")
        self.write(f"time limit {self.limit(trainer)} reached at step {self._stopped_at}: "
                   f"{' and '.join(done) or 'stopped'}", always=trainer.is_global_zero)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._last_step < 0 and self.time_ran_out(trainer):  # on_train_start never came: nothing left to train
            self.write(f"time limit {self.limit(trainer)} already reached at step {trainer.global_step} (in the "
                       "checkpoint resumed from): nothing trained; raise --trainer.max_time to train on",
                       always=trainer.is_global_zero)

    def time_ran_out(self, trainer: Trainer) -> bool:
        """Whether ``max_time`` is spent before ``max_steps``; every rank gets rank 0's answer, as from the Timer
        (saving is collective under DeepSpeed)."""
        timer = self.timer(trainer)
        if timer is None or timer.time_remaining() is None:  # no max_time (the same on every rank)
            return False
        before_max_steps = trainer.max_steps < 0 or trainer.global_step < trainer.max_steps
        return bool(trainer.strategy.broadcast(timer.time_remaining() <= 0 and before_max_steps))

    def save_last(self, trainer: Trainer) -> None:
        """``last.ckpt`` of every ``ModelCheckpoint(save_last=True)``, written as it writes it itself, so that it
        knows (a ModelCheckpoint that has not saved yet would otherwise write its own at the end of training, marking
        the epoch finished, and the run would resume at the next epoch)."""
        if not self.save_at_time_limit:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))  # Lightning's own way
                self._saved = Path(callback.last_model_path)

    def limit(self, trainer: Trainer) -> str:
        """``max_time`` as ``HH:MM:SS``."""
        timer = self.timer(trainer)
        return clock_time(timer.time_elapsed() + (timer.time_remaining() or 0.0)) if timer is not None else "?"

    def write(self, line: str, always: bool = False) -> None:
        """Print ``line`` at once (not left in a buffer) if lines are on, or if ``always``."""
        if self.active or always:
            print(line, file=sys.stdout, flush=True)

    @staticmethod
    def timer(trainer: Trainer) -> Timer | None:
        """The Timer that ``max_time`` (or the config's callbacks) gave the trainer, if any."""
        return next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
