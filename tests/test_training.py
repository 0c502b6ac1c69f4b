"""Training and evaluating through Lightning and the CLIs, on tiny models and synthetic edits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything

from lit_edit.cli import CONFIG_DIR, evaluate_main, train_main
from lit_edit.config_files import load_config
from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import ENN, MEND
from lit_edit.safe_files import load_tensors_file


def tiny_trainer(**kwargs) -> Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, inference_mode=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return Trainer(**{**defaults, **kwargs})


def test_trained_mend_beats_untrained_mend_on_es_at_similar_drawdown(knowing_gpt2, synthetic_splits):
    seed_everything(0)
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=knowing_gpt2, edits_per_batch=4)
    editor = MEND(knowing_gpt2, rank=16, edit_lr=1.0e-4, lr=1.0e-3, lr_lr=1.0e-3, c_edit=0.1, c_loc=3.0)
    before = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    tiny_trainer(max_steps=200, limit_val_batches=0).fit(editor, datamodule=data)
    after = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    assert before["test/pre_es"] == 0.0  # the counterfactual targets are not what the model believes
    assert after["test/es"] >= before["test/es"] + 0.5, (before, after)
    # Out-of-scope here includes hard cases (same subject, other relation) that a 64-wide model entangles;
    # trained, most of those stay right (measured: ES 0.83, DD 0.17 with 1 thread, 0.28 with 2: CI has 2).
    assert after["test/dd"] <= before["test/dd"] + 0.35, (before, after)


def test_meta_trained_enn_beats_its_untrained_start(knowing_gpt2, synthetic_splits):
    seed_everything(0)
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=knowing_gpt2, edits_per_batch=4)
    editor = ENN(knowing_gpt2, inner_steps=1, inner_lr=1.0e-2, lr=1.0e-3, lr_lr=1.0e-3)
    before = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    tiny_trainer(max_steps=200, limit_val_batches=0).fit(editor, datamodule=data)
    after = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    assert before["test/es"] == 0.0  # one plain step at the initial rate does not make the edit
    assert after["test/es"] >= before["test/es"] + 0.5, (before, after)  # measured: 0.67
    assert after["test/dd"] <= before["test/dd"] + 0.35, (before, after)  # measured: 0.22
    assert not editor.skipped_steps


def test_enn_skips_and_counts_diverging_steps_and_goes_on(knowing_gpt2, synthetic_splits):
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=knowing_gpt2, edits_per_batch=4)
    editor = ENN(knowing_gpt2, inner_steps=2)
    with torch.no_grad():  # a rate that diverges (an infinite one is refused when the editor is built)
        editor.inner_lrs[0].fill_(float("inf"))
    trainer = tiny_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(editor, datamodule=data)
    assert trainer.state.finished and editor.skipped_steps == 3
    assert trainer.callback_metrics["train/skipped_steps"] == 3


def override_model(spec, path: Path) -> list[str]:
    return [f"--model.init_args.model.name={spec.name}", f"--model.init_args.model.editable={json.dumps(spec.editable)}",
            f"--data.train={path['train']}", f"--data.val={path['val']}", f"--data.test={path['test']}"]


def test_train_py_fast_dev_run(tiny_models, synthetic_splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = train_main([*override_model(tiny_models["llama"], synthetic_splits), "--trainer.fast_dev_run=8",
                      "--model.init_args.rank=8"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 2  # 8 single edits, 4 per optimizer step
    assert isinstance(cli.model, MEND)


def test_a_run_renamed_on_the_command_line_checkpoints_under_its_own_name(tiny_models, synthetic_splits, tmp_path,
                                                                          monkeypatch):
    """The shared checkpoints/${name} must follow a name given on the command line: the run must not write (or
    resume) under the config file's name."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "checkpoints" / "mend-smollm2-135m"
    cli = train_main([*override_model(tiny_models["llama"], synthetic_splits), "--trainer.max_steps=2",
                      "--model.init_args.rank=8", "--trainer.logger.init_args.name=exp-renamed",
                      "--trainer.val_check_interval=8", "--data.limit_val=2", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 2
    assert (tmp_path / "checkpoints" / "exp-renamed" / "last.ckpt").exists() and not other.exists()


def test_train_py_saves_editor_only_checkpoint_and_resumes(knowing_gpt2, synthetic_splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorder = json.dumps({"class_path": "conftest.RecordTrainBatches", "init_args": {"path": "batches.jsonl"}})
    args = [*override_model(knowing_gpt2, synthetic_splits), "--model.init_args.rank=8", "--trainer.max_steps=100",
            "--data.edits_per_batch=4", "--trainer.accumulate_grad_batches=1",  # one batch per step, as compared below
            "--trainer.val_check_interval=50", "--data.limit_val=4", "--trainer.enable_progress_bar=false",
            f"--trainer.callbacks+={recorder}"]
    first = train_main(args)
    last = tmp_path / "checkpoints" / "mend-smollm2-135m" / "last.ckpt"
    best = last.with_name("best.ckpt")
    assert last.exists() and best.exists()
    state = load_tensors_file(last)
    assert state["global_step"] == 100 and not any(k.startswith("model.") for k in state["state_dict"])
    assert first.trainer.global_step == 100
    # Started again, the run continues from last.ckpt: asking for 150 steps runs only the 50 missing ones,
    # with the optimizer state restored.
    resumed = train_main([*args, "--trainer.max_steps=150"])
    assert resumed.trainer.global_step == 150
    assert load_tensors_file(last)["global_step"] == 150
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))
    # ... and with the edits an uninterrupted run would have seen next (100 is mid-epoch: 7 batches per epoch).
    seen = [json.loads(line) for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    data = EditDataModule(train=str(synthetic_splits["train"]), model=knowing_gpt2, edits_per_batch=4)
    loader = data.train_dataloader()
    uninterrupted = []
    for epoch in range(22):
        loader.sampler.set_epoch(epoch)
        uninterrupted += [[record.case_id for record in batch.records] for batch in loader]
    assert len(loader) == 7 and seen == uninterrupted[:150]


def tiny_evaluate_config(tiny_models, synthetic_splits, tmp_path: Path) -> Path:
    """configs/evaluate.yaml on the tiny GPT-2 and three synthetic test edits (untrained MEND)."""
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    config = load_config(CONFIG_DIR / "evaluate" / "default.yaml")
    config["model"]["editors"]["mend"]["init_args"].pop("checkpoint")
    for editor in config["model"]["editors"].values():
        editor.setdefault("init_args", {})["model"] = spec
    config["data"]["test"] = str(synthetic_splits["test"])
    config["data"]["limit_test"] = 3
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "eval.yaml"


def test_evaluate_py_prints_one_table_and_writes_json(tiny_models, synthetic_splits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    evaluate_main(["--config", str(tiny_evaluate_config(tiny_models, synthetic_splits, tmp_path))], default_config=None)
    out = capsys.readouterr().out
    assert "| editor | ES | paraphrase ES" in out
    records = json.loads((tmp_path / "results" / "evaluate.json").read_text())
    assert sorted(r["editor"] for r in records) == ["ft", "ft_kl", "mend", "unedited"]
    records = sorted(records, key=lambda r: ["unedited", "ft", "ft_kl", "mend"].index(r["editor"]))
    assert all(r["edits"] == 3 for r in records)
    assert records[0]["metrics"]["es"] == records[0]["metrics"]["pre_es"]  # no edit, no change
    assert records[0]["metrics"]["retention"] == 1.0
    assert records[2]["init_args"]["kl_weight"] == 1.0 and records[2]["name"] == "FT+KL"


def test_evaluate_py_runs_only_the_editors_named(tiny_models, synthetic_splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(tiny_evaluate_config(tiny_models, synthetic_splits, tmp_path))
    evaluate_main(["--config", config, "--model.only", "[mend, unedited]"], default_config=None)
    records = json.loads((tmp_path / "results" / "evaluate.json").read_text())
    assert sorted(r["editor"] for r in records) == ["mend", "unedited"]
    # An editor left out is never built: its missing checkpoint does not stop the run.
    evaluate_main(["--config", config, "--model.only", "[unedited]",
                   "--model.editors.mend.init_args.checkpoint", str(tmp_path / "missing.ckpt")], default_config=None)
    with pytest.raises(ValueError, match=r"does not define: \['mnd'\]"):
        evaluate_main(["--config", config, "--model.only", "[mnd]"], default_config=None)


SHIPPED_CONFIGS = sorted(set(CONFIG_DIR.rglob("*.yaml")) - {CONFIG_DIR / "edit.yaml"})


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_parses(config, capsys):
    """Every YAML under configs/: training and evaluation configs (new folders and old paths), each strategy on top of
    configs/train/enn.yaml, and each shared block in configs/common/ through the configs whose ``base:`` it is
    (configs/edit.yaml, lit-edit edit's, is checked in test_edit_command)."""
    folder = config.relative_to(CONFIG_DIR).parts[0]
    if folder == "common":
        users = [other for other in SHIPPED_CONFIGS
                 if other.parent.name in ("train", "evaluate") and f"../common/{config.name}" in other.read_text()]
        assert users, f"{config} is the base of no config under configs/train/ or configs/evaluate/"
        config = users[0]
    evaluation = config.parent.name == "evaluate" or config.name.startswith("evaluate")
    main = evaluate_main if evaluation else train_main
    args = ["--config", str(config)]
    if folder == "strategies":
        args = ["--config", str(CONFIG_DIR / "train" / "enn.yaml"), *args]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(re.sub(r"(?m)^\[\d{4}-\d\d-\d\d .*$", "", capsys.readouterr().out))  # DeepSpeed's log
    assert printed["model"]
    assert printed["trainer"]["inference_mode"] is False
    if folder == "strategies":
        expected, strategy = yaml.safe_load(config.read_text())["trainer"]["strategy"], printed["trainer"]["strategy"]
        if isinstance(expected, dict):
            assert strategy["class_path"] == expected["class_path"]
            assert expected["init_args"].items() <= strategy["init_args"].items()
        else:
            assert strategy == expected
