"""Tokenization (loss only on target tokens), edit batches, data paths and the EditDataModule."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_records, word_tokenizer

from lit_edit.data.batch import SAME_RELATION, SAME_SUBJECT, UNRELATED, PromptTokenizer, select_out_of_scope
from lit_edit.data.datamodule import EditDataModule, group_batches, resolve_data_path
from lit_edit.data.records import LabeledPrompt
from lit_edit.metrics import IGNORE_INDEX
from lit_edit.models import ModelSpec, editable_parameters, load_model


def test_causal_tokenization_labels_only_the_target():
    prompts = PromptTokenizer(word_tokenizer(), "causal")
    examples = prompts([LabeledPrompt("the colour of s1 is", "c5"), LabeledPrompt("s2 lives in", "h1")])
    tok = word_tokenizer()
    assert examples.input_ids.shape == (2, 6)
    assert examples.labels[0].tolist() == [IGNORE_INDEX] * 5 + tok.convert_tokens_to_ids(["c5"])
    assert examples.labels[1].tolist() == [IGNORE_INDEX] * 3 + tok.convert_tokens_to_ids(["h1"]) + [IGNORE_INDEX] * 2
    assert examples.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0]
    assert examples.input_ids[1, 4:].tolist() == [tok.pad_token_id] * 2


def test_seq2seq_tokenization_puts_the_target_in_labels():
    examples = PromptTokenizer(word_tokenizer(), "seq2seq")([LabeledPrompt("the colour of s1 is", "c5")])
    assert examples.input_ids.shape == (1, 5)
    assert examples.labels.tolist() == [word_tokenizer().convert_tokens_to_ids(["c5"])]


def test_edit_batch_parts_and_out_of_scope_disjoint_from_the_batch():
    records = synthetic_records(0)[:4]
    batch = PromptTokenizer(word_tokenizer(), "causal").batch(records)
    assert len(batch) == 4 and len(batch.in_scope) == 12  # each edit: its prompt and 2 paraphrases
    assert batch.in_scope_is_paraphrase.tolist() == [False, True, True] * 4
    in_scope_prompts = {p.prompt for r in records for p in r.in_scope}
    chosen = select_out_of_scope(records)
    assert chosen and not in_scope_prompts & {p.prompt for p in chosen}
    for pair in chosen:  # never about a subject that another edit of the batch changes
        owners = [r for r in records if pair in (*r.out_of_scope, *r.hard_out_of_scope)]
        others = {r.subject for r in records} - {r.subject for r in owners}
        assert not any(s in pair.prompt.split() for s in others)
    # the record's own same-subject, other-relation prompt is kept: it is the hard out-of-scope test
    assert records[0].hard_out_of_scope[0] in chosen


def test_out_of_scope_rows_say_whether_they_are_unrelated_or_which_look_alike():
    record = synthetic_records(0)[0]
    batch = PromptTokenizer(word_tokenizer(), "causal").batch([record])
    chosen = select_out_of_scope([record])
    assert chosen == [*record.out_of_scope, *record.hard_out_of_scope]
    # the far fact; the same subject with the other relation; the same relation with a neighbouring subject
    assert batch.out_of_scope_kind.tolist() == [UNRELATED, SAME_SUBJECT, SAME_RELATION]


def test_chained_edits_are_never_split_across_evaluation_batches():
    from dataclasses import replace
    base = synthetic_records()[:7]
    groups = [None, "a", "a", None, "b", "b", "b"]  # sizes 1, 2, 1, 3
    records = [replace(r, group=g) for r, g in zip(base, groups, strict=True)]
    assert group_batches(records, 1) == [[0], [1, 2], [3], [4, 5, 6]]
    assert group_batches(records, 3) == [[0, 1, 2], [3], [4, 5, 6]]  # packed whole, never cut
    assert group_batches(records, 4) == [[0, 1, 2, 3], [4, 5, 6]]
    assert group_batches(base, 3) == [[0, 1, 2], [3, 4, 5], [6]]  # no groups: plain batches of k


def test_portability_questions_are_tokenized_with_the_batch():
    tokenizer = PromptTokenizer(word_tokenizer())
    first, second = synthetic_records()[:2]
    question = LabeledPrompt(second.prompt, second.target_new)
    from dataclasses import replace
    batch = tokenizer.batch([replace(first, portability=(question,)), second])
    assert batch.portability is not None and len(batch.portability) == 1
    assert torch.equal(batch.portability.labels, tokenizer([question]).labels)
    assert tokenizer.batch([first, second]).portability is None


def test_datamodule_is_seeded_and_reproducible(tiny_models, synthetic_splits):
    def first_batches(seed: int) -> list[torch.Tensor]:
        data = EditDataModule(**{k: str(v) for k, v in synthetic_splits.items()}, model=tiny_models["gpt2"],
                              edits_per_batch=3, seed=seed)
        return [b.edit.input_ids for _, b in zip(range(3), data.train_dataloader(), strict=False)]

    same = first_batches(0), first_batches(0)
    assert all(torch.equal(a, b) for a, b in zip(*same, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same[0], first_batches(1), strict=False))


def test_data_paths_and_slices(tmp_path, monkeypatch):
    path, window = resolve_data_path("builtin:test#0:5")
    assert path.name == "test.json" and path.exists() and window == slice(0, 5)
    monkeypatch.setenv("LIT_EDIT_DATA_DIR", str(tmp_path))
    assert resolve_data_path("shared:zsre/x.json")[0] == tmp_path / "zsre" / "x.json"
    with pytest.raises(ValueError, match="start:stop"):
        resolve_data_path("builtin:test#five")
    data = EditDataModule(test="builtin:test#10:14")
    assert [r.case_id for r in data.records("test")] == [f"builtin-test-{i:04d}" for i in range(10, 14)]


def test_editable_patterns_select_weights_and_reject_typos(tiny_models):
    model = load_model(tiny_models["llama"])
    chosen = editable_parameters(model, ["model.layers.*.mlp.down_proj.weight"])
    assert list(chosen) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="matches no parameter"):
        editable_parameters(model, ["model.layers.*.mlp.down_prj.weight"])


def test_model_spec_validates_its_fields():
    with pytest.raises(ValueError, match="kind"):
        ModelSpec(kind="encoder")
    with pytest.raises(ValueError, match="dtype"):
        ModelSpec(dtype="float33")
