"""Shipped editors: a training checkpoint exported as safetensors with a manifest, loaded as ``pretrained:NAME``."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import tiny_trainer

from lit_edit.__main__ import main as lit_edit_main
from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import MEND
from lit_edit.errors import CheckpointError, ConfigurationError
from lit_edit.pretrained import MANIFEST_FILE, WEIGHTS_FILE, export_editor


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_models, synthetic_splits, tmp_path_factory):
    """A tiny MEND after two training steps, saved by Lightning as train.py saves it."""
    spec = tiny_models["gpt2"]
    editor = MEND(spec, rank=4, lr=1.0e-2)
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=spec, edits_per_batch=2)
    trainer = tiny_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(editor, datamodule=data)
    path = tmp_path_factory.mktemp("trained") / "best.ckpt"
    trainer.save_checkpoint(path)
    return path, editor


def test_an_exported_editor_loads_by_name_with_the_same_weights_and_says_how_it_was_made(
        trained_checkpoint, tiny_models, tmp_path, monkeypatch):
    path, trained = trained_checkpoint
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"editor": "unedited", "metrics": {"es": 0.0}},
                                   {"editor": "mend", "edits": 3, "metrics": {"es": 0.75}, "data": {"test": "x"}}]))
    monkeypatch.setenv("LIT_EDIT_PRETRAINED", str(tmp_path / "shipped"))
    lit_edit_main(["export-editor", str(path), "tiny-mend", "--made-by", "python train.py --config x.yaml",
                   "--results", str(results)])
    exported = tmp_path / "shipped" / "tiny-mend"
    assert sorted(p.name for p in exported.iterdir()) == [WEIGHTS_FILE, MANIFEST_FILE]  # no pickle shipped
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["training"]["global_step"] == 2 and manifest["command"] == "python train.py --config x.yaml"
    assert manifest["results"]["metrics"] == {"es": 0.75} and manifest["init_args"]["rank"] == 4
    assert manifest["made_for"]["editable"] == trained.editable_names
    loaded = MEND(tiny_models["gpt2"], rank=4, checkpoint="pretrained:tiny-mend")
    for (name, value), (_, expected) in zip(loaded.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(value, expected), name
    with pytest.raises(CheckpointError, match=r"trained with MEND rank=4 but this editor has rank=8"):
        MEND(tiny_models["gpt2"], rank=8, checkpoint=str(exported))  # what it was made for is checked as for a .ckpt


def test_exports_are_refused_over_the_size_limit_and_over_an_existing_one(trained_checkpoint, tmp_path):
    path, _ = trained_checkpoint
    with pytest.raises(CheckpointError, match="more than the 0 MB an export may be"):
        export_editor(path, "big", root=tmp_path, max_bytes=10)
    assert not (tmp_path / "big").exists()
    export_editor(path, "once", root=tmp_path)
    with pytest.raises(ConfigurationError, match="exists; pass --overwrite"):
        export_editor(path, "once", root=tmp_path)
    with pytest.raises(ConfigurationError, match="use letters, digits"):
        export_editor(path, "../elsewhere", root=tmp_path)


def test_a_changed_export_or_an_unknown_name_is_refused(trained_checkpoint, tiny_models, tmp_path, monkeypatch):
    path, _ = trained_checkpoint
    monkeypatch.setenv("LIT_EDIT_PRETRAINED", str(tmp_path))
    exported = export_editor(path, "tiny", root=tmp_path)
    with pytest.raises(CheckpointError, match=r"no such shipped editor .*\(shipped: pretrained:tiny\)"):
        MEND(tiny_models["gpt2"], rank=4, checkpoint="pretrained:other")
    with pytest.raises(CheckpointError, match="a shipped editor's name is"):
        MEND(tiny_models["gpt2"], rank=4, checkpoint="pretrained:../tiny")
    weights = exported / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="SHA-256 is not the manifest's"):
        MEND(tiny_models["gpt2"], rank=4, checkpoint="pretrained:tiny")


def test_every_shipped_editor_is_whole_small_and_says_how_it_was_made():
    from lit_edit.pretrained import MAX_BYTES, available, pretrained_root, read_exported, read_manifest

    shipped = available(pretrained_root())
    assert shipped  # the repository ships at least one trained editor
    for name in shipped:
        directory = pretrained_root() / name
        state, made_for = read_exported(directory)  # its SHA-256 matches the manifest
        manifest = read_manifest(directory)
        assert sum(t.numel() * t.element_size() for t in state.values()) == manifest["bytes"] <= MAX_BYTES
        assert made_for["model"]["weights_hash"] and made_for["editable"] and manifest["command"]
        assert manifest["results"]["metrics"]["es"] >= 0.0 and manifest["results"]["edits"] > 0
