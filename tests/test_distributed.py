"""DeepSpeed ZeRO (on the CPU, for real) and two-process training give the single-process results.

Each run is ``python train.py`` in a subprocess (as a user runs it; Lightning starts the second rank itself),
training ENN on a tiny GPT-2 for four optimizer steps of two batches of two edits each, then validating.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TRAIN_STEPS, assert_same_training, run_bounded, tiny_training_config
from lightning.pytorch import Trainer

from lit_edit.cli import CONFIG_DIR
from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import MEND
from lit_edit.editors.base import read_editor_state
from lit_edit.safe_files import load_tensors_file
from lit_edit.strategies import DeepSpeedStrategy, ZeroStageError

STEPS = TRAIN_STEPS


@pytest.fixture(scope="module")
def run_training(knowing_gpt2, synthetic_splits, tmp_path_factory):
    """``run(name, *strategy_configs, devices=1, extra=[], editor="enn")`` -> (record, checkpoint path) of one
    train.py run of configs/{editor}.yaml on the tiny model."""
    root = tmp_path_factory.mktemp("distributed")

    def run(name: str, *strategies: str, devices: int = 1, extra: list[str] = (), editor: str = "enn") -> tuple[dict, Path]:
        work = root / name
        work.mkdir(exist_ok=True)
        config = tiny_training_config(knowing_gpt2, synthetic_splits, work, devices=devices, editor=editor)
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        args = [sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml")]
        for strategy in strategies:
            args += ["--config", str(CONFIG_DIR / "strategies" / f"{strategy}.yaml")]
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
        done = run_bounded([*args, *extra], cwd=work, env=env)
        (work / "output.txt").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            return {"returncode": done.returncode, "output": (done.stdout + done.stderr)[-3000:]}, work / "ckpt" / "last.ckpt"
        return json.loads((work / "record.json").read_text()), work / "ckpt" / "last.ckpt"

    return run


@pytest.fixture(scope="module")
def single_process(run_training):
    record, checkpoint = run_training("plain")
    assert "losses" in record, record.get("output")
    return record, read_editor_state(checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["zero2", "zero3", "zero3_offload"])
def test_zero_on_cpu_trains_like_plain(run_training, single_process, strategy):
    record, checkpoint = run_training(strategy, strategy)
    assert checkpoint.is_dir()  # DeepSpeed's own checkpoint: a directory of shards
    assert_same_training(record, read_editor_state(checkpoint), single_process)
    # The editor moved: this is not two untrained runs agreeing.
    first = read_editor_state(checkpoint)["weights.values.0"]
    assert record["losses"][0] != record["losses"][-1] and first.abs().sum() > 0


@pytest.mark.slow
def test_zero_with_bf16_mixed_precision_trains_close_to_float32(run_training, single_process):
    """DeepSpeed casts the editor's parameters to bf16; the base model must follow (it failed with a dtype clash)."""
    record, checkpoint = run_training("zero2_bf16", "zero2", extra=["--trainer.precision", "bf16-mixed"])
    assert "losses" in record, record.get("output")
    assert record["global_step"] == STEPS
    torch.testing.assert_close(torch.tensor(record["losses"]), torch.tensor(single_process[0]["losses"]),
                               rtol=3e-2, atol=1e-3)  # bf16 rounding, not a different training run


@pytest.mark.slow
def test_the_same_strategy_configs_train_mend(run_training):
    plain, plain_checkpoint = run_training("mend_plain", editor="mend")
    assert "losses" in plain, plain.get("output")
    for strategy in ("zero3", "zero2"):
        record, checkpoint = run_training(f"mend_{strategy}", strategy, editor="mend")
        assert_same_training(record, read_editor_state(checkpoint), (plain, read_editor_state(plain_checkpoint)))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero2"])
def test_two_ranks_train_like_one_with_the_same_global_batch(run_training, single_process, strategy):
    record, checkpoint = run_training(f"2ranks_{strategy}", strategy, devices=2)
    assert_same_training(record, read_editor_state(checkpoint), single_process)


@pytest.mark.slow
def test_killed_deepspeed_run_resumes_with_its_step_and_optimizer_state(run_training, single_process, tmp_path):
    kill = json.dumps({"class_path": "conftest.KillOnce", "init_args": {"step": 2, "marker": str(tmp_path / "killed")}})
    killed, checkpoint = run_training("killed", "zero2", extra=[f"--trainer.callbacks+={kill}"])
    assert killed.get("returncode") == -9 and (tmp_path / "killed").exists()  # SIGKILLed at the start of step 2
    assert (checkpoint / "checkpoint").is_dir()  # ... after the step-2 checkpoint was written
    resumed, checkpoint = run_training("killed", "zero2", extra=[f"--trainer.callbacks+={kill}"])
    assert "losses" in resumed, resumed.get("output")
    # Only the missing steps ran, on the batches the first run had not reached, from the restored optimizer:
    # the result is the uninterrupted run's (Adam without its moments would have moved the weights elsewhere).
    expected, expected_state = single_process
    assert resumed["global_step"] == STEPS and len(resumed["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(expected["losses"][STEPS:]),
                               rtol=1e-5, atol=1e-6)
    state = read_editor_state(checkpoint)
    for key, value in expected_state.items():
        torch.testing.assert_close(state[key].float(), value.float(), rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_signalled_run_finishes_its_step_checkpoints_and_resumes_exactly(run_training, single_process, tmp_path,
                                                                         signal_name):
    # The signal comes in the first of step 2's two accumulated micro-batches; the run finishes the step first.
    signal_once = json.dumps({"class_path": "conftest.KillOnce",
                              "init_args": {"step": 2, "marker": str(tmp_path / "sent"), "signal": signal_name}})
    name = f"signalled_{signal_name}"
    stopped, checkpoint = run_training(name, extra=[f"--trainer.callbacks+={signal_once}"])
    assert stopped.get("returncode") == 128 + getattr(signal, signal_name), stopped.get("output")
    assert "Stopping at step 3" in stopped["output"]
    assert load_tensors_file(checkpoint)["global_step"] == 3
    resumed, checkpoint = run_training(name, extra=[f"--trainer.callbacks+={signal_once}"])
    expected, expected_state = single_process
    assert resumed["global_step"] == STEPS and len(resumed["losses"]) == 2  # only step 3 was left
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(expected["losses"][-2:]),
                               rtol=1e-5, atol=1e-6)
    state = read_editor_state(checkpoint)
    for key, value in expected_state.items():
        torch.testing.assert_close(state[key].float(), value.float(), rtol=1e-5, atol=1e-6, msg=key)


class UnshardableMEND(MEND):
    """An editor that does not declare ZeRO-3 support."""

    supports_zero3 = False


def test_zero3_is_refused_before_training_for_an_editor_that_cannot_shard(tiny_models, synthetic_splits,
                                                                         restored_environment):
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=tiny_models["gpt2"])
    editor = UnshardableMEND(tiny_models["gpt2"], rank=4)
    before = {k: v.clone() for k, v in editor.state_dict().items()}
    trainer = Trainer(accelerator="cpu", devices=1, strategy=DeepSpeedStrategy(stage=3), max_steps=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, inference_mode=False)
    with pytest.raises(ZeroStageError, match=r"UnshardableMEND does not declare `supports_zero3 = True`.*stage 2"):
        trainer.fit(editor, datamodule=data)
    assert trainer.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in editor.state_dict().items())
    DeepSpeedStrategy(stage=2).connect(editor)  # stage 2 keeps parameters whole: accepted
