"""Progress lines for a training run whose output is not a terminal (SLURM, ``> log``), and what a run stopped by
``max_time`` leaves behind: a final validation and a ``last.ckpt`` that resumes where it stopped."""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
import time
from pathlib import Path

import pytest
from conftest import RecordTrainBatches
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_edit.callbacks import ProgressLines, StepTimer, clock_time
from lit_edit.cli import train_main
from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import MEND
from lit_edit.safe_files import load_tensors_file

NUMBER = r"-?\d[\d.e+-]*"


class Sleep(Callback):
    """Each training batch takes ``seconds`` longer, so that a one-second ``max_time`` runs out after a few steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def fit(spec, splits, *callbacks: Callback, ckpt_path: Path | None = None, **kwargs) -> Trainer:
    """MEND on the tiny GPT-2, two edits per batch, validating on two edits."""
    data = EditDataModule(train=str(splits["train"]), val=str(splits["val"]), model=spec, edits_per_batch=2,
                          limit_val=2)
    defaults = dict(accelerator="cpu", devices=1, logger=False, inference_mode=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False,
                    check_val_every_n_epoch=None, val_check_interval=100)
    trainer = Trainer(**{**defaults, **kwargs}, callbacks=list(callbacks))
    trainer.fit(MEND(spec, rank=4), datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_lines_name_the_step_the_losses_and_the_validation_scores(tiny_models, synthetic_splits, capsys):
    lines = ProgressLines(every_n_steps=2, every_seconds=None)
    fit(tiny_models["gpt2"], synthetic_splits, lines, max_steps=6, val_check_interval=3)
    out = capsys.readouterr().out  # captured: not a terminal
    assert "training from step 0 to 6; a line every 2 steps and after each validation" in out
    for step in (2, 4, 6):
        assert re.search(rf"^step {step}/6  elapsed \d\d:\d\d:\d\d  train/loss {NUMBER}  train/edit_loss {NUMBER}  "
                         rf"train/loc_loss {NUMBER}  train/es {NUMBER}$", out, re.MULTILINE), out
    assert not re.search(r"^step [135]/", out, re.MULTILINE), out
    for step in (3, 6):
        assert re.search(rf"^validation at step {step}: val/es {NUMBER}  val/paraphrase_es {NUMBER}  "
                         rf"val/retention {NUMBER}  val/score {NUMBER}$", out, re.MULTILINE), out
    assert "time limit" not in out


def test_lines_come_at_a_steady_interval_of_seconds(tiny_models, synthetic_splits, capsys):
    lines = ProgressLines(every_seconds=10)
    ticks = itertools.count(0, 4)  # a clock that moves 4 s per reading: one at the start, one per step
    lines.clock = lambda: next(ticks)
    fit(tiny_models["gpt2"], synthetic_splits, lines, max_steps=6)
    printed = re.findall(r"^step (\d+)/6  elapsed (\S+)", capsys.readouterr().out, re.MULTILINE)
    assert printed == [("3", "00:00:12"), ("6", "00:00:24")]


def test_a_terminal_gets_no_lines_unless_asked(tiny_models, synthetic_splits, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    fit(tiny_models["gpt2"], synthetic_splits, ProgressLines(every_n_steps=1), ProgressLines(every_n_steps=1,
                                                                                             enabled=True), max_steps=2)
    printed = terminal.getvalue()
    assert printed.count("step 1/2") == 1 and printed.count("step 2/2") == 1, printed  # the second one only


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_a_time_limit_stops_at_a_step_with_a_final_validation_and_last_ckpt_that_resumes_there(
        tiny_models, synthetic_splits, tmp_path, capsys):
    spec, record = tiny_models["gpt2"], tmp_path / "batches.jsonl"

    def run(seconds: float, max_steps: int, ckpt_path: Path | None = None) -> Trainer:
        checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1000, save_top_k=0, save_last=True)
        return fit(spec, synthetic_splits, Sleep(0.15), RecordTrainBatches(str(record)), checkpoints,
                   StepTimer(duration={"seconds": seconds}), ProgressLines(), ckpt_path=ckpt_path,
                   enable_checkpointing=True, accumulate_grad_batches=2, max_steps=max_steps)

    stopped = run(1.0, max_steps=50).global_step
    out = capsys.readouterr().out
    assert 0 < stopped < 50
    assert f"time limit 00:00:01 reached at step {stopped}: final validation and last.ckpt written" in out, out
    assert f"validation at step {stopped}: val/es" in out  # Lightning validates once more after the Timer stops it
    last = tmp_path / "last.ckpt"
    assert load_tensors_file(last)["global_step"] == stopped  # not left at an earlier save (here: none)
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(seen) == 2 * stopped  # stopped at an optimizer step, not between its two batches
    # The same command again: its restored clock has run out, so nothing is trained (or repeated).
    assert run(1.0, max_steps=50, ckpt_path=last).global_step == stopped
    assert f"time limit 00:00:01 already reached at step {stopped}" in capsys.readouterr().out
    assert len(record.read_text().splitlines()) == 2 * stopped
    # With more time it goes on with the batches an uninterrupted run would have trained on next.
    assert run(60.0, max_steps=stopped + 2, ckpt_path=last).global_step == stopped + 2
    loader = EditDataModule(train=str(synthetic_splits["train"]), model=spec, edits_per_batch=2).train_dataloader()
    uninterrupted = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        uninterrupted += [[record.case_id for record in batch.records] for batch in loader]
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert seen == uninterrupted[:2 * (stopped + 2)]


def test_train_py_prints_lines_and_no_progress_bar_when_not_a_terminal(tiny_models, synthetic_splits, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tiny_models["llama"]
    cli = train_main([f"--model.init_args.model.name={spec.name}",
                      f"--model.init_args.model.editable={json.dumps(spec.editable)}", "--model.init_args.rank=8",
                      f"--data.train={synthetic_splits['train']}", f"--data.val={synthetic_splits['val']}",
                      f"--data.test={synthetic_splits['test']}", "--trainer.fast_dev_run=2"])
    callbacks = cli.trainer.callbacks
    assert cli.trainer.progress_bar_callback is None  # Lightning's bar would draw one wrapped frame into the log
    assert isinstance(callbacks[-1], ProgressLines)  # after the ModelCheckpoints: its last.ckpt has their state
    assert any(isinstance(callback, StepTimer) for callback in callbacks)  # configs/mend.yaml's max_time
    assert "training from step 0" in capsys.readouterr().out


def test_clock_time_is_hours_minutes_seconds():
    assert clock_time(720) == "00:12:00" and clock_time(4 * 3600 + 59.6) == "04:01:00" and clock_time(0) == "00:00:00"


def test_bad_intervals_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="every_seconds must be > 0"):
        ProgressLines(every_seconds=0)
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        ProgressLines(every_n_steps=0)


class CountValidations(Callback):
    def __init__(self) -> None:
        self.at_steps: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.at_steps.append(trainer.global_step)


@pytest.mark.parametrize("with_callback", [False, True])
def test_training_that_ends_between_validation_batches_validates_its_last_step(tiny_models, synthetic_splits,
                                                                               with_callback):
    """7 batches per epoch, 3 accumulated per step: step 5 ends on no multiple of val_check_interval=6 batches."""
    from lit_edit.callbacks import ValidateAtLastStep

    spec = tiny_models["gpt2"]
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=spec, edits_per_batch=4,
                          limit_val=2)
    counter = CountValidations()
    callbacks = [counter, *([ValidateAtLastStep()] if with_callback else [])]
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, inference_mode=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, max_steps=5,
                      accumulate_grad_batches=3, val_check_interval=6, check_val_every_n_epoch=None,
                      callbacks=callbacks)
    trainer.fit(MEND(spec, rank=4), datamodule=data)
    assert trainer.global_step == 5
    assert (counter.at_steps[-1] == 5) is with_callback  # Lightning alone ends without validating step 5
