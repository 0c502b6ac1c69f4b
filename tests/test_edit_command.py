"""``lit-edit edit``: edits written on the command line, generations before and after, the saved model."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import synthetic_records, true_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_edit.__main__ import main
from lit_edit.edit_command import EditSyntaxError, parse_edit


@pytest.mark.parametrize(("text", "expected"), [
    ('"The Mona Lisa was painted by" -> " Picasso"', ("The Mona Lisa was painted by", "Picasso")),
    ('  "the colour of s1 is"->"c3"  ', ("the colour of s1 is", "c3")),
    ("the colour of s1 is -> c3", ("the colour of s1 is", "c3")),
])
def test_edits_are_read_from_their_written_form(text, expected):
    assert parse_edit(text) == expected


@pytest.mark.parametrize("text", ['"The Mona Lisa was painted by" Picasso', '"prompt" -> ""', '"a" -> "b" -> "c"',
                                  "no arrow here", '"unclosed -> "x"'])
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
