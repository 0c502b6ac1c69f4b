"""The trainable editors' learning-rate schedule: a linear warm-up, then a constant, linear or cosine decay, stepped
once per optimizer step.

A learning rate high enough to train an editor on a CPU budget made long runs diverge (MEND on zsRE, step 700 of
``docs/BENCHMARKS.md`` §2); a warm-up keeps the first steps, taken on unnormalised gradients, small, and a decay
lets a long run settle instead of wandering. With ``warmup_steps: 0`` and ``lr_schedule: constant`` (the default)
the optimizer runs as it is, as before.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from lightning.pytorch import Trainer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.settings import require_at_least

LrSchedule = Literal["constant", "linear", "cosine"]
SCHEDULES = ("constant", "linear", "cosine")


def check_schedule(owner: str, warmup_steps: int, lr_schedule: str) -> None:
    """Refuse a negative warm-up or an unknown schedule, naming the setting."""
    require_at_least(owner, "warmup_steps", warmup_steps, 0)
    if lr_schedule not in SCHEDULES:
        raise ConfigurationError(f"{owner}.lr_schedule must be one of {', '.join(SCHEDULES)}, got {lr_schedule!r} "
                                 "(init_args.lr_schedule)")


def schedule_factor(step: int, warmup_steps: int, total_steps: int, lr_schedule: str) -> float:
    """The learning rate's multiplier at optimizer step ``step`` (0-based): ``(step + 1) / warmup_steps`` during the
    warm-up, then 1 (constant) or falling to 0 at ``total_steps`` linearly or along half a cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if lr_schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if lr_schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduled(optimizer: Optimizer, trainer: Trainer | None, warmup_steps: int, lr_schedule: str) -> Any:
    """What ``configure_optimizers`` returns: the optimizer alone, or with its per-step schedule. A decay ends at
    ``trainer.max_steps`` (or the steps Lightning estimates for the run when there is no step limit)."""
    if warmup_steps == 0 and lr_schedule == "constant":
        return optimizer
    total = 0
    if trainer is not None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
    if lr_schedule != "constant" and not math.isfinite(total):
        raise ConfigurationError(f"lr_schedule {lr_schedule!r} decays until the run's last step: set trainer.max_steps")
    total = int(total)
    scheduler = LambdaLR(optimizer, lambda step: schedule_factor(step, warmup_steps, total, lr_schedule))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
