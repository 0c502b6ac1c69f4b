"""``lit-edit edit``: edits written on the command line, generations before and after, the saved model."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import synthetic_records, true_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_edit.__main__ import main
from lit_edit.cli import CONFIG_DIR
from lit_edit.edit_command import EditSyntaxError, WrittenEdit, parse_edit, parse_edits, run_edits
from lit_edit.editors import FineTune
from lit_edit.editors.edited_model import EditedModel, EditFailedError


@pytest.mark.parametrize(("text", "expected"), [
    ('"The Mona Lisa was painted by" -> " Picasso"', ("The Mona Lisa was painted by", "Picasso")),
    ('  "the colour of s1 is"->"c3"  ', ("the colour of s1 is", "c3")),
    ("the colour of s1 is -> c3", ("the colour of s1 is", "c3")),
    ('"The Mona Lisa was painted by" [The Mona Lisa] -> " Picasso"',
     ("The Mona Lisa was painted by", "Picasso", "The Mona Lisa")),
    ("the colour of s1 is [s1] -> c3", ("the colour of s1 is", "c3", "s1")),
])
def test_edits_are_read_from_their_written_form(text, expected):
    assert parse_edit(text) == WrittenEdit(*expected)


def test_subjects_can_be_given_once_per_edit_in_order():
    edits = parse_edits(["the colour of s1 is -> c3", "the home of s2 is -> h1"], ["s1", "s2"])
    assert [edit.subject for edit in edits] == ["s1", "s2"]
    with pytest.raises(EditSyntaxError, match="--subject was given 1 times for 2 edits"):
        parse_edits(["the colour of s1 is -> c3", "the home of s2 is -> h1"], ["s1"])
    with pytest.raises(EditSyntaxError, match="edit 1 has a \\[subject\\] and a --subject"):
        parse_edits(["the colour of s1 is [s1] -> c3"], ["s1"])


@pytest.mark.parametrize("text", ['"The Mona Lisa was painted by" Picasso', '"prompt" -> ""', '"a" -> "b" -> "c"',
                                  "no arrow here", '"unclosed -> "x"', '"prompt" [] -> "x"',
                                  '"prompt" [a] [b] -> "x"'])
def test_malformed_edits_get_the_usage_and_an_example(text, capsys):
    with pytest.raises(EditSyntaxError):
        parse_edit(text)
    with pytest.raises(SystemExit) as exit_:
        main(["edit", text])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: lit-edit edit" in err
    assert '"The Mona Lisa was painted by" -> " Picasso"' in err


@pytest.fixture
def ft_config(knowing_gpt2, tmp_path):
    def write(**init_args) -> str:
        model = {"name": knowing_gpt2.name, "kind": "causal", "editable": knowing_gpt2.editable}
        editors = {"ft": {"class_path": "lit_edit.editors.FineTune",
                          "init_args": {"model": model, "steps": 25, "lr": 1.0e-2, **init_args}}}
        path = tmp_path / "editors.yaml"
        path.write_text(yaml.safe_dump({"model": {"editors": editors}}))
        return str(path)
    return write


def sections(printed: str) -> dict[str, tuple[str, str]]:
    """prompt -> (before, after) from the command's report."""
    lines, found = printed.splitlines(), {}
    for i, line in enumerate(lines):
        if line.split(" ", 1)[0] in ("edit", "paraphrase", "neighbour"):
            found[line.split(None, 1)[1]] = (lines[i + 1].split("before:", 1)[1].strip(),
                                              lines[i + 2].split("after:", 1)[1].split("   (")[0].strip())
    return found


def test_edit_changes_the_prompt_not_the_neighbour_and_saves_a_model_transformers_loads(
        knowing_gpt2, ft_config, tmp_path, capsys):
    record = synthetic_records()[0]
    neighbour = "the home of s5 is"
    weights_before = AutoModelForCausalLM.from_pretrained(knowing_gpt2.name).state_dict()
    main(["edit", f'"{record.prompt}" -> " {record.target_new}"', "--config", ft_config(),
          "--paraphrase", record.paraphrases[0], "--neighbour", neighbour, "--save", str(tmp_path / "edited"),
          "--max_new_tokens", "1"])
    shown = sections(capsys.readouterr().out)
    assert shown[record.prompt] == (record.target_true, record.target_new)
    assert shown[neighbour] == (true_object("s5", "home"),) * 2

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "edited")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "edited")
    encoded = tokenizer(record.prompt, return_tensors="pt")
    completion = saved.generate(**encoded, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(completion[0, encoded["input_ids"].shape[1]:]).strip() == record.target_new
    for name, value in AutoModelForCausalLM.from_pretrained(knowing_gpt2.name).state_dict().items():
        assert torch.equal(value, weights_before[name]), name  # the base model on disk is untouched


def test_a_failed_edit_says_why_and_saves_nothing(ft_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["edit", '"the colour of s1 is" -> "c3"', "--config", ft_config(lr=1.0e30),
              "--save", str(tmp_path / "edited")])
    assert exit_.value.code == 1 and "edit failed" in capsys.readouterr().err
    assert not (tmp_path / "edited").exists()


def test_a_missing_editor_checkpoint_is_a_clear_error(ft_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["edit", '"the colour of s1 is" -> "c3"', "--config", ft_config(), "--checkpoint", str(tmp_path / "no.ckpt")])
    assert exit_.value.code == 2 and "no editor checkpoint at" in capsys.readouterr().err


@pytest.mark.parametrize("editor", ["rome", "memit"])
def test_rome_and_memit_refuse_an_edit_without_its_subject_before_loading_anything(editor, capsys, monkeypatch):
    import lit_edit.edit_command as edit_command

    monkeypatch.setattr(edit_command, "build_editor", lambda *args: pytest.fail("the model was loaded"))
    config = str(CONFIG_DIR / "evaluate_rome.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["edit", '"The Mona Lisa was painted by" -> " Picasso"', "--config", config, "--editor", editor])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lit-edit edit: error: editor '{editor}' ({editor.upper()}) needs each edit's subject: "
                           "edit 1 ('The Mona Lisa was painted by') has none")
    with pytest.raises(SystemExit) as exit_:
        main(["edit", '"The Mona Lisa was painted by" -> " Picasso"', "--subject", "Mona Lisa Smith", "--config",
              config, "--editor", editor])
    assert exit_.value.code == 2
    assert "the subject 'Mona Lisa Smith' does not occur in its prompt" in capsys.readouterr().err


def test_rome_edits_from_the_command_line_given_the_subject(knowing_gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path / "checkpoints"))  # its key statistics
    rome = {"model": {"name": knowing_gpt2.name, "editable": knowing_gpt2.editable}, "layer": 0,
            "statistics": {"samples": 16, "tokens": 8, "batch_size": 16}, "prefixes": {"lengths": [3], "per_length": 1}}
    config = tmp_path / "rome.yaml"
    config.write_text(yaml.safe_dump({"model": {"editors": {"rome": {"class_path": "lit_edit.editors.ROME",
                                                                     "init_args": rome}}}}))
    record = synthetic_records()[0]
    main(["edit", f'"{record.prompt}" [{record.subject}] -> " {record.target_new}"', "--config", str(config),
          "--editor", "rome", "--neighbour", "the home of s5 is", "--max_new_tokens", "1"])
    assert sections(capsys.readouterr().out)[record.prompt] == (record.target_true, record.target_new)


class Overflowing(FineTune):
    """An edit whose weights are finite but whose model's logits are not (they overflow float32)."""

    def edit(self, batch):
        return EditedModel(self.model, self.kind, {name: self.base_params()[name] * 1.0e30
                                                   for name in self.editable_names})


def test_an_edit_whose_outputs_are_not_finite_is_refused_and_not_saved(tiny_models, tmp_path, capsys):
    editor = Overflowing(tiny_models["gpt2"])
    with pytest.raises(EditFailedError, match="not finite"):
        run_edits(editor, [("the colour of s1 is", "c3")], [], ["the home of s5 is"], max_new_tokens=1)
    config = tmp_path / "overflowing.yaml"
    model = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    config.write_text(yaml.safe_dump({"model": {"editors": {"ft": {
        "class_path": "test_edit_command.Overflowing", "init_args": {"model": model}}}}}))
    with pytest.raises(SystemExit) as exit_:
        main(["edit", '"the colour of s1 is" -> "c3"', "--config", str(config), "--save", str(tmp_path / "edited")])
    assert exit_.value.code == 1 and "edit failed" in capsys.readouterr().err
    assert not (tmp_path / "edited").exists()


def test_a_bug_in_an_edit_is_raised_not_reported_as_a_failed_edit(ft_config, monkeypatch):
    monkeypatch.setattr(FineTune, "edit", lambda self, batch: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # its traceback is shown, not "edit failed" and status 1
        main(["edit", '"the colour of s1 is" -> "c3"', "--config", ft_config(), "--max_new_tokens", "1"])


def test_every_editor_of_the_edit_config_is_importable_with_its_settings_and_shipped_weights():
    """configs/edit.yaml is what `lit-edit edit` builds by default: each entry's class exists, takes its settings, and
    a trained one names weights that ship with the repository (a fresh clone edits without training)."""
    import inspect

    from lit_edit.edit_command import CONFIG_DIR, editor_class, editor_config
    from lit_edit.pretrained import resolve_editor_path

    config = CONFIG_DIR / "edit.yaml"
    names = yaml.safe_load(config.read_text())["model"]["editors"]
    assert {"ft", "mend", "rome"} <= set(names)
    for name in names:
        spec = editor_config(config, name)
        cls = editor_class(spec)
        assert cls is not None, name
        init_args = spec.get("init_args", {})
        inspect.signature(cls).bind(**init_args)  # every setting is one the class takes
        if "checkpoint" in init_args:
            assert init_args["checkpoint"].startswith("pretrained:"), name
            assert resolve_editor_path(init_args["checkpoint"]).exists(), name
