"""KE (KnowledgeEditor) on tiny random models: the update is a gated gradient, conditioned on each edit."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import pytest
import torch
import yaml
from conftest import REPO, assert_same_training, run_bounded, synthetic_records, tiny_training_config
from lightning.pytorch import seed_everything
from test_editors import RECORD, assert_bit_identical, snapshot
from test_training import tiny_trainer

from lit_edit.cli import CONFIG_DIR, evaluate_main, train_main
from lit_edit.config_files import load_config
from lit_edit.data.datamodule import EditDataModule
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import KE, EditFailedError
from lit_edit.editors.base import read_editor_state
from lit_edit.editors.edited_model import aligned_logits, nll_loss
from lit_edit.editors.ke import greedy_answer, split_edit
from lit_edit.errors import ConfigurationError
from lit_edit.metrics import edit_success
from lit_edit.safe_files import load_tensors_file

OTHER = EditRecord(case_id="1", prompt="where does s3 live ? in", target_new="h6 h7", subject="s3",
                   paraphrases=("s3 lives in",), out_of_scope=(LabeledPrompt("the colour of s7 is", "c2"),))


def gradient(editor: KE, batch, name: str) -> torch.Tensor:
    """The plain fine-tuning gradient of the mean NLL of ``batch.edit`` with respect to one weight."""
    weight = editor.base_params()[name].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(nll_loss(*aligned_logits(editor.model, batch.edit, editor.kind, {name: weight})),
                                  weight)
    return grad


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5"])
def test_untrained_ke_update_is_a_gradient_step(tiny_models, arch):
    """Before training the gates are uniform (A = -1, B = 0, sigmoid(eta) = 1/2): a gradient step of max_scale / 2."""
    editor = KE(tiny_models[arch], max_scale=1.0e-2, condition_dim=16, hidden_dim=8, lstm_dim=8).eval()
    batch = editor.prompts.batch([RECORD])
    before = snapshot(editor.model)
    name = editor.editable_names[0]
    update = editor.edit(batch).params[name] - editor.base_params()[name]
    grad = gradient(editor, batch, name)
    assert grad.abs().max() > 0
    torch.testing.assert_close(update, -0.5e-2 * grad, rtol=1e-4, atol=1e-5 * float(update.abs().max()))
    assert_bit_identical(editor.model, before)


def test_each_edit_of_a_batch_gets_its_own_gradient(tiny_models):
    """Two edits of different lengths in one (padded) batch: the untrained update is the sum of each edit's own
    gradient step, not a step on the batch's mean loss."""
    editor = KE(tiny_models["llama"], max_scale=1.0e-2, condition_dim=16, hidden_dim=8, lstm_dim=8).eval()
    name = editor.editable_names[0]
    both = editor.prompts.batch([RECORD, OTHER])
    alone = [editor.prompts.batch([record]) for record in (RECORD, OTHER)]
    update = editor.edit(both).params[name] - editor.base_params()[name]
    expected = -0.5e-2 * sum(gradient(editor, batch, name) for batch in alone)
    torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-5 * float(update.abs().max()))
    assert not torch.allclose(update, -0.5e-2 * gradient(editor, both, name), rtol=1e-2)


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_original_answer_is_the_greedy_generation(tiny_models, arch):
    editor = KE(tiny_models[arch], condition_dim=16, hidden_dim=8, lstm_dim=8)
    batch = editor.prompts.batch([OTHER])
    ((prompt, target),) = split_edit(batch.edit, editor.kind)
    assert editor.tokenizer.decode(target) == "h6 h7" and len(prompt) >= 6
    generated = editor.model.generate(input_ids=prompt[None], attention_mask=torch.ones_like(prompt)[None],
                                      max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=0)
    expected = generated[0, -2:]
    torch.testing.assert_close(greedy_answer(editor.model, editor.kind, prompt, 2), expected)
    torch.testing.assert_close(editor.original_answer(prompt, 2), expected)


def test_the_condition_changes_the_update(tiny_models):
    """Once the gate network is not at its start, the same gradient is gated differently for different targets."""
    editor = KE(tiny_models["gpt2"], condition_dim=16, hidden_dim=8, lstm_dim=8)
    torch.manual_seed(0)
    for gate in editor.gates.values():
        torch.nn.init.normal_(gate.gates.weight, std=0.5)
    editor.eval()
    batch = editor.prompts.batch([RECORD])
    record = replace(RECORD, target_new="c6")
    name = editor.editable_names[0]
    first = editor.edit(batch).params[name] - editor.base_params()[name]
    second = editor.edit(editor.prompts.batch([record])).params[name] - editor.base_params()[name]
    grads = [gradient(editor, b, name) for b in (batch, editor.prompts.batch([record]))]
    ratio = [update / grad for update, grad in zip((first, second), grads, strict=True)]  # the gates, where grad != 0
    mask = (grads[0].abs() > 1e-6) & (grads[1].abs() > 1e-6)
    assert not torch.allclose(ratio[0][mask], ratio[1][mask], rtol=1e-2)


def test_non_finite_edit_raises_and_leaves_model_unchanged(tiny_models):
    editor = KE(tiny_models["gpt2"], condition_dim=16, hidden_dim=8, lstm_dim=8).eval()
    editor.max_scale = float("inf")  # refused as a setting: forced here
    before = snapshot(editor.model)
    with pytest.raises(EditFailedError, match="non-finite"):
        editor.edit(editor.prompts.batch([RECORD]))
    assert_bit_identical(editor.model, before)


def test_ke_refuses_bad_settings(tiny_models):
    with pytest.raises(ConfigurationError, match=r"KE.max_scale must be a finite number > 0, got 0.0"):
        KE(tiny_models["gpt2"], max_scale=0.0)
    with pytest.raises(ConfigurationError, match="linear weights only"):
        KE(replace(tiny_models["gpt2"], editable=["transformer.h.1.ln_2.weight"]))


def test_ke_checkpoint_holds_only_editor_weights(tiny_models, tmp_path):
    editor = KE(tiny_models["gpt2"], condition_dim=16, hidden_dim=8, lstm_dim=8)
    key = next(iter(editor.gates))
    torch.nn.init.normal_(editor.gates[key].gates.weight)  # pretend it was trained
    checkpoint = {"state_dict": editor.state_dict()}
    assert checkpoint["state_dict"] and all(k.startswith(("gates.", "encoder.")) for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "ke.ckpt")
    fresh = KE(tiny_models["gpt2"], condition_dim=16, hidden_dim=8, lstm_dim=8, checkpoint=str(tmp_path / "ke.ckpt"))
    assert torch.equal(fresh.gates[key].gates.weight, editor.gates[key].gates.weight)


def test_trained_ke_edits_in_scope_and_keeps_out_of_scope(knowing_gpt2, synthetic_splits):
    """Trained on one edit per step (as configs/train/ke.yaml), KE learns to make edits it could not make untrained, on
    held-out subjects, while most out-of-scope facts stay."""
    seed_everything(0)
    data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=knowing_gpt2, edits_per_batch=1)
    editor = KE(knowing_gpt2, max_scale=0.3, lr=1.0e-3, c_edit=1.0, c_loc=3.0, condition_dim=64, hidden_dim=32,
                lstm_dim=32)
    before = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    tiny_trainer(max_steps=200, limit_val_batches=0).fit(editor, datamodule=data)
    after = tiny_trainer().test(editor, datamodule=data, verbose=False)[0]
    assert before["test/pre_es"] == 0.0 and before["test/es"] == 0.0  # the untrained step is too small to edit
    assert after["test/es"] >= 0.4, (before, after)  # measured: 0.61
    assert after["test/dd"] <= 0.3, (before, after)  # measured: 0.17
    assert not editor.skipped_steps
    # Edit by edit: the in-scope answer becomes the new target while an unrelated fact stays as it was.
    editor.eval()
    held = 0
    for record in synthetic_records(2, [f"s{i}" for i in range(34, 40)]):  # the test split's edits
        batch = editor.prompts.batch([record])
        edited = editor.edit(batch)
        unrelated = editor.prompts(list(record.out_of_scope))
        in_pre, in_labels = editor.logits(batch.edit)
        out_pre, out_labels = editor.logits(unrelated)
        assert edit_success(in_pre, in_labels) == 0.0 and edit_success(out_pre, out_labels) == 1.0
        held += bool(edit_success(editor.logits(batch.edit, edited)[0], in_labels) == 1.0
                     and edit_success(editor.logits(unrelated, edited)[0], out_labels) == 1.0)
    assert held >= 3, held


def tiny_ke_args(spec, splits) -> list[str]:
    return [f"--model.init_args.model.name={spec.name}", f"--model.init_args.model.editable={json.dumps(spec.editable)}",
            f"--data.train={splits['train']}", f"--data.val={splits['val']}", f"--data.test={splits['test']}",
            "--model.init_args.condition_dim=16", "--model.init_args.hidden_dim=8", "--model.init_args.lstm_dim=8"]


def test_train_py_trains_ke_from_its_config(tiny_models, synthetic_splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = train_main(["--config", str(CONFIG_DIR / "train" / "ke.yaml"), *tiny_ke_args(tiny_models["llama"], synthetic_splits),
                      "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--data.limit_val=2",
                      "--trainer.enable_progress_bar=false"])
    assert isinstance(cli.model, KE) and cli.trainer.global_step == 4
    best = tmp_path / "checkpoints" / "ke-smollm2-135m" / "best.ckpt"
    state = load_tensors_file(best)["state_dict"]
    assert state and not any(k.startswith("model.") for k in state)


def test_evaluate_py_runs_ke_beside_mend(tiny_models, synthetic_splits, tmp_path, monkeypatch):
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    config = load_config(CONFIG_DIR / "evaluate" / "ke.yaml")
    for editor in config["model"]["editors"].values():
        editor.setdefault("init_args", {}).pop("checkpoint", None)
        editor["init_args"]["model"] = spec
    for name in ("ke", "ke_untrained"):
        config["model"]["editors"][name]["init_args"].update(condition_dim=16, hidden_dim=8, lstm_dim=8)
    config["model"]["editors"]["mend"]["init_args"].update(rank=8)
    config["data"] = {"test": str(synthetic_splits["test"]), "limit_test": 2}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    evaluate_main(["--config", str(tmp_path / "eval.yaml")], default_config=None)
    records = json.loads((tmp_path / config["model"]["output"]).read_text())
    assert sorted(r["editor"] for r in records) == ["ke", "ke_untrained", "mend", "unedited"]
    ke = next(r for r in records if r["editor"] == "ke")
    assert ke["edits"] == 2 and ke["name"] == "KE" and 0.0 <= ke["metrics"]["es"] <= 1.0


@pytest.mark.slow
def test_ke_trains_under_zero3_like_plain(knowing_gpt2, synthetic_splits, tmp_path):
    """KE declares ``supports_zero3``: every trainable parameter (the LSTM's included) is read inside a submodule's
    forward. ZeRO-3 on the CPU gives the plain run's losses, validation scores and trained weights."""
    runs = {}
    for name, strategies in (("plain", []), ("zero3", ["zero3"])):
        work = tmp_path / name
        work.mkdir()
        config = tiny_training_config(knowing_gpt2, synthetic_splits, work, editor="mend")
        config["model"] = {"class_path": "lit_edit.editors.KE",
                           "init_args": {"model": config["model"]["init_args"]["model"], "max_scale": 0.3,
                                         "lr": 1.0e-3, "c_edit": 1.0, "condition_dim": 16, "hidden_dim": 8,
                                         "lstm_dim": 8}}
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        args = [sys.executable, str(REPO / "train.py"), "--config", str(work / "config.yaml")]
        args += [arg for s in strategies for arg in ("--config", str(CONFIG_DIR / "strategies" / f"{s}.yaml"))]
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
        done = run_bounded(args, cwd=work, env=env)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        runs[name] = (json.loads((work / "record.json").read_text()), read_editor_state(work / "ckpt" / "last.ckpt"))
    assert (tmp_path / "zero3" / "ckpt" / "last.ckpt").is_dir()  # DeepSpeed's own sharded checkpoint
    assert_same_training(*runs["zero3"], runs["plain"])
    assert runs["plain"][0]["losses"][0] != runs["plain"][0]["losses"][-1]
