"""Cluster jobs: the sbatch script a config gives, refusals before anything is submitted, and real SLURM jobs.

The real jobs need a SLURM cluster (``bash scripts/local_slurm.sh`` starts a one-node one on this machine, and
``.ci/run`` does so in CI). Without a cluster they are skipped, except in CI (``CI`` or ``LIT_EDIT_REQUIRE_SLURM``
set), where they fail.
Each job trains ENN on the tiny GPT-2 with two ranks, submitted with ``python train.py ... --submit`` as a
user submits, and is compared with one process accumulating the same global batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TRAIN_STEPS, assert_same_training, run_bounded, tiny_training_config

from lit_edit.cli import CONFIG_DIR, train_main
from lit_edit.editors.base import read_editor_state
from lit_edit.preemption import signal_named
from lit_edit.slurm import JOB_CONFIG, SlurmJob, resolve_shape

GPU_JOB = ["--slurm.nodes", "2", "--slurm.gpus_per_node", "4", "--slurm.time", "24:00:00",
           "--slurm.partition", "gpu", "--slurm.account", "lab", "--slurm.qos", "high",
           "--slurm.cpus_per_task", "8", "--slurm.mem", "64G"]


def submit_in_process(*args: str) -> tuple[object, str]:
    """train_main(configs/enn.yaml + args); returns (cli, stdout) — the submit path loads no model."""
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        cli = train_main(["--config", str(CONFIG_DIR / "enn.yaml"), *args])
    return cli, out.getvalue()


def test_gpu_job_script_asks_for_the_resources_and_one_rank_per_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli, printed = submit_in_process(*GPU_JOB, "--dry_run")
    run_dir = cli.submission.run_dir
    assert cli.submission.job_id is None and run_dir.parent == tmp_path / "logs" / "enn-smollm2-135m"
    lines = printed.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert [line for line in lines if line.startswith("#SBATCH")] == [
        "#SBATCH --job-name=enn-smollm2-135m",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64G",
        "#SBATCH --time=24:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={run_dir}/slurm-%j.out",
        f"#SBATCH --error={run_dir}/slurm-%j.err",
        f"#SBATCH --chdir={tmp_path}",
    ]
    assert f"exec srun {sys.executable} {REPO / 'train.py'} --config {run_dir / JOB_CONFIG}" in lines
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_job_shape_follows_the_slurm_flags_and_refuses_ranks_without_devices():
    cpu_trainer = {"accelerator": "cpu", "devices": 2, "num_nodes": 1}
    assert resolve_shape(SlurmJob(), cpu_trainer).ranks == 2  # a CPU job: one rank per trainer device
    shape = resolve_shape(SlurmJob(nodes=2, gpus_per_node=4), cpu_trainer)
    assert (shape.nodes, shape.tasks_per_node, shape.accelerator) == (2, 4, "gpu")
    with pytest.raises(ValueError, match="one rank per GPU"):
        resolve_shape(SlurmJob(gpus_per_node=2, tasks_per_node=4), cpu_trainer)
    with pytest.raises(ValueError, match="trainer.devices is 8 but the job has 4 GPUs"):
        resolve_shape(SlurmJob(gpus_per_node=4), {"accelerator": "gpu", "devices": 8})
    with pytest.raises(ValueError, match="tasks_per_node 4 does not match trainer.devices 2"):
        resolve_shape(SlurmJob(tasks_per_node=4), cpu_trainer)


def test_signals_are_read_in_sbatch_and_python_spellings():
    assert signal_named("SIGUSR1") == signal_named("usr1") == signal_named(str(int(signal.SIGUSR1))) == signal.SIGUSR1
    with pytest.raises(ValueError, match="unknown signal"):
        signal_named("USR9")


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """An ``sbatch`` first on PATH that records its arguments in the returned file and prints job id 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 4242\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_dry_run_submits_nothing_and_submit_writes_the_script_and_config(tmp_path, monkeypatch, fake_sbatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    submit_in_process("--trainer.devices", "2", "--dry_run")
    assert not fake_sbatch.exists() and not any(work.iterdir())

    cli, printed = submit_in_process("--trainer.devices", "2", "--trainer.val_check_interval", "null", "--submit")
    run_dir = cli.submission.run_dir
    assert cli.submission.job_id == "4242" and "Submitted SLURM job 4242" in printed and str(run_dir) in printed
    assert fake_sbatch.read_text().split() == ["--parsable", str(run_dir / "job.sbatch")]
    assert (run_dir / "job.sbatch").read_text() == cli.submission.script
    job_config = yaml.safe_load((run_dir / JOB_CONFIG).read_text())
    trainer = job_config["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (1, 2, "cpu")
    # Written out, not left out: train.py reads configs/mend.yaml first, whose value would come back.
    assert "val_check_interval" in trainer and trainer["val_check_interval"] is None
    assert trainer["logger"]["init_args"]["version"] == run_dir.name  # a requeued job logs into the same directory
    assert job_config["submit"] is False and job_config["ckpt_path"] == "last"
    assert job_config["model"]["class_path"] == "lit_edit.editors.ENN"


@pytest.mark.parametrize(("args", "message"), [
    (["--slurm.gpus_per_node", "2", "--slurm.tasks_per_node", "4"], "a GPU job runs one rank per GPU"),
    (["--trainer.devices", "2", "--slurm.tasks_per_node", "3"], "does not match trainer.devices 2"),
    (["--ckpt_path", "null"], "resumes only with `ckpt_path: last`"),
    (["--slurm.requeue_signal", "SIGNOPE"], "unknown signal 'SIGNOPE'"),
])
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, fake_sbatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        submit_in_process(*args, "--submit")
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not fake_sbatch.exists() and not (tmp_path / "logs").exists()


def test_no_sbatch_on_path_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(SystemExit):
        submit_in_process("--submit")
    assert "`sbatch` is not on PATH" in capsys.readouterr().err and not any(tmp_path.iterdir())


# --- real SLURM -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm() -> None:
    """A running SLURM cluster with an idle node, or skip (fail in CI)."""
    states = subprocess.run(["sinfo", "--noheader", "-o", "%t"], capture_output=True, text=True).stdout.split() \
        if shutil.which("sinfo") and shutil.which("sbatch") else []
    if not {"idle", "mix", "alloc"} & set(states):
        if os.environ.get("CI") or os.environ.get("LIT_EDIT_REQUIRE_SLURM"):
            pytest.fail("CI must run the SLURM tests: .ci/run starts a local cluster with scripts/local_slurm.sh")
        pytest.skip("no SLURM cluster here; `bash scripts/local_slurm.sh` starts a one-node one (as root)")


@pytest.mark.parametrize(("args", "message"), [
    (["--slurm.partition", "no-such-partition"], "unknown partition 'no-such-partition'; this cluster has: debug"),
    (["--slurm.cpus_per_task", "4096"], "CPUs per node (1 tasks x 4096 CPUs) but the largest node here has"),
    (["--slurm.extra", '["--nodelist=no-such-node"]'], "sbatch refused"),
])
def test_requests_the_cluster_cannot_run_are_refused_and_leave_nothing(slurm, tmp_path, monkeypatch, capsys,
                                                                       args, message):
    monkeypatch.chdir(tmp_path)
    jobs_before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    with pytest.raises(SystemExit):
        submit_in_process(*args, "--submit")
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.sbatch")) and not list(tmp_path.rglob(JOB_CONFIG))
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == jobs_before


def job_state(job_id: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    match = re.search(r"JobState=(\w+)", shown)
    return match.group(1) if match else "UNKNOWN"


def wait_for(condition, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.5)


def probe_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def job_runner(slurm, knowing_gpt2, synthetic_splits, tmp_path_factory):
    """``submit(name, *extra_args, seconds_per_batch=0)`` -> (work dir, job id) of a 2-rank tiny training job
    submitted with ``train.py --submit``; ``finish(work, job_id)`` waits and returns (record, weights)."""
    root = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}

    def submit(name: str, *extra: str, devices: int = 2, seconds_per_batch: float = 0.0) -> tuple[Path, str]:
        work = root / name
        work.mkdir()
        probe = {"class_path": "conftest.SlurmProbe",
                 "init_args": {"path": str(work / "probe.jsonl"), "seconds": seconds_per_batch}}
        config = tiny_training_config(knowing_gpt2, synthetic_splits, work, devices=devices, callbacks=[probe])
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        args = [sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml"), *extra, "--submit"]
        done = run_bounded(args, cwd=work, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return work, re.search(r"Submitted SLURM job (\d+)", done.stdout).group(1)

    def finish(work: Path, job_id: str) -> tuple[dict, dict]:
        try:
            wait_for(lambda: job_state(job_id) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
                     f"job {job_id}")
        finally:  # a job left running would hold the node, and every later test would wait behind it
            subprocess.run(["scancel", job_id], capture_output=True)
        log = "\n".join(path.read_text() for path in sorted(work.glob("logs/slurm/*/slurm-*")))
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert job_state(job_id) == "COMPLETED", f"{shown}\n{log[-4000:]}"
        return json.loads((work / "record.json").read_text()), read_editor_state(work / "ckpt" / "last.ckpt")

    return submit, finish


@pytest.fixture(scope="module")
def reference(knowing_gpt2, synthetic_splits, tmp_path_factory) -> tuple[dict, dict]:
    """One process accumulating the same global batch, trained here without SLURM."""
    work = tmp_path_factory.mktemp("reference")
    config = tiny_training_config(knowing_gpt2, synthetic_splits, work, devices=1)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    done = run_bounded([sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml")],
                       cwd=work, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "record.json").read_text()), read_editor_state(work / "ckpt" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero2"])
def test_slurm_job_on_two_ranks_trains_like_one_process(job_runner, reference, strategy):
    submit, finish = job_runner
    strategy_args = (["--trainer.strategy", "ddp"] if strategy == "ddp"
                     else ["--config", str(CONFIG_DIR / "strategies" / "zero2.yaml")])
    work, job_id = submit(f"job_{strategy}", *strategy_args)
    record, state = finish(work, job_id)
    assert_same_training(record, state, reference)
    probes = probe_lines(work / "probe.jsonl")
    assert {(p["rank"], p["world"], p["environment"], p["restart"]) for p in probes} == {
        (0, 2, "SLURMEnvironment", 0), (1, 2, "SLURMEnvironment", 0)}  # srun's two tasks, seen by Lightning


@pytest.mark.slow
@pytest.mark.parametrize("interruption", ["scontrol requeue", "time-limit signal"])
def test_requeued_job_resumes_from_its_checkpoint_without_lost_or_repeated_steps(job_runner, reference, interruption):
    submit, finish = job_runner
    work, job_id = submit(f"requeue_{interruption.split()[0]}", "--trainer.strategy", "ddp", seconds_per_batch=2.0)
    probe = work / "probe.jsonl"
    wait_for(lambda: any(p["step"] >= 2 for p in probe_lines(probe)), "the job to reach step 2")
    if interruption == "scontrol requeue":  # what an admin or a preempting job does: SIGTERM, then requeue
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    else:  # the warning `--signal=SIGUSR1@90` sends ahead of the time limit: the job requeues itself
        subprocess.run(["scancel", "--signal=SIGUSR1", job_id], check=True)
    wait_for(lambda: job_state(job_id) == "PENDING", "the job to be requeued", timeout=120)
    # SLURM holds a requeued job for two minutes before it may start again; let it start sooner, but not within
    # the second its old credential was revoked: slurmd compares whole seconds, refuses the new start ("Job
    # credential revoked") and the job ends FAILED. CI saw this once in a few runs.
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    record, state = finish(work, job_id)

    probes = probe_lines(probe)
    first = [p for p in probes if p["restart"] == 0]
    second = [p for p in probes if p["restart"] == 1]
    assert first and second and len(first) + len(second) == 2 * TRAIN_STEPS  # no batch trained twice, none lost
    assert max(p["step"] for p in first) < min(p["step"] for p in second)  # resumed where the first start stopped
    log = "\n".join(path.read_text() for path in sorted(work.glob("logs/slurm/*/slurm-*")))
    assert "Stopping at step" in log  # the checkpoint came from the signal, not from the every-2-steps one
    # The resumed job ends where the uninterrupted run ends: same step count and weights, same validation.
    assert record["global_step"] == TRAIN_STEPS
    expected, expected_state = reference
    for key, value in expected_state.items():
        assert state[key].float().allclose(value.float(), rtol=1e-5, atol=1e-6), key
    for key in ("val/es", "val/dd"):
        assert record["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-5, abs=1e-6)
