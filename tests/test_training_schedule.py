"""The trainable editors' learning-rate schedule and the skip of a step whose gradients are not finite."""

from __future__ import annotations

import math

import pytest
import torch
from test_training import tiny_trainer

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import ENN, KE, MEND
from lit_edit.editors.base import kept_score
from lit_edit.editors.schedule import schedule_factor
from lit_edit.errors import ConfigurationError


def test_schedule_factors_match_a_hand_computation():
    assert [schedule_factor(s, 4, 12, "constant") for s in (0, 1, 3, 4, 11, 50)] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert schedule_factor(4, 4, 12, "linear") == 1.0 and schedule_factor(8, 4, 12, "linear") == 0.5
    assert schedule_factor(12, 4, 12, "linear") == 0.0
    assert schedule_factor(8, 4, 12, "cosine") == pytest.approx(0.5)
    assert schedule_factor(6, 4, 12, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule_factor(0, 0, 10, "cosine") == 1.0


class StepLimit:
    """What ``scheduled`` reads of a trainer."""

    max_steps = 10
    estimated_stepping_batches = 10


@pytest.mark.parametrize("editor_class", [MEND, KE, ENN])
def test_every_group_follows_the_warmup_then_the_decay(tiny_models, editor_class):
    editor = editor_class(tiny_models["gpt2"], warmup_steps=2, lr_schedule="linear")
    editor._trainer = StepLimit()
    configured = editor.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    base = [group["initial_lr"] for group in optimizer.param_groups]
    seen = []
    for _ in range(10):
        seen.append([group["lr"] / b for group, b in zip(optimizer.param_groups, base, strict=True) if b])
        optimizer.step()
        scheduler.step()
    expected = [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    for factors, factor in zip(seen, expected, strict=True):
        assert factors == pytest.approx([factor] * len(factors))


def test_no_schedule_leaves_the_optimizer_alone(tiny_models):
    assert isinstance(MEND(tiny_models["gpt2"]).configure_optimizers(), torch.optim.Adam)


@pytest.mark.parametrize("setting, message", [(dict(warmup_steps=-1), r"MEND\.warmup_steps must be >= 0"),
                                              (dict(lr_schedule="step"), r"MEND\.lr_schedule must be one of")])
def test_bad_schedules_are_refused_at_construction(tiny_models, setting, message):
    with pytest.raises(ConfigurationError, match=message):
        MEND(tiny_models["gpt2"], **setting)


class OverflowingMEND(MEND):
    """A finite loss (0) whose gradient is not (d sqrt(x)/dx at 0 times 0: NaN) on every editor parameter."""

    def training_step(self, batch, batch_idx):
        return sum(torch.sqrt((p - p.detach()).abs().sum()) for p in self.parameters())


def test_a_step_with_non_finite_gradients_is_skipped_and_counted(tiny_models, synthetic_splits):
    spec = tiny_models["gpt2"]
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=spec, edits_per_batch=2)
    editor = OverflowingMEND(spec, rank=4)
    before = {name: p.detach().clone() for name, p in editor.named_parameters()}
    tiny_trainer(max_steps=3, limit_val_batches=0, gradient_clip_val=1.0).fit(editor, datamodule=data)
    assert editor.skipped_steps == 3
    for name, p in editor.named_parameters():
        assert torch.equal(p, before[name]), name  # nothing moved: no NaN reached a weight


def test_the_kept_score_is_the_harmonic_mean_of_generalisation_and_retention():
    t = torch.tensor
    assert kept_score(t(0.8), t(0.9), t(0.4)).item() == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    assert kept_score(t(float("nan")), t(0.9), t(0.9)).item() == pytest.approx(0.9)  # no paraphrases: ES
    assert kept_score(t(1.0), t(1.0), t(float("nan"))).item() == pytest.approx(1.0)  # no out-of-scope inputs
    assert kept_score(t(0.0), t(0.0), t(1.0)).item() == 0.0  # an editor that edits nothing scores nothing


def test_validation_logs_the_kept_score(tiny_models, synthetic_splits):
    spec = tiny_models["gpt2"]
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=spec, edits_per_batch=2)
    editor = MEND(spec, rank=4)
    trainer = tiny_trainer(max_steps=2, limit_val_batches=2, val_check_interval=2)
    trainer.fit(editor, datamodule=data)
    logged = trainer.callback_metrics
    expected = kept_score(logged["val/paraphrase_es"], logged["val/es"], logged["val/retention"])
    assert logged["val/kept_score"].item() == pytest.approx(expected.item())
