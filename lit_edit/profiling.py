"""Peak memory and step time of training steps, measured from inside a Lightning run.

Memory is what the device holds: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only, the caching
allocator's reserve excluded), on the CPU the process's resident set (Linux ``VmHWM``/``VmRSS``), because on
the CPU there is no tensor-level counter and the resident set is what runs a machine out of memory.

Used by ``scripts/benchmark_memory.py``, by class path::

    --trainer.callbacks '[{"class_path": "lit_edit.profiling.StepProfiler", "init_args": {"output": "p.json"}}]'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronized_clock() -> float:
    """perf_counter after the GPU's queued work is done (a CUDA call returns before its kernels finish), so the
    difference of two readings times the work between them on any device."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{field} not in {_STATUS}")
    return int(match.group(1))


def rss_bytes() -> int:
    """Resident set size of this process now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Highest resident set size since the process started or since :func:`reset_peak_rss`."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Set the resident-set high-water mark to the current resident set (Linux >= 4.0: ``5 > clear_refs``)."""
    _CLEAR_REFS.write_text("5")


def release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that memory freed by earlier steps but
    kept by the allocator does not sit in the baseline and hide what the measured steps need. No-op elsewhere."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class StepProfiler(Callback):
    """Times training steps and records peak memory over them; writes JSON at the end of training (rank 0).

    The first ``warmup_steps`` steps are not measured (lazy allocations, DeepSpeed buffers, one-off compiles).
    At the start of the first measured step the peak counter is reset and the baseline (memory in use then:
    model, editor, optimizer state) recorded; the peak is over every measured step, so *peak - baseline* is
    the memory a step itself needs. A step is ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
    backward, optimizer step); run without validation, or validation in between is counted too.
    """

    def __init__(self, output: str, warmup_steps: int = 1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.output = Path(output)
        self.warmup_steps = warmup_steps
        self._steps_seen = 0
        self._started: float | None = None
        self._baseline: int | None = None
        self._process_peak: int | None = None
        self.step_seconds: list[float] = []

    @staticmethod
    def _cuda(pl_module: LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._steps_seen < self.warmup_steps:
            return
        if self._baseline is None:
            self._start_measuring(pl_module)
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps_seen += 1
        if self._started is None:
            return
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
        self.step_seconds.append(time.perf_counter() - self._started)
        self._started = None

    def _start_measuring(self, pl_module: LightningModule) -> None:
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
            self._process_peak = torch.cuda.max_memory_allocated(pl_module.device)
            torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._baseline = torch.cuda.memory_allocated(pl_module.device)
        else:
            self._process_peak = peak_rss_bytes()
            release_free_heap()
            self._baseline = rss_bytes()
            reset_peak_rss()

    def _peak(self, pl_module: LightningModule) -> int:
        if self._cuda(pl_module):
            return torch.cuda.max_memory_allocated(pl_module.device)
        return peak_rss_bytes()

    def result(self, pl_module: LightningModule) -> dict[str, Any]:
        """This rank's figures (peak and baseline are ``None`` when no step was measured)."""
        measured = bool(self.step_seconds)
        device = pl_module.device
        return {
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process RSS (VmHWM/VmRSS)",
            "peak_bytes": self._peak(pl_module) if measured else None,
            "baseline_bytes": self._baseline if measured else None,
            "process_peak_before_bytes": self._process_peak,
            "warmup_steps": self.warmup_steps,
            "steps_measured": len(self.step_seconds),
            "step_seconds": self.step_seconds,
            "mean_step_seconds": statistics.fmean(self.step_seconds) if measured else None,
            "median_step_seconds": statistics.median(self.step_seconds) if measured else None,
        }

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        result = self.result(pl_module)
        if trainer.world_size > 1:  # each rank holds its own shard: report every rank's peak, not only rank 0's
            mine = torch.tensor([result["peak_bytes"] or -1, result["baseline_bytes"] or -1], dtype=torch.float64,
                                device=pl_module.device)
            ranks = pl_module.all_gather(mine).reshape(-1, 2).tolist()
            result["peak_bytes_per_rank"] = [int(p) if p >= 0 else None for p, _ in ranks]
            result["baseline_bytes_per_rank"] = [int(b) if b >= 0 else None for _, b in ranks]
        result["world_size"] = trainer.world_size
        if trainer.is_global_zero:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.output.write_text(json.dumps(result, indent=2) + "\n")


def record_row(row: dict, output: str | Path) -> None:
    """A benchmark's figures, printed and appended as one JSON line to ``output`` (kept with the command)."""
    print(json.dumps(row), flush=True)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a") as log:
        log.write(json.dumps(row) + "\n")
