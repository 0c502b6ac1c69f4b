"""StepProfiler on a tiny training run, and the Linux peak-RSS counter it relies on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import MEND
from lit_edit.profiling import StepProfiler, peak_rss_bytes, reset_peak_rss, rss_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def fit_with_profiler(spec, splits, output: Path, max_steps: int, warmup_steps: int) -> None:
    seed_everything(0)
    data = EditDataModule(**{k: str(v) for k, v in splits.items()}, model=spec, edits_per_batch=2)
    editor = MEND(spec, rank=8)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, inference_mode=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, max_steps=max_steps,
                      callbacks=[StepProfiler(str(output), warmup_steps=warmup_steps)])
    trainer.fit(editor, datamodule=data)


def test_step_profiler_writes_peak_baseline_and_step_times(tiny_models, synthetic_splits, tmp_path):
    output = tmp_path / "profile" / "steps.json"
    fit_with_profiler(tiny_models["gpt2"], synthetic_splits, output, max_steps=4, warmup_steps=1)
    result = json.loads(output.read_text())
    assert result["device"] == "cpu" and result["world_size"] == 1
    assert result["steps_measured"] == 3 and len(result["step_seconds"]) == 3  # the warm-up step is left out
    assert all(s > 0 for s in result["step_seconds"])
    assert result["mean_step_seconds"] > 0 and result["median_step_seconds"] > 0
    assert result["baseline_bytes"] > 0 and result["peak_bytes"] >= result["baseline_bytes"]
    assert result["process_peak_before_bytes"] >= result["baseline_bytes"]


def test_step_profiler_with_nothing_measured_says_so(tiny_models, synthetic_splits, tmp_path):
    output = tmp_path / "steps.json"
    fit_with_profiler(tiny_models["gpt2"], synthetic_splits, output, max_steps=1, warmup_steps=2)
    result = json.loads(output.read_text())
    assert result["steps_measured"] == 0 and result["peak_bytes"] is None and result["mean_step_seconds"] is None


def test_peak_rss_reset_forgets_freed_memory():
    size = 256 * 2**20
    block = torch.ones(size // 4)  # written, so resident
    assert peak_rss_bytes() >= rss_bytes() >= size
    del block
    before_reset = peak_rss_bytes()
    reset_peak_rss()
    assert peak_rss_bytes() <= before_reset - size // 2  # the high-water mark came down to what is resident now
