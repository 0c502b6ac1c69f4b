"""Every bad input is named (issue 21): empty or inverted data slices, prompts and generations past the model's
context, undecodable or too deeply nested files, paths that leave the data folders, chained-edit files whose every
hop is edited (MQuAKE-hard), and out-of-range trace settings."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytest
from conftest import word_tokenizer
from transformers import GPT2Config, LlamaConfig, T5Config

from lit_edit import trace_command
from lit_edit.data.batch import PromptTokenizer, context_length
from lit_edit.data.datamodule import EditDataModule, load_split, resolve_data_path
from lit_edit.data.readers import iter_json_records, load_edit_records, read_mquake, read_references
from lit_edit.data.records import EditDataError, LabeledPrompt
from lit_edit.editors.base import Editor
from lit_edit.editors.edited_model import aligned_logits
from lit_edit.errors import ConfigurationError, UserInputError
from lit_edit.generation import greedy_completion
from lit_edit.report import ResultsFileError, load_results
from lit_edit.tracing import Fact, Tracer, read_known_facts

FIXTURES = Path(__file__).parent / "fixtures"
LONG_PROMPT = " ".join(["alpha", "beta", "gamma", "delta"] * 20) + " the colour of s1 is"  # 85 words


# -- item 6: a data option that selects no records ------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["builtin:test#5:2", "builtin:test#3:3", "builtin:test#100000:100001",
                                  "builtin:test#-2:-5"])
def test_a_split_that_selects_no_records_is_refused_at_setup(spec: str) -> None:
    data = EditDataModule(test=spec)
    with pytest.raises(ConfigurationError, match=f"--data.test '{spec}'.*selects no records|--data.test '{spec}'.*keeps none"):
        data.setup("test")


def test_an_empty_data_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]\n")
    with pytest.raises(EditDataError, match="empty.json: holds no records"):
        EditDataModule(test=str(empty)).setup("test")
    with pytest.raises(ConfigurationError, match="--data.test .*empty.json.*holds no records"):
        EditDataModule(test=str(empty), format="lit_edit").setup("test")
    with pytest.raises(ConfigurationError, match=r"limit_test must be >= 1, got 0 \(--data.limit_test\)"):
        EditDataModule(limit_test=0)
    with pytest.raises(ConfigurationError, match="--data.format"):
        load_split("builtin:test", format="zsre")


# -- item 12: max_length, prompts and generation within the model's context -------------------------------------------
def test_context_length_comes_from_the_config() -> None:
    assert context_length(GPT2Config(n_positions=64)) == 64
    assert context_length(LlamaConfig(max_position_embeddings=8192)) == 8192
    assert context_length(T5Config()) is None  # relative positions: no fixed limit


def test_a_truncated_prompt_is_named_once_with_the_tokens_it_lost() -> None:
    prompts = PromptTokenizer(word_tokenizer(), "causal", max_length=128, context_length=64)
    assert prompts.max_length == 64
    pairs = [LabeledPrompt(LONG_PROMPT, "c1"), LabeledPrompt("the colour of s2 is", "c2")]
    with pytest.warns(UserWarning, match=r"1 prompt\(s\) longer than max_length 64 \(the model's context; 128 was "
                                         r"asked\) lost their start: 'alpha beta.*\(22 of 85 tokens dropped\)"):
        examples = prompts(pairs)
    assert examples.input_ids.shape[1] == 64 and examples.labels[0, -1] != -100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same prompt again: already named
        prompts(pairs)
    with pytest.raises(ConfigurationError, match="leaves no room for its prompt"):
        PromptTokenizer(word_tokenizer(), "causal", max_length=2)([LabeledPrompt("s1", "c1 c2")])
    with pytest.raises(ConfigurationError, match="max_length must be at least 2"):
        PromptTokenizer(word_tokenizer(), "causal", max_length=0)


def test_an_editor_scores_a_long_prompt_on_a_64_position_model(tiny_models) -> None:
    editor = Editor(model=tiny_models["gpt2"])  # 64 positions; max_length defaults to 128
    assert editor.prompts.max_length == 64
    with pytest.warns(UserWarning, match="lost their start"):
        examples = editor.prompts([LabeledPrompt(LONG_PROMPT, "c1")])
    logits, labels = aligned_logits(editor.model, examples, "causal")  # was an IndexError in the position table
    assert logits.shape[:2] == labels.shape


def test_generation_stops_at_the_context(tiny_models) -> None:
    editor = Editor(model=tiny_models["gpt2"])
    near_the_end = " ".join(["alpha"] * 60)
    with pytest.warns(UserWarning, match="stops after 4 of the 12 new tokens asked: the model's context is 64"):
        assert len(greedy_completion(editor.model, editor.tokenizer, "causal", near_the_end, 12).split()) <= 4
    with pytest.warns(UserWarning, match=r"'alpha beta.*is 85 tokens, more than the model's context of 64: its "
                                         r"first 33 tokens are dropped to generate 12"):
        greedy_completion(editor.model, editor.tokenizer, "causal", LONG_PROMPT, 12)


def test_tracing_refuses_a_prompt_past_the_context(tiny_models) -> None:
    editor = Editor(model=tiny_models["gpt2"])
    with pytest.raises(EditDataError, match="85 tokens, more than the model's context of 64"):
        Tracer(editor.model, editor.tokenizer).trace(Fact(LONG_PROMPT, "s1", "c1"), noise=1.0, samples=1, window=1)


# -- item 14: undecodable and too deeply nested files -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_bytes_that_are_not_utf8_are_located(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(b'[\n{"prompt": "a", "target": "b"},\n{"prompt": "caf\xe9", "target": "b"}\n]\n' if suffix == ".json"
                     else b'{"prompt": "a", "target": "b"}\n{"prompt": "caf\xe9", "target": "b"}\n')
    line = 3 if suffix == ".json" else 2
    with pytest.raises(EditDataError, match=rf"latin1{suffix}: line {line}: byte 0xe9 at column \d+ is not UTF-8"):
        load_edit_records(path)
    with pytest.raises(EditDataError, match=f"latin1{suffix}: line {line}"):
        read_known_facts(str(path))


def test_too_deeply_nested_json_is_located(tmp_path: Path) -> None:
    for name, text in (("deep.json", "[\n" + "[" * 100_000 + "]" * 100_000 + "\n]"),
                       ("deep.jsonl", '{"prompt": "a", "target": "b"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(EditDataError, match=rf"{name}: record \d \(line 2\).*nested too deeply"):
            list(iter_json_records(tmp_path / name))
    (tmp_path / "refs.json").write_bytes(b'{"Paris": ["caf\xe9"]}')
    with pytest.raises(EditDataError, match="refs.json: line 1: byte 0xe9"):
        read_references(tmp_path / "refs.json")


def test_trace_command_names_an_undecodable_facts_file(tiny_models, tmp_path: Path, capsys) -> None:
    facts = tmp_path / "known.json"
    facts.write_bytes(b'[{"prompt": "caf\xe9 s1", "subject": "s1", "attribute": "c1"}]')
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        trace_command.main(parser.parse_args(["--model", tiny_models["gpt2"].name, "--facts", str(facts)]), parser)
    assert exit_info.value.code == 2
    assert "known.json: line 1: byte 0xe9" in capsys.readouterr().err


def test_report_names_a_file_that_is_not_results(tmp_path: Path) -> None:
    cases = {"notes.json": (b"first line\nnot json", "notes.json: line 1: not JSON"),
             "latin1.json": (b'[\n"caf\xe9"]', "latin1.json: line 2: not UTF-8"),
             "object.json": (b'{"editor": "FT"}', "expected evaluate.py's results, a JSON list"),
             "rows.json": (b'[{"metrics": {}}]', "record 0 is not an editor record"),
             "log.jsonl": (b'{"fingerprint": "{}"}\n{"x": 1}\n', "log.jsonl: not a per-batch log")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ResultsFileError, match=message):
            load_results([tmp_path / name])
    with pytest.raises(UserInputError, match="gone.json: no such results file"):
        load_results([tmp_path / "gone.json"])


# -- item 15: shared: and builtin: stay inside their folders --------------------------------------------------------
def test_data_prefixes_are_confined_to_their_folders(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    (root / "zsre").mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text("[]")
    monkeypatch.setenv("LIT_EDIT_DATA_DIR", str(root))
    for spec in ("shared:../../../../etc/passwd", "shared:../secret.json", "shared:/etc/passwd",
                 "builtin:../../../README", "builtin:/etc/passwd"):
        with pytest.raises(ConfigurationError, match=f"--data.test '{spec}'.*outside"):
            resolve_data_path(spec, "--data.test")
    (root / "zsre" / "escape.json").symlink_to(secret)  # a link inside the folder to a file outside it
    with pytest.raises(ConfigurationError, match="escape.json.*resolves to .*secret.json"):
        resolve_data_path("shared:zsre/escape.json")
    (root / "zsre" / "x.json").write_text("[]")
    (root / "zsre" / "alias.json").symlink_to(root / "zsre" / "x.json")  # inside: fine
    assert resolve_data_path("shared:zsre/alias.json")[0] == root / "zsre" / "alias.json"
    with pytest.raises(FileNotFoundError, match="no builtin edit set 'tset'.*test, train, val"):
        resolve_data_path("builtin:tset")


# -- item 17: MQuAKE-hard, every hop of every chain edited ----------------------------------------------------------
def test_mquake_hard_chains_borrow_out_of_scope_facts_from_other_chains() -> None:
    records = read_mquake(FIXTURES / "mquake_hard.json")
    assert records == read_mquake(FIXTURES / "mquake_hard.json")  # deterministic
    chains = {}
    for record in records:
        chains.setdefault(record.group, []).append(record)
    assert list(chains) == ["7417", "7418", "7419"]
    prompts = PromptTokenizer(word_tokenizer())
    for group, chain in chains.items():
        (borrowed,) = chain[0].out_of_scope
        subjects = [r.subject for r in chain]
        assert not any(s in borrowed.prompt for s in subjects)  # "Aldo Brenn" is in 7417 and 7418: not shared
        owner = next(r for r in records if r.prompt == borrowed.prompt)
        assert owner.group != group and borrowed.target == owner.target_true  # the other chain's fact, unedited
        batch = prompts.batch(chain)  # was: "have no out-of-scope prompt that avoids the batch's subjects"
        assert len(batch.out_of_scope) == 1


@pytest.mark.parametrize("edits_per_batch", [1, 4])
def test_mquake_hard_runs_through_the_test_loader(edits_per_batch: int) -> None:
    data = EditDataModule(test=str(FIXTURES / "mquake_hard.json"), eval_edits_per_batch=edits_per_batch)
    data._prompts = PromptTokenizer(word_tokenizer())
    batches = list(data.test_dataloader())
    assert sum(len(b) for b in batches) == 7 and all(len(b.out_of_scope) >= 1 for b in batches)


# -- trace settings are refused when parsed, before the model loads ---------------------------------------------------
@pytest.mark.parametrize("flags", [["--window", "0"], ["--samples", "0"], ["--limit", "0"], ["--noise-scale", "0"],
                                   ["--noise", "-1"], ["--window", "two"], ["--noise-scale", "nan"], ["--seed", "-1"]])
def test_trace_settings_out_of_range_are_refused_at_parsing(flags: list[str], capsys) -> None:
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--prompt", "p s1", "--subject", "s1", *flags])
    assert exit_info.value.code == 2 and f"argument {flags[0]}" in capsys.readouterr().err


def test_an_empty_facts_slice_is_refused(tmp_path: Path) -> None:
    facts = tmp_path / "known.json"
    facts.write_text(json.dumps([{"prompt": "the colour of s1 is", "subject": "s1", "attribute": "c1"}]))
    with pytest.raises(ConfigurationError, match="--facts .*#1:5.*keeps none"):
        read_known_facts(f"{facts}#1:5", "--facts")


@pytest.mark.parametrize(("flags", "message"), [
    (["--prompt", "p s1", "--subject", "s1", "--limit", "3"], "--limit: only with --facts"),
    (["--facts", "builtin:test", "--answer", "c1"], "--answer: only with --prompt"),
])
def test_trace_flags_of_the_other_mode_are_refused_before_loading(flags: list[str], message: str, capsys) -> None:
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    with pytest.raises(SystemExit):
        trace_command.main(parser.parse_args(["--model", "/nowhere/model", *flags]), parser)
    assert message in capsys.readouterr().err


def test_trace_command_refuses_a_prompt_past_the_context_before_loading(tiny_models, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    args = parser.parse_args(["--model", tiny_models["gpt2"].name, "--prompt", LONG_PROMPT, "--subject", "s1",
                              "--out", str(tmp_path / "trace")])
    with pytest.raises(SystemExit):
        trace_command.main(args, parser)
    assert "is 85 tokens, more than the model's context of 64" in capsys.readouterr().err
