"""Files a user hands the project never run code, and editor checkpoints say what they were made for (issue 21).

A pickle payload (``os.system("touch MARKER")`` in ``__reduce__``) is planted in every kind of file the project
loads: editor checkpoints of each trainable editor, a DeepSpeed checkpoint directory, a resumed ``last.ckpt``, the
key-statistics and target caches, a target archive, an edit memory and a sequential-editing state. The marker is
never created: the file is refused naming its path, or (a cache) recomputed with a warning naming it. Then a MEND
checkpoint trained for another layer, rank or model is refused naming the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_bounded, tiny_training_config
from lightning.pytorch import Trainer
from test_memory_editors import tiny_encoder

import lit_edit.key_statistics as key_statistics
from lit_edit.cli import CONFIG_DIR
from lit_edit.data.datamodule import EditDataModule
from lit_edit.edit_command import build_editor
from lit_edit.editors import ENN, KE, MEND, SERAC
from lit_edit.editors.base import MADE_FOR_KEY, read_editor_checkpoint, read_editor_state
from lit_edit.editors.key_value import FactRequest, TargetOptimisation
from lit_edit.editors.memory import EditMemory
from lit_edit.editors.target_cache import TargetCache, export_targets, import_targets
from lit_edit.errors import CheckpointError, UnsafeFileError
from lit_edit.key_statistics import KeyMoment, KeyStatisticsSpec, estimate_key_moments
from lit_edit.model_layout import ModelLayout
from lit_edit.models import ModelSpec, load_model, load_tokenizer
from lit_edit.protocol import SequentialEditing
from lit_edit.safe_files import load_tensors_file
from lit_edit.strategies import DeepSpeedStrategy


class Payload:
    """Runs a shell command when unpickled by a loader that trusts the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a planted pickle ran its payload"


def plant(path: Path, marker: Path, **content) -> Path:
    """A ``torch.save`` file that looks like ``content`` and carries the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**content, "payload": Payload(marker)}, path)
    return path


# -- editor checkpoints: every trainable editor, .ckpt and DeepSpeed directory ---------------------------------
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("encoder"))


EDITORS = {
    "MEND": lambda spec, encoder, path: MEND(spec, rank=4, checkpoint=path),
    "ENN": lambda spec, encoder, path: ENN(spec, checkpoint=path),
    "KE": lambda spec, encoder, path: KE(spec, lstm_dim=8, condition_dim=16, hidden_dim=8, checkpoint=path),
    "SERAC": lambda spec, encoder, path: SERAC(spec, encoder=encoder, checkpoint=path),
}


@pytest.mark.parametrize("editor", sorted(EDITORS))
def test_a_planted_editor_checkpoint_is_refused_naming_it(editor, tiny_models, encoder_dir, tmp_path, marker):
    path = plant(tmp_path / "editor.ckpt", marker, state_dict={})
    with pytest.raises(UnsafeFileError, match=f"{path}.*posix.system"):
        EDITORS[editor](tiny_models["gpt2"], encoder_dir, str(path))


def test_lit_edit_edit_checkpoint_is_refused_naming_it(tiny_models, tmp_path, marker):
    path = plant(tmp_path / "mend.ckpt", marker, state_dict={})
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    with pytest.raises(UnsafeFileError, match=str(path)):
        build_editor({"class_path": "lit_edit.editors.MEND", "init_args": {"model": spec, "rank": 4}},
                     checkpoint=str(path))


@pytest.fixture(scope="module")
def zero2_checkpoint(tiny_models, synthetic_splits, tmp_path_factory) -> Path:
    """The directory that ``train.py`` with configs/strategies/zero2.yaml writes: MEND, two steps, on the CPU."""
    work = tmp_path_factory.mktemp("zero2")
    config = tiny_training_config(tiny_models["gpt2"], synthetic_splits, work, editor="mend")
    config["model"]["init_args"]["rank"] = 4
    config["trainer"].update(max_steps=2, limit_train_batches=4, check_val_every_n_epoch=None)
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][:1]
    config["data"]["limit_val"] = 2
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    done = run_bounded([sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml"),
                        "--config", str(CONFIG_DIR / "strategies" / "zero2.yaml")], cwd=work, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return work / "ckpt" / "last.ckpt"


def test_a_deepspeed_checkpoint_is_read_after_its_pickles_pass_and_records_what_it_is_for(zero2_checkpoint,
                                                                                         tiny_models):
    assert zero2_checkpoint.is_dir()
    state, made_for = read_editor_checkpoint(zero2_checkpoint)
    assert made_for["editable"] == tiny_models["gpt2"].editable and made_for["shape"] == {"rank": 4, "n_blocks": 2}
    loaded = MEND(tiny_models["gpt2"], rank=4, checkpoint=str(zero2_checkpoint)).state_dict()
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], v.to(loaded[k].dtype)) for k, v in state.items())
    with pytest.raises(CheckpointError, match=f"{zero2_checkpoint} was trained with MEND rank=4 but this editor has "
                                              "rank=8"):
        MEND(tiny_models["gpt2"], rank=8, checkpoint=str(zero2_checkpoint))


@pytest.mark.parametrize("shard", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_planted_deepspeed_shard_is_refused_when_deepspeed_reads_it(zero2_checkpoint, shard, tmp_path, marker):
    planted = shutil.copytree(zero2_checkpoint, tmp_path / "last.ckpt")
    path = plant(planted / "checkpoint" / shard, marker, module={})
    with pytest.raises(UnsafeFileError, match=str(path)):
        read_editor_state(planted)
    # train.py --ckpt_path DIR under the DeepSpeed strategy: DeepSpeed's own loader reads the shard, as plain data
    work = zero2_checkpoint.parent.parent
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    done = run_bounded([sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml"),
                        "--config", str(CONFIG_DIR / "strategies" / "zero2.yaml"), "--ckpt_path", str(planted),
                        "--trainer.max_steps", "4"], cwd=work, env=env)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert str(path) in done.stderr and "refused to load" in done.stderr


def test_a_deepspeed_tag_that_leaves_the_directory_is_refused(zero2_checkpoint, tmp_path):
    planted = shutil.copytree(zero2_checkpoint, tmp_path / "last.ckpt")
    (planted / "latest").write_text("../../elsewhere")
    with pytest.raises(CheckpointError, match="latest.*not a folder directly inside"):
        DeepSpeedStrategy(stage=2).load_checkpoint(planted)


# -- resuming training from a planted last.ckpt ------------------------------------------------------------------
def test_resuming_from_a_planted_last_ckpt_is_refused_naming_it(tiny_models, synthetic_splits, tmp_path, marker,
                                                               monkeypatch):
    # Lightning leaves weights_only to torch's default, which this variable turns off: it must not matter.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = plant(tmp_path / "last.ckpt", marker, state_dict={}, global_step=1)
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=tiny_models["gpt2"])
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(UnsafeFileError, match=f"{path}.*posix.system"):
        trainer.fit(MEND(tiny_models["gpt2"], rank=4), datamodule=data, ckpt_path=str(path))
    assert trainer.global_step == 0


# -- caches: recomputed with a warning naming the file -----------------------------------------------------------
STATISTICS = KeyStatisticsSpec(samples=8, tokens=6, batch_size=8)


def test_a_planted_or_old_format_key_statistics_cache_is_recomputed_with_a_warning(tiny_models, tmp_path, marker):
    spec = tiny_models["gpt2"]
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    layout = ModelLayout(model)
    fresh = estimate_key_moments(model, tokenizer, layout, [1], STATISTICS, root=tmp_path / "fresh", progress=False)
    path = key_statistics.cache_path(model, layout.mlp_out_name(1), STATISTICS, tmp_path / "planted")
    plant(path, marker, version=key_statistics.FORMAT_VERSION, done=True, next_batch=1)
    with pytest.warns(UserWarning, match=f"{path}.*posix.system.*recomputing"):
        again = estimate_key_moments(model, tokenizer, layout, [1], STATISTICS, root=tmp_path / "planted",
                                     progress=False)
    torch.testing.assert_close(again[1], fresh[1])
    # A cache of format 1 (a pickled KeyMoment, which weights_only refuses) is recomputed the same way, once.
    torch.save({"version": 1, "moment": KeyMoment(torch.zeros(32, 32, dtype=torch.float64)), "next_batch": 1,
                "done": True, "spec": {}}, path)
    with pytest.warns(UserWarning, match=f"{path}.*KeyMoment.*recomputing"):
        estimate_key_moments(model, tokenizer, layout, [1], STATISTICS, root=tmp_path / "planted", progress=False)
    saved = key_statistics.read_moment_file(path)
    assert saved["version"] == key_statistics.FORMAT_VERSION and saved["sum"].dtype == torch.float64
    # The hash `key-statistics` prints is still the SHA-256 of the float64 sums (docs/results records them).
    assert saved["moment"].digest() == hashlib.sha256(saved["sum"].numpy().tobytes()).hexdigest()[:16]


def test_a_planted_target_cache_file_is_searched_again_and_a_planted_archive_refused(tiny_models, tmp_path, marker):
    model = load_model(tiny_models["gpt2"])
    cache = TargetCache(model, "transformer.h.1.mlp.c_proj", TargetOptimisation(), ["p"], 16, root=tmp_path / "root")
    request = FactRequest(prompt="the colour of s1 is", subject="s1", target="c1")
    path = plant(cache.path(request), marker, version=1, value=torch.zeros(3))
    with pytest.warns(UserWarning, match=f"{path}.*posix.system.*searching again"):
        assert cache.load(request) is None
    with pytest.warns(UserWarning, match=f"{path}.*left out of the archive"):
        assert export_targets(tmp_path / "archive.pt", tmp_path / "root") == 0
    archive = plant(tmp_path / "carried.pt", marker, version=1, entries={})
    with pytest.raises(UnsafeFileError, match=str(archive)):
        import_targets(archive, tmp_path / "elsewhere")


# -- memories and sequential states: refused naming the file -----------------------------------------------------
def test_a_planted_edit_memory_is_refused_naming_it(tmp_path, marker):
    path = plant(tmp_path / "memory.pt", marker, format=1, metric="cosine", keys=torch.zeros(0, 4), descriptors=[])
    with pytest.raises(UnsafeFileError, match=str(path)):
        EditMemory.load(path)


def test_a_planted_sequential_state_is_refused_naming_it(tmp_path, marker):
    sequence = SequentialEditing(measure_every=1, state_dir=tmp_path)
    path = plant(tmp_path / "mend.sequential.pt", marker, params={}, cases=[], curve=[], batches=0)
    with pytest.raises(UnsafeFileError, match=str(path)):
        sequence.history("mend")


# -- what an editor checkpoint was made for ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mend_checkpoint(tiny_models, synthetic_splits, tmp_path_factory) -> Path:
    """A Lightning checkpoint of MEND (rank 4) trained one step for the tiny GPT-2's block-1 MLP projection."""
    path = tmp_path_factory.mktemp("mend") / "mend.ckpt"
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=tiny_models["gpt2"])
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, limit_val_batches=0,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(MEND(tiny_models["gpt2"], rank=4), datamodule=data)
    trainer.save_checkpoint(path)
    return path


def test_a_checkpoint_loads_for_the_same_model_read_from_elsewhere(mend_checkpoint, tiny_models, tmp_path):
    moved = ModelSpec(name=str(shutil.copytree(tiny_models["gpt2"].name, tmp_path / "moved")),
                      editable=tiny_models["gpt2"].editable)
    loaded = MEND(moved, rank=4, checkpoint=str(mend_checkpoint)).state_dict()
    state = read_editor_state(mend_checkpoint)  # with the ModelSpec that save_hyperparameters put there
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_checkpoint_for_another_layer_of_the_same_shape_is_refused(mend_checkpoint, tiny_models):
    other_layer = ModelSpec(name=tiny_models["gpt2"].name, editable=["transformer.h.0.mlp.c_proj.weight"])
    with pytest.raises(CheckpointError, match=r"trained for editable \['transformer.h.1.mlp.c_proj.weight'\] but this "
                                              r"MEND edits \['transformer.h.0.mlp.c_proj.weight'\]"):
        MEND(other_layer, rank=4, checkpoint=str(mend_checkpoint))


def test_a_checkpoint_of_another_rank_is_refused(mend_checkpoint, tiny_models):
    with pytest.raises(CheckpointError, match=f"{mend_checkpoint} was trained with MEND rank=4 but this editor has "
                                              r"rank=8 \(--model.init_args.rank\)"):
        MEND(tiny_models["gpt2"], rank=8, checkpoint=str(mend_checkpoint))


def test_a_checkpoint_for_another_model_is_refused(mend_checkpoint, tiny_models, tmp_path):
    fine_tuned = tmp_path / "fine_tuned"  # the same architecture, other weights
    with torch.no_grad():
        copy = type(load_model(tiny_models["gpt2"])).from_pretrained(tiny_models["gpt2"].name)
        for parameter in copy.parameters():
            parameter.add_(0.01)
    copy.save_pretrained(fine_tuned)
    load_tokenizer(tiny_models["gpt2"]).save_pretrained(fine_tuned)
    spec = ModelSpec(name=str(fine_tuned), editable=tiny_models["gpt2"].editable)
    with pytest.raises(CheckpointError, match=f"{mend_checkpoint} was trained for base model .*gpt2.* but this MEND "
                                              "edits .*fine_tuned.*other weights"):
        MEND(spec, rank=4, checkpoint=str(mend_checkpoint))


def test_a_checkpoint_from_before_the_record_loads_with_a_warning_or_is_refused_by_tensor(mend_checkpoint,
                                                                                         tiny_models, tmp_path):
    saved = load_tensors_file(mend_checkpoint)
    del saved[MADE_FOR_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    with pytest.warns(UserWarning, match=f"{old} records neither .* loaded unchecked"):
        MEND(tiny_models["gpt2"], rank=4, checkpoint=str(old))
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=f"{old}: its weights do not fit this MEND.*"
                                                                         "size mismatch for networks"):
        MEND(tiny_models["gpt2"], rank=8, checkpoint=str(old))


@pytest.mark.parametrize("editor", ["ENN", "KE", "SERAC"])
def test_every_trainable_editor_records_what_its_checkpoints_are_for(editor, tiny_models, encoder_dir):
    built = EDITORS[editor](tiny_models["gpt2"], encoder_dir, None)
    checkpoint: dict = {}
    built.on_save_checkpoint(checkpoint)
    made_for = json.loads(json.dumps(checkpoint[MADE_FOR_KEY]))  # plain values only: loads with weights_only
    assert made_for["editor"] == editor and made_for["model"]["name"] == tiny_models["gpt2"].name
    assert made_for["editable"] == (None if editor == "SERAC" else tiny_models["gpt2"].editable)
    assert made_for["shape"] == {"KE": {"lstm_dim": 8, "condition_dim": 16, "hidden_dim": 8}}.get(editor, {})
    built.check_made_for(made_for, "same.ckpt")  # its own record passes
