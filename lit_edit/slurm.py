"""Submit ``train.py`` to a SLURM cluster from the same YAML that runs locally.

``python train.py --config configs/enn.yaml --slurm.nodes 2 --slurm.gpus_per_node 4 --submit`` resolves the
whole configuration, writes it with a readable sbatch script into the run's log directory, and submits the
script with ``sbatch``. The job starts one task per device with ``srun``; Lightning reads the ``SLURM_*``
variables, and the job is requeued and resumes from ``last.ckpt`` when SLURM preempts it or its time runs out
(:mod:`lit_edit.preemption`). ``--dry_run`` prints the script and writes and submits nothing.

Everything that can be wrong with a request (no ``sbatch``, an unknown partition, more tasks than devices, a
config that could not resume) is refused here, before a file is written or a job submitted.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lit_edit.errors import UserInputError
from lit_edit.preemption import signal_named

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
JOB_CONFIG = "job_config.yaml"
JOB_SCRIPT = "job.sbatch"


class SlurmError(UserInputError, ValueError):
    """A SLURM request that cannot be submitted as asked; nothing was written or submitted."""


@dataclass
class SlurmJob:
    """The cluster job that runs this training config (``--slurm.*`` on ``train.py``)."""

    nodes: int | None = None
    """Nodes to train on; default: ``trainer.num_nodes``."""
    gpus_per_node: int = 0
    """GPUs per node, one rank each (``--gres=gpu:N``); 0 makes a CPU job."""
    tasks_per_node: int | None = None
    """Ranks per node; default: ``gpus_per_node``, or ``trainer.devices`` for a CPU job."""
    gpu_type: str | None = None
    """GPU type for the gres request (``--gres=gpu:TYPE:N``), e.g. ``a100``."""
    cpus_per_task: int | None = None
    """CPUs per rank (``--cpus-per-task``); default: the cluster's."""
    mem: str | None = None
    """Memory per node (``--mem``), e.g. ``64G``; default: the cluster's."""
    time: str | None = None
    """Time limit (``--time``), e.g. ``24:00:00``; default: the partition's."""
    partition: str | None = None
    """Partition (``--partition``); default: the cluster's default partition."""
    account: str | None = None
    """Account to charge (``--account``)."""
    qos: str | None = None
    """Quality of service (``--qos``)."""
    job_name: str | None = None
    """Job name; default: the logger's run name."""
    requeue_signal: str = "SIGUSR1"
    """Signal SLURM sends ahead of the time limit; the job then checkpoints and requeues itself."""
    signal_seconds: int = 90
    """How many seconds before the time limit that signal comes (``--signal=SIG@N``)."""
    requeue: bool = True
    """Requeue on preemption or time-out and resume from ``last.ckpt`` (``--requeue``)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before ``srun`` on the first node, e.g. ``module load cuda`` or ``source .venv/bin/activate``."""
    python: str | None = None
    """Python that runs ``train.py`` in the job; default: the one submitting it."""
    run_dir: str | None = None
    """Where the script, the resolved config and the job's output go; default: the logger's version directory."""
    extra: list[str] = field(default_factory=list)
    """Further sbatch options, verbatim, e.g. ``--constraint=h100`` or ``--exclusive``."""


@dataclass(frozen=True)
class JobShape:
    """How many ranks the job has, and the trainer settings that make Lightning use exactly those."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int

    @property
    def ranks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def accelerator(self) -> str:
        return "gpu" if self.gpus_per_node else "cpu"


def resolve_shape(job: SlurmJob, trainer: dict[str, Any]) -> JobShape:
    """The job's shape from ``--slurm.*`` and the trainer config; refuses tasks that have no device to run on."""
    nodes = job.nodes if job.nodes is not None else int(trainer.get("num_nodes") or 1)
    if nodes < 1:
        raise SlurmError(f"--slurm.nodes must be at least 1, got {nodes}")
    try:
        signal_named(job.requeue_signal)
    except ValueError as error:
        raise SlurmError(f"--slurm.requeue_signal: {error}") from None
    if job.gpus_per_node < 0:
        raise SlurmError(f"--slurm.gpus_per_node must be 0 (a CPU job) or more, got {job.gpus_per_node}")
    explicit = device_count(trainer.get("devices", "auto"))
    if job.gpus_per_node:
        accelerator = str(trainer.get("accelerator") or "auto")
        tasks = job.tasks_per_node if job.tasks_per_node is not None else job.gpus_per_node
        if tasks != job.gpus_per_node:
            raise SlurmError(f"--slurm.tasks_per_node {tasks} does not match --slurm.gpus_per_node "
                             f"{job.gpus_per_node}: a GPU job runs one rank per GPU")
        if accelerator not in ("cpu", "auto") and explicit is not None and explicit != tasks:
            raise SlurmError(f"trainer.devices is {explicit} but the job has {tasks} GPUs per node; set "
                             f"--trainer.devices {tasks} or --slurm.gpus_per_node {explicit}")
    else:
        tasks = job.tasks_per_node if job.tasks_per_node is not None else (explicit or 1)
        if explicit is not None and explicit != tasks:
            raise SlurmError(f"--slurm.tasks_per_node {tasks} does not match trainer.devices {explicit}: a CPU job "
                             "runs one rank per trainer device; set both to the same number")
    if tasks < 1:
        raise SlurmError(f"a job needs at least one task per node, got {tasks}")
    return JobShape(nodes=nodes, tasks_per_node=tasks, gpus_per_node=job.gpus_per_node)


def device_count(devices: Any) -> int | None:
    """How many devices per node ``trainer.devices`` names (``2``, ``"2"``, ``[0, 1]``, ``"0,1"``); None for
    ``"auto"`` and ``-1``, which leave the number to the job."""
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([part for part in devices.split(",") if part.strip()])
        devices = int(devices) if devices.lstrip("-").isdigit() else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    return devices if isinstance(devices, int) and devices > 0 else None


def sbatch_script(job: SlurmJob, shape: JobShape, *, name: str, run_dir: Path, workdir: Path,
                  command: list[str]) -> str:
    """The sbatch script: resources as ``#SBATCH`` lines, then ``srun`` with one task per device."""
    options = [f"--job-name={name}", f"--nodes={shape.nodes}", f"--ntasks-per-node={shape.tasks_per_node}"]
    if shape.gpus_per_node:
        gres = ":".join(["gpu", *([job.gpu_type] if job.gpu_type else []), str(shape.gpus_per_node)])
        options.append(f"--gres={gres}")
    for flag, value in (("cpus-per-task", job.cpus_per_task), ("mem", job.mem), ("time", job.time),
                        ("partition", job.partition), ("account", job.account), ("qos", job.qos)):
        if value is not None:
            options.append(f"--{flag}={value}")
    if job.requeue:
        # The signal goes to the ranks (not the batch shell), which checkpoint and requeue the job.
        options += [f"--signal={job.requeue_signal}@{job.signal_seconds}", "--requeue"]
    options += ["--open-mode=append",  # a requeued job appends to its log instead of overwriting it
                f"--output={run_dir / 'slurm-%j.out'}", f"--error={run_dir / 'slurm-%j.err'}",
                f"--chdir={workdir}", *job.extra]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "#!/bin/bash",
        f"# lit_edit training job, written by train.py --submit on {stamp}.",
        f"# {shape.ranks} rank(s): {shape.nodes} node(s) x {shape.tasks_per_node} task(s), one per "
        f"{'GPU' if shape.gpus_per_node else 'CPU process'}. Submit again with: sbatch {run_dir / JOB_SCRIPT}",
        *(f"#SBATCH {option}" for option in options),
        "",
        "set -euo pipefail",
        *job.setup,
        'echo "job ${SLURM_JOB_ID}, restart ${SLURM_RESTART_COUNT:-0}, on ${SLURM_JOB_NODELIST}: '
        '${SLURM_NTASKS} ranks"',
        "exec srun " + shlex.join(command),
        "",
    ]
    return "\n".join(lines)


def check_cluster(job: SlurmJob, shape: JobShape) -> None:
    """Refuse what the cluster cannot run: no ``sbatch``, an unknown partition, nodes without enough CPUs."""
    if shutil.which("sbatch") is None:
        raise SlurmError("`sbatch` is not on PATH: submit from a SLURM login node, or use --dry_run to only "
                         "print the job script")
    partitions = _sinfo("%R")
    if job.partition is not None and partitions and job.partition not in partitions:
        raise SlurmError(f"unknown partition {job.partition!r}; this cluster has: {', '.join(sorted(set(partitions)))}")
    cpus = [int(value) for value in _sinfo("%c", job.partition) if value.isdigit()]
    wanted = shape.tasks_per_node * (job.cpus_per_task or 1)
    if cpus and wanted > max(cpus):
        raise SlurmError(f"the job asks for {wanted} CPUs per node ({shape.tasks_per_node} tasks x "
                         f"{job.cpus_per_task or 1} CPUs) but the largest node here has {max(cpus)}")


def _sinfo(fields: str, partition: str | None = None) -> list[str]:
    """One line per node or partition from ``sinfo``; empty when ``sinfo`` is missing or fails."""
    if shutil.which("sinfo") is None:
        return []
    args = ["sinfo", "--noheader", "-o", fields, *(["--partition", partition] if partition else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return done.stdout.split() if done.returncode == 0 else []


def sbatch(script: Path) -> str:
    """Submit ``script``; returns the job id."""
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SlurmError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    job_id = done.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise SlurmError(f"sbatch printed no job id for {script}: {done.stdout!r}")
    return job_id


@dataclass(frozen=True)
class Submission:
    """What was (or, for a dry run, would be) submitted."""

    script: str
    run_dir: Path
    job_id: str | None


def submit_training(job: SlurmJob, config: dict[str, Any], dump: Callable[[dict[str, Any]], str], *,
                    dry_run: bool = False, workdir: Path | None = None) -> Submission:
    """Resolve ``config`` (train.py's parsed configuration, as a dict) into a job and submit it.

    ``dump`` turns the adjusted configuration into YAML (train.py's parser). It must write nulls too:
    ``train.py`` reads ``configs/mend.yaml`` first, whose values would otherwise come back. The job's trainer
    gets ``num_nodes``, ``devices`` and ``accelerator`` from the job's shape, and a TensorBoard logger gets a
    fixed version, so a requeued job writes into the same run directory as its first start.
    """
    workdir = (workdir or Path.cwd()).resolve()
    trainer = config.setdefault("trainer", {})
    shape = resolve_shape(job, trainer)
    _check_resumable(job, config)
    if not dry_run:
        check_cluster(job, shape)

    name, run_dir = _run_location(job, trainer, workdir)
    trainer.update(num_nodes=shape.nodes, devices=shape.tasks_per_node, accelerator=shape.accelerator)
    config_path = run_dir / JOB_CONFIG
    python = job.python or sys.executable
    script = sbatch_script(job, shape, name=name, run_dir=run_dir, workdir=workdir,
                           command=[python, str(TRAIN_SCRIPT), "--config", str(config_path)])
    if dry_run:
        return Submission(script=script, run_dir=run_dir, job_id=None)
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    header = f"# train.py's configuration for the SLURM job in {run_dir}, resolved by train.py --submit\n"
    config_path.write_text(header + dump(config))
    script_path = run_dir / JOB_SCRIPT
    script_path.write_text(script)
    try:
        job_id = sbatch(script_path)
    except SlurmError:  # sbatch itself refused: leave nothing behind that looks like a submitted run
        config_path.unlink()
        script_path.unlink()
        if not existed:
            run_dir.rmdir()
        raise
    return Submission(script=script, run_dir=run_dir, job_id=job_id)


def _check_resumable(job: SlurmJob, config: dict[str, Any]) -> None:
    """A requeued job must find its last checkpoint again, or it would start over."""
    if not job.requeue:
        return
    if config.get("ckpt_path") != "last":
        raise SlurmError(f"ckpt_path is {config.get('ckpt_path')!r}: a requeued job resumes only with "
                         "`ckpt_path: last`; set it, or pass --slurm.requeue false")
    callbacks = config.get("trainer", {}).get("callbacks") or []
    if not any(_is_last_checkpoint(callback) for callback in callbacks):
        raise SlurmError("no ModelCheckpoint with `save_last: true` among trainer.callbacks: a requeued job "
                         "would have no last.ckpt to resume from; add one, or pass --slurm.requeue false")


def _is_last_checkpoint(callback: Any) -> bool:
    if not isinstance(callback, dict):  # an instantiated callback
        return bool(getattr(callback, "save_last", False))
    return (str(callback.get("class_path", "")).endswith("ModelCheckpoint")
            and bool((callback.get("init_args") or {}).get("save_last")))


def _run_location(job: SlurmJob, trainer: dict[str, Any], workdir: Path) -> tuple[str, Path]:
    """The job's name and run directory; pins the TensorBoard logger's version to that directory."""
    stamp = datetime.now(timezone.utc).strftime("slurm-%Y%m%d-%H%M%S")
    logger = trainer.get("logger")
    logger_args = logger.get("init_args") if isinstance(logger, dict) else None
    if isinstance(logger_args, dict) and "save_dir" in logger_args:
        name = str(logger_args.get("name") or "lightning_logs")
        if logger_args.get("version") is None:
            logger_args["version"] = stamp
        default_dir = Path(logger_args["save_dir"]) / name / str(logger_args["version"])
    else:
        name, default_dir = "lit-edit", Path("logs") / "slurm" / stamp
        if job.run_dir is None and trainer.get("default_root_dir"):
            default_dir = Path(trainer["default_root_dir"]) / stamp
    run_dir = Path(job.run_dir) if job.run_dir is not None else default_dir
    return job.job_name or name, (workdir / run_dir).resolve()
