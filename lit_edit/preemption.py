"""Checkpoint at a step boundary when the run is told to stop (SLURM preemption, time limit, ``kill``).

SLURM warns a job before ending it: SIGUSR1 ahead of the time limit (``#SBATCH --signal=SIGUSR1@90``, see
:mod:`lit_edit.slurm`), SIGTERM when it preempts, cancels or requeues it, SIGKILL ``KillWait`` seconds later.

Lightning's own handlers act inside the signal handler: on SIGUSR1 they save a checkpoint at whatever point
of a step the signal arrived, with the collectives of saving interleaved with the step's own on other ranks,
and on SIGTERM they broadcast from inside the handler. A resumed run could then repeat or lose part of a step,
or ranks could hang. :class:`CheckpointOnPreemption` replaces them while training: the handler only records
the signal; after the next optimizer step all ranks agree that one came, save ``last.ckpt`` where the
run's ``ModelCheckpoint(save_last=True)`` keeps it, requeue the SLURM job (after the requeue signal) and exit.
``ckpt_path: last`` then resumes with no lost and no repeated step.

``train.py`` adds this callback to every run. ``evaluate.py`` stops the same way at its own boundary, an editor's
batch (:class:`StopRequest`, used by :class:`~lit_edit.evaluation.suite.EditorSuite`): its per-batch log is kept
and the same command resumes it; it exits with status 128 + the signal's number (143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class Preempted(SystemExit):
    """Raised to end ``fit`` after the preemption checkpoint, or an evaluation with its log kept; the exit status is
    128 + the signal's number."""


class StopRequest:
    """Records a stop signal, so that a loop can end at its next boundary instead of inside a step.

    The handler only records the signal, and forwards it once to ``forward`` (Lightning's launcher, which passes it
    on to the ranks it started, as Lightning's own handler does). Handlers are set from the main thread only.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._forward: Callable[[int], None] | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self, forward: Callable[[int], None] | None = None) -> None:
        self._forward = forward
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous.setdefault(signum, signal.signal(signum, self._record))

    def _record(self, signum: int, _: FrameType | None) -> None:
        first = self.received is None
        self.received = self.received or signal.Signals(signum)
        if first and self._forward is not None:
            self._forward(signum)

    def restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}


class CheckpointOnPreemption(Callback):
    """On ``requeue_signal`` or ``stop_signal``: finish the optimizer step, save ``last.ckpt``, (requeue,) exit."""

    def __init__(self, requeue_signal: str | None = "SIGUSR1", stop_signal: str = "SIGTERM") -> None:
        self.requeue_signal = signal_named(requeue_signal or "SIGUSR1")
        self.stop_signal = signal_named(stop_signal)
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._step_at_batch_start = -1
        self.requeue_wait = 120.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (e.g. a notebook's worker thread)
        if self.checkpoint_path(trainer) is None:
            rank_zero_warn("CheckpointOnPreemption: no ModelCheckpoint(save_last=True) among the callbacks, so a "
                           "preempted run could not resume; signals are left to Lightning.")
            return
        for signum in (self.requeue_signal, self.stop_signal):
            self._previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, _: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._previous or trainer.global_step == self._step_at_batch_start:
            return  # not ours to handle, or in the middle of accumulating gradients: wait for the step
        strategy = trainer.strategy
        if not strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        requeue = strategy.reduce_boolean_decision(self.received == self.requeue_signal, all=False)
        signum = self.requeue_signal if requeue else self.stop_signal
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(f"Stopping at step {trainer.global_step} on {signum.name}: saved {path}")
        if requeue:
            requeued = strategy.reduce_boolean_decision(trainer.is_global_zero and requeue_slurm_job(), all=False)
            if requeued:
                self.await_requeue_kill()
        raise Preempted(128 + int(signum))

    def await_requeue_kill(self) -> None:
        """After ``scontrol requeue``, let SLURM end this incarnation (SIGTERM, then SIGKILL) instead of exiting
        first: a batch step that exits with an error while the requeue is still being processed can leave the
        requeued job FAILED instead of pending. Waits at most ``requeue_wait`` seconds, then exits anyway."""
        signal.signal(self.stop_signal, signal.SIG_DFL)
        deadline = time.monotonic() + self.requeue_wait
        while time.monotonic() < deadline:
            time.sleep(1.0)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}

    @staticmethod
    def checkpoint_path(trainer: Trainer) -> Path | None:
        """``last.ckpt`` of the first ``ModelCheckpoint(save_last=True)``: where ``ckpt_path: last`` looks."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        return None


def signal_named(name: str) -> signal.Signals:
    """``SIGUSR1``, ``USR1`` (sbatch's spelling) or ``10`` as a signal; a clear error for anything else."""
    name = name.strip().upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {name!r}; use a name such as SIGUSR1 or SIGTERM") from None


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this job (an array job's own task); no-op outside SLURM. True if it was requeued."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if job is None:
        rank_zero_info("Not in a SLURM job: nothing to requeue; run train.py again to resume.")
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed ({done.stderr.strip()}); resubmit the job to resume")
        return False
    rank_zero_info(f"Requeued SLURM job {job}; it resumes from the checkpoint when it starts again.")
    return True
