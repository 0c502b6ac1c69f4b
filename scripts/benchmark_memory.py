"""Peak memory and step time of one editor training step, per strategy, as ratios to the plain run.

    python scripts/benchmark_memory.py                       # ENN and MEND on SmolLM2-135M, every variant
    python scripts/benchmark_memory.py --editors enn --variants plain checkpointing --steps 6

Each variant is a fresh ``train.py`` process (a process's peak memory cannot be un-seen, and DeepSpeed
initialises once per process) with :class:`lit_edit.profiling.StepProfiler`: the first step is a warm-up,
the rest are measured. Memory is the process RSS on the CPU and ``torch.cuda.max_memory_allocated`` on CUDA;
"step memory" is the peak minus what was resident when the measured steps began (model, editor, optimizer).
Ratios, not seconds, because these machines are noisy. Results go to ``--output`` as JSON, with the command
line; a variant that fails is recorded with the tail of its output and the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20

#: variant -> (strategy config or None, gradient checkpointing)
VARIANTS: dict[str, tuple[str | None, bool]] = {
    "plain": (None, False),
    "checkpointing": (None, True),
    "zero2": ("zero2", False),
    "zero3": ("zero3", False),
    "zero3_offload": ("zero3_offload", False),
    "checkpointing+zero2": ("zero2", True),
    "checkpointing+zero3": ("zero3", True),
    "checkpointing+zero3_offload": ("zero3_offload", True),
}
EDITORS = ("enn", "mend")
TARGET_MEMORY = 0.5  # the target: checkpointing plus ZeRO at most 0.5x plain peak memory ...
TARGET_TIME = 1.5  # ... at no more than 1.5x its step time


def train_command(editor: str, variant: str, steps: int, profile: Path, accelerator: str,
                  extra: list[str] = ()) -> list[str]:
    strategy, checkpointing = VARIANTS[variant]
    profiler = {"class_path": "lit_edit.profiling.StepProfiler", "init_args": {"output": str(profile),
                                                                               "warmup_steps": 1}}
    command = [sys.executable, "train.py", "--config", f"configs/{editor}.yaml"]
    if strategy:
        command += ["--config", f"configs/strategies/{strategy}.yaml"]
    return command + [
        "--model.init_args.gradient_checkpointing", str(checkpointing).lower(),
        "--trainer.accelerator", accelerator,
        "--trainer.max_steps", str(steps), "--trainer.max_time", "null",
        "--trainer.limit_val_batches", "0", "--ckpt_path", "null",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.callbacks", json.dumps([profiler]),
        *extra,
    ]


def run_variant(editor: str, variant: str, steps: int, accelerator: str, timeout: float,
                threads: int | None, extra: list[str] = ()) -> dict[str, Any]:
    """One fresh train.py process; its profile, or the error and the tail of its output."""
    env = dict(os.environ)
    if threads:  # torch's intra-op pool; a pool wider than the free cores spins and can slow steps tenfold
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile.json"
        command = train_command(editor, variant, steps, profile, accelerator, extra)
        # load average before the run: these seconds are only comparable when nothing else shared the cores
        record: dict[str, Any] = {"command": shlex.join(command), "loadavg_before": os.getloadavg()[0]}
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                  env=env)
            output, returncode = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            output = "".join(s.decode(errors="replace") if isinstance(s, bytes) else (s or "")
                             for s in (expired.stdout, expired.stderr))
            returncode = None
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        record["returncode"] = returncode
        if returncode == 0 and profile.exists():
            record["profile"] = json.loads(profile.read_text())
            if record["profile"]["steps_measured"] == 0:
                record["error"] = "no step measured (fewer steps than warm-up + 1?)"
        else:
            record["error"] = "timed out" if returncode is None else f"exit status {returncode}, no profile written"
        if "error" in record:
            record["output_tail"] = output[-4000:]
        return record


def measured(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None or "error" in record else record["profile"]


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}×" if value is not None and reference else "–"


def table(editor: str, records: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of one editor's variants, ratios to ``plain``, and the verdict on the target."""
    plain = measured(records.get("plain"))
    ref_peak = plain["peak_bytes"] if plain else None
    ref_step = plain["peak_bytes"] - plain["baseline_bytes"] if plain else None
    ref_time = plain["median_step_seconds"] if plain else None
    first = next((p for p in map(measured, records.values()) if p), None)
    memory = "peak CUDA MiB" if first and first["device"] == "cuda" else "peak RSS MiB"
    lines = [f"{editor.upper()}:", "",
             f"| variant | {memory} | ×plain | step memory MiB | ×plain | step s (median) | ×plain |",
             "|---|---|---|---|---|---|---|"]
    verdicts: list[tuple[str, float, float, float]] = []
    for variant, record in records.items():
        profile = measured(record)
        if profile is None:
            lines.append(f"| {variant} | failed: {record['error']} | | | | | |")
            continue
        peak, step = profile["peak_bytes"], profile["peak_bytes"] - profile["baseline_bytes"]
        seconds = profile["median_step_seconds"]
        lines.append(f"| {variant} | {peak / MIB:.0f} | {ratio(peak, ref_peak)} | {step / MIB:.0f} | "
                     f"{ratio(step, ref_step)} | {seconds:.2f} | {ratio(seconds, ref_time)} |")
        if variant.startswith("checkpointing+zero") and ref_peak and ref_step and ref_time:
            verdicts.append((variant, peak / ref_peak, step / ref_step, seconds / ref_time))
    lines.append("")
    if not verdicts:
        lines.append("Target: not judged (no plain run or no checkpointing+ZeRO run succeeded).")
        return lines
    for label, index in (("peak", 1), ("step memory", 2)):
        best = min(verdicts, key=lambda v: v[index])
        met = [v[0] for v in verdicts if v[index] <= TARGET_MEMORY and v[3] <= TARGET_TIME]
        lines.append(f"Target on {label} (a checkpointing+ZeRO variant at ≤{TARGET_MEMORY}× plain and "
                     f"≤{TARGET_TIME}× its step time): {'MET by ' + ', '.join(met) if met else 'not met'}; "
                     f"lowest: {best[0]} at {best[index]:.2f}× memory, {best[3]:.2f}× time.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--editors", nargs="+", choices=EDITORS, default=list(EDITORS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=4, help="training steps per run: 1 warm-up, the rest measured")
    parser.add_argument("--accelerator", default="auto", help="trainer accelerator (auto: CUDA when there is one)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed to one variant's process")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for each run (default: torch's own choice, one per core)")
    parser.add_argument("--output", type=Path, default=Path("results/benchmark_memory.json"))
    parser.add_argument("--train-args", default="", help="more train.py arguments for every run, one string, e.g. "
                        "\"--model.init_args.model.editable '[model.layers.*.mlp.down_proj.weight]'\"")
    args = parser.parse_args()
    # On SIGTERM (kill, nohup'd runs) exit through Python, so that subprocess.run kills the train.py it waits on.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.steps < 2:
        parser.error("--steps must be at least 2 (one warm-up step and one measured)")
    variants = ["plain", *(v for v in args.variants if v != "plain")]  # ratios need the plain run
    report: dict[str, Any] = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "steps": args.steps,
                              "warmup_steps": 1, "threads": args.threads,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "editors": {}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for editor in args.editors:
        records: dict[str, dict[str, Any]] = report["editors"].setdefault(editor, {})
        for variant in variants:
            print(f"{editor} / {variant} ...", file=sys.stderr, flush=True)
            records[variant] = run_variant(editor, variant, args.steps, args.accelerator, args.timeout,
                                          args.threads, shlex.split(args.train_args))
            if "error" in records[variant]:
                print(f"  failed: {records[variant]['error']}\n{records[variant]['output_tail'][-1500:]}",
                      file=sys.stderr, flush=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive an interruption
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for editor, records in report["editors"].items():
        print("\n".join(table(editor, records)) + "\n")
    times = [r["wall_seconds"] for rs in report["editors"].values() for r in rs.values()]
    print(f"{len(times)} runs, {sum(times):.0f} s of wall time in all (median {statistics.median(times):.0f} s); "
          f"JSON: {args.output}")


if __name__ == "__main__":
    main()
