"""WikiText generation editing (MEND's WikiText task): the builder, the reader, the metrics and an FT edit, on a tiny
GPT-2 and passages made of the fixture vocabulary."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, WORDS

from lit_edit.cli import CONFIG_DIR, evaluate_main
from lit_edit.config_files import load_config
from lit_edit.data.datamodule import load_split
from lit_edit.data.readers import load_edit_records
from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt
from lit_edit.data.wikitext import passage_prompt, read_wikitext_edits, write_wikitext_edits
from lit_edit.editors import FineTune
from lit_edit.evaluation.generation_metrics import (
    LikelihoodEditSuccess,
    LogLikelihoodGain,
    PerplexityDrawdown,
    likelihood_edit_success,
    log_likelihood_gain,
    perplexity_drawdown,
)
from lit_edit.evaluation.metrics import IGNORE_INDEX


def load_builder():
    """scripts/build_wikitext_edits.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_wikitext_edits", REPO / "scripts" / "build_wikitext_edits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


VOCAB = [w for w in WORDS if w.isalnum()]


def passage(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))


def raw_file(path: Path, passages: int = 12) -> Path:
    """A WikiText-like raw file: headings, passages of 14-18 words, a short line and a non-ASCII one (skipped)."""
    rng = random.Random(0)
    lines = ["", " = alpha beta = ", ""]
    lines += [f" {passage(rng, rng.randint(14, 18))} " for _ in range(passages)]
    lines += [" alpha beta gamma ", " " + passage(rng, 16) + " caf\u00e9 ", " = = gamma = = "]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


BUILD_ARGS = ["--edits", "6", "--passages", "4", "--out-of-scope", "2", "--n-tokens", "3", "--min-words", "12",
              "--prefix-words", "4", "8", "--max-prompt-tokens", "20", "--max-passage-tokens", "24",
              "--passage-prompt-words", "2", "--batch-size", "4", "--seed", "3"]


def test_the_builder_writes_a_readable_reproducible_set_of_the_models_own_continuations(tiny_models, tmp_path):
    builder = load_builder()
    raw = raw_file(tmp_path / "wiki.test.raw")
    args = ["--raw", str(raw), "--model", tiny_models["gpt2"].name, *BUILD_ARGS]
    builder.main([*args, "--out", str(tmp_path / "edits.json")])
    builder.main([*args, "--out", str(tmp_path / "again.jsonl")])

    records = load_edit_records(tmp_path / "edits.json", "wikitext_edits")
    assert records == read_wikitext_edits(tmp_path / "again.jsonl")  # seeded: the same edits, either layout
    header = json.loads((tmp_path / "edits.json").read_text().split("\n")[1].rstrip(","))
    assert header["seed"] == 3 and "--edits 6" in header["command"] and header["n_tokens"] == 3
    assert header["source_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", header["base_model_sha256"])

    lines = [line.strip() for line in raw.read_text().split("\n")]
    tokenizer = FineTune(tiny_models["gpt2"]).tokenizer
    edited_lines = {int(record.case_id.removeprefix("w")) for record in records}
    assert len(records) == len(edited_lines) == 6
    for record in records:
        assert lines[int(record.case_id[1:]) - 1].startswith(record.prompt + " ")  # x_e: a prefix of its passage
        (rephrase,) = record.paraphrases
        assert record.prompt.endswith(" " + rephrase)  # x'_e: x_e without its first words
        assert len(tokenizer(" " + record.target_new, add_special_tokens=False)["input_ids"]) == 3
        assert len(record.out_of_scope) == 2
        for pair in record.out_of_scope:
            assert len(pair.prompt.split()) == 2
            owner = next(i for i, line in enumerate(lines, 1) if line.startswith(f"{pair.prompt} {pair.target}"))
            assert owner not in edited_lines  # the pool is disjoint from the edited passages


def test_evaluate_py_runs_the_wikitext_config_on_a_built_set(tiny_models, tmp_path, monkeypatch, capsys):
    """configs/evaluate/wikitext.yaml end to end on a tiny GPT-2 (the editors that need no trained checkpoint)."""
    raw = raw_file(tmp_path / "wiki.test.raw")
    load_builder().main(["--raw", str(raw), "--model", tiny_models["gpt2"].name, *BUILD_ARGS,
                         "--out", str(tmp_path / "edits.json")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    config = load_config(CONFIG_DIR / "evaluate" / "wikitext.yaml")
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    config["model"]["editors"] = {name: config["model"]["editors"][name] for name in ("unedited", "ft", "cache")}
    for editor in config["model"]["editors"].values():
        editor.setdefault("init_args", {})["model"] = spec
    config["data"].update(test=str(tmp_path / "edits.json"), limit_test=3)
    config["trainer"].update(logger=False, callbacks=[])
    (tmp_path / "wikitext.yaml").write_text(yaml.safe_dump(config))
    evaluate_main(["--config", str(tmp_path / "wikitext.yaml")], default_config=None)
    assert "| editor | ES | paraphrase ES" in capsys.readouterr().out
    results = {r["editor"]: r for r in json.loads((tmp_path / "results" / "evaluate_wikitext.json").read_text())}
    assert results["ft"]["edits"] == 3 and results["ft"]["failed_edits"] == 0
    assert results["unedited"]["metrics"]["es"] == 0.0  # (seeded) none of these samples is the argmax


def test_the_builder_skips_headings_short_and_non_ascii_lines(tmp_path):
    found = load_builder().candidate_passages(raw_file(tmp_path / "raw.txt", passages=3), min_words=12)
    assert [line for line, _ in found] == [4, 5, 6]


# -- reader ------------------------------------------------------------------------------------------------------


PASSAGES = {"p1": "alpha beta gamma delta", "p2": "omega s1 s2 s3 s4"}


def edit_rows() -> list[dict]:
    return [
        {"case_id": "w7", "prefix": "the colour of s1 is", "continuation": "c1 c2", "rephrase": "of s1 is",
         "original": "c3", "out_of_scope": ["p1", "p2"]},
        {"case_id": "w9", "prefix": "the home of s2 is", "continuation": "h1 h2", "rephrase": "s2 is",
         "out_of_scope": ["p2"]},
    ]


def write_small(path: Path, edits: list[dict] | None = None, header: dict | None = None,
                passages: dict | None = None) -> Path:
    return write_wikitext_edits(path, header or {"passage_prompt_words": 2, "n_tokens": 2},
                                PASSAGES if passages is None else passages, edit_rows() if edits is None else edits)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_the_reader_round_trips_edits_with_their_passages(tmp_path, suffix):
    path = write_small(tmp_path / f"edits{suffix}")
    far, near = LabeledPrompt("alpha beta", "gamma delta"), LabeledPrompt("omega s1", "s2 s3 s4")
    assert load_edit_records(path, "wikitext_edits") == [
        EditRecord("w7", "the colour of s1 is", "c1 c2", target_true="c3", paraphrases=("of s1 is",),
                   out_of_scope=(far, near)),
        EditRecord("w9", "the home of s2 is", "h1 h2", paraphrases=("s2 is",), out_of_scope=(near,)),
    ]


def broken(rows: list[dict], row: int, **changes: object) -> list[dict]:
    rows[row] = {k: v for k, v in {**rows[row], **changes}.items() if v is not None}
    return rows


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize(("edits", "record", "field", "problem"), [
    (broken(edit_rows(), 0, continuation=None), 3, "continuation", "missing"),
    (broken(edit_rows(), 1, prefix=3), 4, "prefix", "expected a non-empty string"),
    (broken(edit_rows(), 1, out_of_scope=["p2", "p9"]), 4, "out_of_scope[1]", "names no passage of this file: 'p9'"),
    (broken(edit_rows(), 0, out_of_scope=[]), 3, "out_of_scope", "at least one passage"),
    (broken(edit_rows(), 0, rephrase=[""]), 3, "rephrase", "expected a non-empty string"),
])
def test_a_malformed_edit_is_named_by_file_record_line_and_field(tmp_path, suffix, edits, record, field, problem):
    path = write_small(tmp_path / f"edits{suffix}", edits)
    line = record + (2 if suffix == ".json" else 1)  # a JSON array's first line is its '['
    with pytest.raises(EditDataError, match=rf"^{re.escape(str(path))}: record {record} \(line {line}\): "
                                            rf"field '{re.escape(field)}': .*{re.escape(problem)}"):
        load_edit_records(path, "wikitext_edits")


def test_a_bad_header_or_passage_is_named_too(tmp_path):
    path = write_small(tmp_path / "edits.jsonl")
    rows = path.read_text().splitlines()
    path.write_text("\n".join([json.dumps({"wikitext_edits": 2, "passage_prompt_words": 2}), *rows[1:]]) + "\n")
    with pytest.raises(EditDataError, match=r"record 0 \(line 1\): field 'wikitext_edits': .*header.*got 2"):
        read_wikitext_edits(path)
    path = write_small(tmp_path / "edits.jsonl", header={"passage_prompt_words": 0})
    with pytest.raises(EditDataError, match=r"record 0 \(line 1\): field 'passage_prompt_words': .*positive integer"):
        read_wikitext_edits(path)
    path = write_small(tmp_path / "edits.jsonl", passages={"p1": "alpha beta", "p2": PASSAGES["p2"]})
    with pytest.raises(EditDataError, match=r"record 1 \(line 2\): field 'text': .*more than 2 words"):
        read_wikitext_edits(path)
    path.write_text(rows[0] + "\n" + json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(EditDataError, match=r"record 1 \(line 2\): field '<record>': expected a passage"):
        read_wikitext_edits(path)


def test_skip_invalid_drops_a_malformed_edit_with_a_warning(tmp_path):
    path = write_small(tmp_path / "edits.jsonl", broken(edit_rows(), 0, continuation=None))
    with pytest.warns(UserWarning, match=r"skipping malformed record: .*field 'continuation'"):
        records = read_wikitext_edits(path, skip_invalid=True)
    assert [r.case_id for r in records] == ["w9"]


def test_a_passage_is_scored_after_its_first_words():
    assert passage_prompt(" alpha  beta gamma delta ", 1) == LabeledPrompt("alpha", "beta gamma delta")
    with pytest.raises(ValueError, match="more than 4 words"):
        passage_prompt("alpha beta gamma delta", 4)


def test_the_shipped_set_reads_and_says_how_it_was_made():
    records = load_split("builtin:wikitext", "wikitext_edits")
    assert len(records) == 500 and len({r.case_id for r in records}) == 500
    assert all(len(r.paraphrases) == 1 and len(r.out_of_scope) == 4 for r in records)
    header = json.loads((REPO / "lit_edit" / "data" / "builtin" / "wikitext.json").read_text().split("\n")[1]
                        .rstrip(","))
    assert header["seed"] == 0 and header["command"].startswith("python scripts/build_wikitext_edits.py")
    assert header["base_model"] == "smollm2-135m" and header["n_tokens"] == 10
    assert header["source_sha256"].startswith("4f3e427e")  # WikiText-2 raw test (../shared/data/README.md)



def test_the_shipped_training_set_comes_from_the_validation_split_and_shares_no_passage_with_the_test_set():
    """configs/train/mend_wikitext.yaml trains on builtin:wikitext_train (WikiText-2 validation) and is evaluated on
    builtin:wikitext (the test split): no edit prefix or out-of-scope passage of one is in the other."""
    train = load_split("builtin:wikitext_train", "wikitext_edits")
    test = load_split("builtin:wikitext", "wikitext_edits")
    assert len(train) == 300 and len({r.case_id for r in train}) == 300
    header = json.loads((REPO / "lit_edit" / "data" / "builtin" / "wikitext_train.json").read_text().split("\n")[1]
                        .rstrip(","))
    assert header["source"].endswith("wikitext-2-valid.tokens.txt") and header["seed"] == 0

    def texts(records):
        return {r.prompt for r in records} | {p.prompt + " " + p.target for r in records for p in r.out_of_scope}

    assert not texts(train) & texts(test)

def test_the_wikitext_evaluation_config_parses(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--config", str(CONFIG_DIR / "evaluate" / "wikitext.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert set(printed["model"]["editors"]) == {"unedited", "ft", "ft_kl", "mend", "enn", "cache"}
    assert printed["data"]["test"] == "builtin:wikitext" and printed["data"]["format"] == "wikitext_edits"


# -- metrics -----------------------------------------------------------------------------------------------------


def logits_of(probabilities: list[list[list[float]]]) -> torch.Tensor:
    """Logits whose softmax is the given distributions ``[rows][positions][vocab]``."""
    return torch.tensor(probabilities).log()


def at(p: float) -> list[float]:
    """A distribution over 4 tokens giving the target (token 0) probability ``p``."""
    return [p, *[(1 - p) / 3] * 3]


# Per row, p(target) at its two labelled positions (position 0 is the prompt). Row 3 has no labelled position.
PRE = logits_of([[at(.5), at(1 / 2), at(1 / 2)], [at(.5), at(1 / 4), at(1 / 4)], [at(.5), at(1 / 8), at(1 / 8)],
                 [at(.5), at(.5), at(.5)]])
POST = logits_of([[at(.5), at(1 / 4), at(1 / 4)], [at(.5), at(1 / 4), at(1 / 8)], [at(.5), at(1 / 2), at(1 / 2)],
                  [at(.5), at(.9), at(.9)]])
LABELS = torch.tensor([[IGNORE_INDEX, 0, 0]] * 3 + [[IGNORE_INDEX] * 3])
# Mean NLL per token (units of ln 2): before 1, 2, 3; after 2, 2.5, 1. Only row 2's target became more likely.
# Gains: -1, -0.5, +2 -> mean ln2 / 6. Perplexity pooled over the 6 tokens: before 2^(12/6) = 4, after 2^(11/6).


def test_generation_es_and_perplexity_drawdown_match_a_hand_computation():
    assert likelihood_edit_success(PRE, POST, LABELS).item() == pytest.approx(1 / 3)
    assert log_likelihood_gain(PRE, POST, LABELS).item() == pytest.approx(math.log(2) / 6, rel=1e-5)
    assert perplexity_drawdown(PRE, POST, LABELS).item() == pytest.approx(2 ** (11 / 6) / 4 - 1, rel=1e-5)
    assert perplexity_drawdown(POST, PRE, LABELS).item() == pytest.approx(4 / 2 ** (11 / 6) - 1, rel=1e-5)


def test_an_unchanged_target_is_no_success_and_nothing_seen_is_nan():
    assert likelihood_edit_success(PRE, PRE, LABELS).item() == 0.0
    assert log_likelihood_gain(PRE, PRE, LABELS).item() == 0.0 and perplexity_drawdown(PRE, PRE, LABELS).item() == 0.0
    nothing = torch.full_like(LABELS, IGNORE_INDEX)
    assert likelihood_edit_success(PRE, POST, nothing).isnan() and log_likelihood_gain(PRE, POST, nothing).isnan()


@pytest.mark.parametrize(("metric_class", "function"), [(LikelihoodEditSuccess, likelihood_edit_success),
                                                         (LogLikelihoodGain, log_likelihood_gain),
                                                         (PerplexityDrawdown, perplexity_drawdown)])
def test_the_metric_classes_accumulate_to_the_function_of_all_rows(metric_class, function):
    metric = metric_class()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().isnan()
    for rows in (slice(0, 1), slice(1, 4)):
        metric.update(PRE[rows], POST[rows], LABELS[rows])
    assert metric.compute().item() == pytest.approx(function(PRE, POST, LABELS).item(), rel=1e-6)


# -- an edit -----------------------------------------------------------------------------------------------------


def test_an_ft_edit_makes_the_continuation_likelier_at_a_measurable_perplexity_cost(tiny_models):
    rng = random.Random(1)
    record = EditRecord("w1", prompt="alpha beta gamma s1 s2 s3", target_new="c1 h2 omega",
                        paraphrases=("gamma s1 s2 s3",),
                        out_of_scope=tuple(passage_prompt(passage(rng, 16), 2) for _ in range(4)))
    editor = FineTune(tiny_models["gpt2"], steps=10, lr=1.0e-2)
    batch = editor.prompts.batch([record])
    pre_in, in_labels = editor.logits(batch.in_scope)
    pre_out, out_labels = editor.logits(batch.out_of_scope)
    assert (out_labels != IGNORE_INDEX).sum() == 4 * 14  # every passage word after the first two is scored
    edited = editor.edit(batch)
    with torch.no_grad():
        post_in, _ = editor.logits(batch.in_scope, edited)
        post_out, _ = editor.logits(batch.out_of_scope, edited)
    assert likelihood_edit_success(pre_in, post_in, in_labels).item() == 1.0  # x_e and x'_e
    assert log_likelihood_gain(pre_in, post_in, in_labels).item() > 0.5
    drawdown = perplexity_drawdown(pre_out, post_out, out_labels).item()
    assert math.isfinite(drawdown) and abs(drawdown) > 1e-3
    assert perplexity_drawdown(pre_out, pre_out, out_labels).item() == 0.0
