"""The Python API (``lit_edit.load_editor``): editors by name, class path or config entry, built as ``lit-edit edit``
builds them; edits as plain values; the edited model generates, saves, and carries on with more edits."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import synthetic_records, true_object
from transformers import AutoModelForCausalLM

import lit_edit
from lit_edit import api
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import EditCache, FineTune
from lit_edit.editors.edited_model import EditFailedError
from lit_edit.errors import ConfigurationError, UserInputError

UNRELATED = "the home of s5 is"


def model_of(spec) -> dict:
    return {"name": spec.name, "kind": spec.kind, "editable": spec.editable}


@pytest.fixture(scope="module")
def ft(knowing_gpt2):
    """FT on the knowing tiny GPT-2, as test_edit_command's ``lit-edit edit`` runs it."""
    return lit_edit.load_editor("ft", model=model_of(knowing_gpt2), device="cpu", steps=25, lr=1.0e-2)


def answer(result, prompt: str) -> str:
    return result.generate(prompt, max_new_tokens=1).strip()


def test_load_editor_is_exported_lazily_by_the_package():
    assert lit_edit.load_editor is api.load_editor and lit_edit.LoadedEditor is api.LoadedEditor
    with pytest.raises(AttributeError):
        lit_edit.no_such_name  # noqa: B018


def test_a_name_and_its_class_path_build_the_same_class_and_settings_reach_the_hparams(tiny_models):
    model = model_of(tiny_models["gpt2"])
    by_name = lit_edit.load_editor("ft_kl", model=model, device="cpu", steps=3)
    by_path = lit_edit.load_editor("lit_edit.editors.FineTune", model=model, device="cpu", steps=3, kl_weight=1.0)
    assert type(by_name.editor) is type(by_path.editor) is FineTune
    assert by_name.editor.hparams["kl_weight"] == 1.0  # the registry's default for ft_kl
    assert by_name.editor.hparams["steps"] == 3  # the caller's override
    assert by_name.editor.model_spec.name == tiny_models["gpt2"].name and by_name.editor.device.type == "cpu"
    plain = lit_edit.load_editor("lit_edit.editors.FineTune", model=model, device="cpu")
    assert plain.editor.hparams["kl_weight"] == 0.0  # a class path has no registry defaults


def test_nested_settings_merge_over_the_registry_defaults(tiny_models):
    rome = lit_edit.load_editor("rome", model=model_of(tiny_models["gpt2"]), device="cpu", layer=0,
                                statistics={"samples": 16})
    statistics = rome.editor.hparams["statistics"]
    assert (statistics.samples, statistics.tokens) == (16, 64)  # samples given, tokens the registry's
    assert rome.editor.hparams["layer"] == 0


def test_an_unknown_name_is_one_line_naming_the_editors():
    with pytest.raises(ConfigurationError) as refused:
        lit_edit.load_editor("rmoe")
    message = str(refused.value)
    assert "\n" not in message and "'rmoe'" in message
    assert all(name in message for name in ("rome", "ft_kl", "mend", "serac"))


def test_a_config_entry_is_built_as_lit_edit_edit_builds_it(tiny_models, tmp_path):
    config = tmp_path / "editors.yaml"
    entry = {"class_path": "lit_edit.editors.FineTune", "init_args": {"steps": 4, "kl_weight": 0.5}}
    config.write_text(yaml.safe_dump({"model": {"editors": {"mine": entry}}}))
    loaded = lit_edit.load_editor("mine", model=model_of(tiny_models["gpt2"]), config=config, device="cpu", steps=2)
    assert (loaded.editor.hparams["steps"], loaded.editor.hparams["kl_weight"]) == (2, 0.5)
    with pytest.raises(ConfigurationError, match="has no editor 'other' \\(load_editor's first argument\\); it has: mine"):
        lit_edit.load_editor("other", config=config)


def test_edits_are_read_from_every_written_form():
    keep = (LabeledPrompt("the home of s5 is", "h1"),)
    forms = [("the colour of s1 is", " c3", "s1"), {"prompt": "the colour of s1 is", "target": "c3", "subject": "s1"},
             '"the colour of s1 is" [s1] -> " c3"',
             EditRecord(case_id="x", prompt="the colour of s1 is", target_new="c3", subject="s1")]
    records = [api._record(form, 1, keep) for form in forms]
    assert {(r.prompt, r.target_new, r.subject, r.out_of_scope) for r in records} == {
        ("the colour of s1 is", "c3", "s1", keep)}
    for bad in [("only a prompt",), {"prompt": "p", "answer": "a"}, '"p" -> ""', 3]:
        with pytest.raises(UserInputError):
            api._record(bad, 1, keep)


def test_an_ft_edit_changes_the_edit_prompts_answer_not_an_unrelated_one(ft):
    record = synthetic_records()[0]
    edited = ft.edit([(record.prompt, record.target_new)])
    assert ft.generate(record.prompt, max_new_tokens=1).strip() == record.target_true
    assert answer(edited, record.prompt) == record.target_new
    assert answer(edited, UNRELATED) == ft.generate(UNRELATED, max_new_tokens=1).strip() == true_object("s5", "home")
    assert edited.generate([record.prompt, UNRELATED], max_new_tokens=1) == [
        edited.generate(record.prompt, max_new_tokens=1), edited.generate(UNRELATED, max_new_tokens=1)]


def test_save_pretrained_writes_the_edited_weights_and_leaves_the_base_model_bit_identical(ft, tmp_path):
    record = synthetic_records()[0]
    before = {name: value.clone() for name, value in ft.editor.model.state_dict().items()}
    edited = ft.edit(f'"{record.prompt}" -> "{record.target_new}"')
    where = edited.save_pretrained(tmp_path / "edited")
    saved = AutoModelForCausalLM.from_pretrained(where).state_dict()
    for name, value in edited.edited_model.params.items():
        assert torch.equal(saved[name], value.detach()), name
        assert not torch.equal(saved[name], before[name]), name  # the edit is in the saved weights
    for name, value in ft.editor.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(UserInputError, match="not empty; pass overwrite=True"):
        edited.save_pretrained(where)
    edited.save_pretrained(where, overwrite=True)


def test_on_a_previous_result_composes_both_edits(ft):
    first, second = synthetic_records()[0], synthetic_records()[1]
    once = ft.edit([(first.prompt, first.target_new)])
    twice = ft.edit({"prompt": second.prompt, "target": second.target_new}, on=once)
    assert answer(twice, first.prompt) == first.target_new and answer(twice, second.prompt) == second.target_new
    assert answer(once, second.prompt) == second.target_true  # the first result is unchanged
    assert [r.prompt for r in twice.records] == [first.prompt, second.prompt]


def test_a_memory_based_edit_composes_but_cannot_be_saved_as_weights(tiny_models, tmp_path):
    cache = lit_edit.load_editor("cache", model=model_of(tiny_models["gpt2"]), device="cpu", epsilon=1.0e-3)
    assert isinstance(cache.editor, EditCache)
    once = cache.edit([("the colour of s1 is", "c3")])
    twice = cache.edit([("the home of s2 is", "h5")], on=once)
    assert answer(twice, "the colour of s1 is") == "c3" and answer(twice, "the home of s2 is") == "h5"
    assert answer(once, "the home of s2 is") == cache.generate("the home of s2 is", max_new_tokens=1).strip()
    with pytest.raises(EditFailedError, match="memory-based edit"):
        twice.save_pretrained(tmp_path / "edited")
    assert not (tmp_path / "edited").exists()


def test_a_trained_editor_without_checkpoint_is_refused_off_its_base_model(tiny_models):
    model = model_of(tiny_models["gpt2"])
    with pytest.raises(ConfigurationError, match="'mend' is a trained editor and its shipped pretrained:mend-smollm2 "
                                                 "was trained for base model 'smollm2-135m', not '.*gpt2'.*"
                                                 "checkpoint=PATH"):
        lit_edit.load_editor("mend", model=model)
    with pytest.raises(ConfigurationError, match="'enn' is a trained editor and none is shipped"):
        lit_edit.load_editor("enn", model=model)
    with pytest.raises(ConfigurationError, match="load_editor\\('mend'\\) uses the shipped pretrained:mend-smollm2"):
        lit_edit.load_editor("lit_edit.editors.MEND", model=model)


def test_a_trained_editor_on_its_base_model_uses_the_shipped_weights(monkeypatch):
    built = {}

    class Built:
        def to(self, device):
            return self

        def eval(self):
            return self

    def build(spec, model, checkpoint, naming):
        built.update(spec=spec, model=model, checkpoint=checkpoint)
        return Built()

    monkeypatch.setattr(api, "build_editor", build)  # the real base model is not loaded here
    lit_edit.load_editor("mend", device="cpu")
    assert built["checkpoint"] == "pretrained:mend-smollm2"
    assert built["model"]["editable"] == ["model.layers.2[789].mlp.down_proj.weight"]  # as it was trained
    assert built["spec"]["init_args"] == {"rank": 64, "n_blocks": 2}
    lit_edit.load_editor("mend", checkpoint="my.ckpt", device="cpu")  # a checkpoint given is used as given
    assert built["checkpoint"] == "my.ckpt" and built["model"] is None
