"""SERAC and the edit cache on tiny random models: the memory, the scope classifier, routing, the threshold."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import SUBJECTS, synthetic_records, word_tokenizer
from lightning.pytorch import Trainer
from transformers import BertConfig, BertModel

from lit_edit.data.batch import PromptTokenizer
from lit_edit.data.datamodule import EditDataModule
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import SERAC, EditCache, EditFailedError, EditScores
from lit_edit.editors.counterfactual import CounterfactualModel
from lit_edit.editors.memory import EditDescriptor, EditMemory, MemoryFileError
from lit_edit.editors.routed import NO_EDIT, RoutedModel, Routing
from lit_edit.editors.scope_classifier import ScopeClassifier, scope_pairs
from lit_edit.generation import greedy_completion
from lit_edit.metrics import edit_success

TRAIN, TEST = synthetic_records(0, SUBJECTS[:34]), synthetic_records(2, SUBJECTS[34:])


def descriptors(n: int) -> list[EditDescriptor]:
    return [EditDescriptor(str(i), f"prompt {i}", f"target {i}") for i in range(n)]


# -- the edit memory ---------------------------------------------------------------------------------
def test_memory_nearest_is_batched_top1_and_matches_brute_force():
    torch.manual_seed(0)
    for metric in ("cosine", "l2"):
        memory = EditMemory(8, metric)
        keys = torch.randn(50, 8)
        memory.add(descriptors(50), keys)
        queries = torch.randn(7, 8)
        score, index = memory.nearest(queries)
        for q, s, i in zip(queries, score, index, strict=True):
            if metric == "cosine":
                brute = torch.stack([torch.nn.functional.cosine_similarity(q, k, dim=0) for k in keys])
                assert int(i) == int(brute.argmax()) and float(s) == pytest.approx(float(brute.max()), abs=1e-5)
            else:
                brute = torch.stack([(q - k).norm() for k in keys])
                assert int(i) == int(brute.argmin()) and float(s) == pytest.approx(float(brute.min()), abs=1e-4)


def test_l2_memory_finds_a_stored_key_at_distance_exactly_zero():
    memory = EditMemory(64, "l2")
    keys = torch.randn(50, 64) * 30  # hidden-state-sized values, many rows: where |q|²+|k|²-2q·k loses precision
    memory.add(descriptors(50), keys)
    distance, index = memory.nearest(keys[:40])
    assert torch.equal(distance, torch.zeros(40)) and torch.equal(index, torch.arange(40))


def test_memory_save_load_remove_round_trip(tmp_path):
    memory = EditMemory(4, "l2")
    keys = torch.arange(12.0).reshape(3, 4)
    memory.add(descriptors(3), keys)
    path = memory.save(tmp_path / "memory.pt")
    loaded = EditMemory.load(path)
    assert loaded.descriptors == memory.descriptors and torch.equal(loaded.keys, keys) and loaded.metric == "l2"
    removed = loaded.remove("1")
    assert removed == EditDescriptor("1", "prompt 1", "target 1")
    assert [d.case_id for d in loaded.descriptors] == ["0", "2"]
    assert torch.equal(loaded.keys, keys[[0, 2]])
    _, index = loaded.nearest(keys[2:3])  # the removed edit's neighbour is found at its new position
    assert loaded.descriptors[int(index)].case_id == "2"
    loaded.save(path)
    again = EditMemory.load(path)
    assert [d.case_id for d in again.descriptors] == ["0", "2"] and torch.equal(again.keys, keys[[0, 2]])
    with pytest.raises(KeyError, match="'1'"):
        again.remove("1")


def test_failed_add_keeps_everything_stored():
    memory = EditMemory(4, "cosine")
    memory.add(descriptors(2), torch.randn(2, 4))
    before_keys, before = memory.keys.clone(), list(memory.descriptors)
    bad = torch.randn(3, 4)
    bad[2, 1] = float("nan")
    for keys, match in ((bad, "finite"), (torch.randn(2, 4), "descriptors"), (torch.randn(3, 5), "keys must be")):
        with pytest.raises(ValueError, match=match):
            memory.add(descriptors(3), keys)
        assert torch.equal(memory.keys, before_keys) and memory.descriptors == before


def test_corrupt_memory_file_names_the_file_and_a_crashed_save_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "memory.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(MemoryFileError, match=str(path)):
        EditMemory.load(path)
    with pytest.raises(MemoryFileError, match="no edit memory file"):
        EditMemory.load(tmp_path / "missing.pt")
    memory = EditMemory(4, "l2")
    memory.add(descriptors(2), torch.randn(2, 4))
    memory.save(path)
    memory.add([EditDescriptor("9", "p", "t")], torch.randn(1, 4))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        memory.save(path)
    monkeypatch.undo()
    assert len(EditMemory.load(path)) == 2  # the previous file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.pt"]  # no temporary left behind


def test_empty_memory_finds_nothing():
    score, index = EditMemory(4, "cosine").nearest(torch.randn(3, 4))
    assert torch.equal(index, torch.full((3,), -1)) and torch.isinf(score).all()


# -- the cache -----------------------------------------------------------------------------------------
RECORD = EditRecord(case_id="0", prompt="the colour of s1 is", target_new="c5", subject="s1",
                    paraphrases=("s1 has the colour",),
                    out_of_scope=(LabeledPrompt("the home of s9 is", "h2"), LabeledPrompt("where does s3 live ? in", "h1")))


def test_cache_threshold_on_hand_built_hidden_states(tiny_models, monkeypatch):
    cache = EditCache(tiny_models["gpt2"], epsilon=1.0)
    batch = cache.prompts.batch([RECORD])
    memory = EditMemory(2, "l2")
    memory.add([EditDescriptor("a", "x", "c5"), EditDescriptor("b", "y", "h2")], torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    queries = batch.out_of_scope  # two rows; their hidden states are replaced by hand-built ones
    real_states, real_logits = cache.prompt_states(queries)
    for states, expected in (([[0.6, 0.8], [9.0, 0.0]], [0, 1]),    # at distance exactly 1 and 1: inside
                             ([[0.0, 1.01], [5.0, 0.0]], [NO_EDIT, NO_EDIT]),  # just outside, and half-way
                             ([[3.0, 4.0], [10.0, 0.5]], [NO_EDIT, 1])):
        monkeypatch.setattr(cache, "prompt_states", lambda examples, s=states: (torch.tensor(s), real_logits))
        router = cache.routed(memory).router
        assert router.route(queries).edits.tolist() == expected
    for epsilon, expected in ((4.99, [NO_EDIT, NO_EDIT]), (5.0, [0, 1])):  # the threshold moves the boundary
        monkeypatch.setattr(cache, "prompt_states", lambda examples: (torch.tensor([[3.0, 4.0], [10.0, 5.0]]), real_logits))
        cache.epsilon = epsilon
        assert cache.routed(memory).router.route(queries).edits.tolist() == expected


def test_cache_answers_with_the_cached_label_only_where_routed(tiny_models, monkeypatch):
    cache = EditCache(tiny_models["gpt2"], epsilon=1.0)
    batch = cache.prompts.batch([RECORD])
    edited = cache.edit(batch)
    states, _ = cache.prompt_states(batch.out_of_scope)
    edit_state, _ = cache.prompt_states(batch.edit)
    assert torch.cdist(states, edit_state).min() > 1.0  # the out-of-scope prompts are not within epsilon
    pre_edit, labels = cache.logits(batch.edit)
    post_edit, _ = cache.logits(batch.edit, edited)
    assert edit_success(pre_edit, labels) == 0.0 and edit_success(post_edit, labels) == 1.0
    pre_out, _ = cache.logits(batch.out_of_scope)
    post_out, _ = cache.logits(batch.out_of_scope, edited)
    assert torch.equal(pre_out, post_out)
    with edited.applied() as model:  # greedy generation through the routed logits
        assert greedy_completion(model, cache.tokenizer, "causal", RECORD.prompt, 3).split()[0] == "c5"
        assert greedy_completion(model, cache.tokenizer, "causal", "the home of s9 is", 3) == \
            greedy_completion(cache.model, cache.tokenizer, "causal", "the home of s9 is", 3)
    with pytest.raises(EditFailedError, match="memory"):
        edited.materialize()


def test_routed_model_with_empty_memory_is_the_base_model(tiny_models):
    cache = EditCache(tiny_models["gpt2"])
    batch = cache.prompts.batch([RECORD])
    edited = cache.routed(EditMemory(32, "l2"))
    assert not edited.changes_outputs
    assert torch.equal(cache.logits(batch.in_scope, edited)[0], cache.logits(batch.in_scope)[0])
    scores = EditScores()
    cache.score(batch, scores)  # scoring an edit of nothing does not fail: nothing changes
    assert float(scores.drawdown.compute()) == 0.0


def test_routed_rows_are_assembled_in_query_order(tiny_models):
    cache = EditCache(tiny_models["llama"])
    examples = cache.prompts([LabeledPrompt("the home of s9 is", "h2"), LabeledPrompt("the colour of s1 is", "c5"),
                              LabeledPrompt("s2 lives in", "h1")])
    base, labels = cache.logits(examples)

    class EveryOther:
        empty = False

        def route(self, examples):
            return Routing(torch.tensor([NO_EDIT, 0, NO_EDIT]))

        def answer(self, examples, edits, base_logits):
            assert len(examples) == 1 and base_logits is None
            return torch.full((1, labels.shape[1], base.shape[-1]), 7.0)

    logits, routed_labels = RoutedModel(cache.model, "causal", EveryOther()).logits(examples)
    assert torch.equal(routed_labels, labels) and (logits[1] == 7.0).all()
    torch.testing.assert_close(logits[[0, 2]], base[[0, 2]])  # rows answered by the base model, computed alone


# -- SERAC ---------------------------------------------------------------------------------------------
def tiny_encoder(directory: Path) -> str:
    """A tiny random BERT with the fixture's word tokenizer, standing in for MiniLM."""
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("encoder"))


def decisions(classifier: ScopeClassifier, records: list[EditRecord], threshold: float = 0.5) -> tuple[float, float]:
    """(share of in-scope pairs accepted, share of out-of-scope pairs rejected) over every query-edit pair."""
    edits, queries, targets = scope_pairs(records)
    with torch.no_grad():
        accept = classifier.probability(classifier.embed(queries) @ classifier.embed(edits).T) >= threshold
    positive = targets > 0.5
    return float(accept[positive].float().mean()), float((~accept[~positive]).float().mean())


@pytest.fixture(scope="module")
def trained_classifier(encoder_dir, synthetic_splits) -> tuple[ScopeClassifier, tuple[float, float]]:
    torch.manual_seed(0)
    classifier = ScopeClassifier(encoder_dir, lr=3.0e-3, head_lr=3.0e-2)
    untrained = decisions(classifier, TEST)
    data = EditDataModule(train=str(synthetic_splits["train"]), val=str(synthetic_splits["val"]),
                          test=str(synthetic_splits["test"]), model=None, edits_per_batch=4)
    data._prompts = PromptTokenizer(word_tokenizer())  # the classifier reads only the records' text
    trainer = Trainer(accelerator="cpu", max_steps=120, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(classifier, train_dataloaders=data.train_dataloader())
    return classifier.eval(), untrained


def test_scope_classifier_separates_in_scope_from_out_of_scope_after_training(trained_classifier):
    classifier, untrained = trained_classifier
    accepted, rejected = decisions(classifier, TEST)  # edits about subjects never seen in training
    assert accepted >= 0.9 and rejected >= 0.9, (accepted, rejected)
    assert min(untrained) < 0.9  # it is the training that separates them


@pytest.fixture(scope="module")
def trained_counterfactual(tiny_models) -> CounterfactualModel:
    torch.manual_seed(0)
    counterfactual = CounterfactualModel(tiny_models["gpt2"], lr=3.0e-3, c_loc=0.0)
    prompts = PromptTokenizer(counterfactual.tokenizer)
    optimizer = torch.optim.Adam(counterfactual.parameters(), lr=counterfactual.lr)
    rng = random.Random(0)
    for _ in range(400):
        loss, _ = counterfactual.loss(prompts.batch(rng.sample(TRAIN, 4)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return counterfactual.eval()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_cached_descriptor_states_give_the_logits_of_reading_descriptor_and_query_together(tiny_models, architecture):
    """The prefix cache is only a speed-up: cold (descriptors read into it) and warm (reused) inference give the
    logits of the concatenated sequence, for descriptors of different lengths and two rows under one edit."""
    torch.manual_seed(0)
    counterfactual = CounterfactualModel(tiny_models[architecture]).eval()
    short = EditDescriptor("0", TEST[0].prompt, TEST[0].target_new)
    long = EditDescriptor("1", " ".join(["alpha"] * 9) + " " + TEST[1].prompt, TEST[1].target_new)
    queries = PromptTokenizer(counterfactual.tokenizer)(
        [TEST[0].in_scope[0], TEST[0].in_scope[1], TEST[1].in_scope[0], TEST[2].out_of_scope[0]])
    rows = [short, short, long, long]
    real = queries.attention_mask[:, 1:] == 1  # aligned positions that hold a query token
    with torch.enable_grad():
        reference = counterfactual(queries, rows).detach()  # gradients on: descriptor and query read together
    assert counterfactual.prefix_cache is not None and len(counterfactual.prefix_cache) == 0
    with torch.no_grad():
        cold = counterfactual(queries, rows)
        assert len(counterfactual.prefix_cache) == 2  # each distinct descriptor read once
        warm = counterfactual(queries, rows)
    for logits in (cold, warm):
        assert logits.shape == reference.shape
        torch.testing.assert_close(logits[real], reference[real], atol=1e-4, rtol=1e-4)
    counterfactual.train()  # training changes the weights the states were computed with
    assert len(counterfactual.prefix_cache) == 0


def test_prefix_cache_stays_within_its_byte_budget_dropping_the_least_recently_used():
    from lit_edit.editors.prefix_cache import PrefixCache
    states = (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)),  # 192 bytes
    cache = PrefixCache(max_bytes=400)
    cache.put((1,), states)
    cache.put((2,), states)
    cache.get((1,))  # (2,) is now the least recently used
    cache.put((3,), states)
    assert (1,) in cache and (3,) in cache and (2,) not in cache and cache.bytes == 384
    cache.put((4,), (tuple(torch.zeros(2, 30, 4) for _ in range(2)),))  # over the whole budget: not stored
    assert (4,) not in cache and len(cache) == 2


@pytest.fixture(scope="module")
def serac(tiny_models, encoder_dir, trained_classifier, trained_counterfactual) -> SERAC:
    editor = SERAC(tiny_models["gpt2"], encoder=encoder_dir)
    editor.classifier.load_state_dict(trained_classifier[0].state_dict())
    editor.counterfactual.load_state_dict(trained_counterfactual.state_dict())
    return editor.eval()


def test_serac_edit_changes_in_scope_answers_and_not_out_of_scope(serac):
    batch = serac.prompts.batch(TEST)
    pre_in, in_labels = serac.logits(batch.in_scope)
    edited = serac.edit(batch)
    post_in, _ = serac.logits(batch.in_scope, edited)
    assert edit_success(pre_in, in_labels) < 0.2 and edit_success(post_in, in_labels) >= 0.9
    pre_out, out_labels = serac.logits(batch.out_of_scope)
    post_out, _ = serac.logits(batch.out_of_scope, edited)
    unchanged = (pre_out.argmax(-1) == post_out.argmax(-1)) | (out_labels == -100)
    assert unchanged.all(dim=1).float().mean() >= 0.9
    scores = EditScores(compare_targets=True)
    serac.score(batch, scores)  # the shared scoring runs the routed model
    assert float(scores.es.compute()) >= 0.9 and float(scores.drawdown.compute()) <= 0.1


def test_serac_answers_from_a_saved_memory_and_forgets_a_removed_edit(serac, tmp_path):
    record = TEST[0]
    memory = serac.memory_for(TEST)
    loaded = EditMemory.load(memory.save(tmp_path / "serac.pt"))
    examples = serac.prompts([*record.in_scope])
    pre, labels = serac.logits(examples)
    assert edit_success(serac.logits(examples, serac.routed(loaded))[0], labels) == 1.0
    loaded.remove(record.case_id)
    assert torch.equal(serac.logits(examples, serac.routed(loaded))[0].argmax(-1), pre.argmax(-1))


def test_serac_fits_a_long_descriptor_before_a_query_near_the_context_limit(serac):
    record = TEST[1]
    long_edit = EditDescriptor("long", " ".join(["alpha"] * 80) + " " + record.prompt, record.target_new)
    query = serac.prompts([LabeledPrompt(" ".join(["beta"] * 50) + " " + record.prompt, record.target_new)])
    logits = serac.counterfactual(query, [long_edit])  # 80 + 55 tokens > the 64 positions: the descriptor is cut
    assert logits.shape[:2] == query.labels[:, 1:].shape and torch.isfinite(logits).all()
    too_long = serac.prompts([LabeledPrompt(" ".join(["beta"] * 70), "c1")])
    with pytest.raises(ValueError, match="no room"):
        serac.counterfactual(too_long, [long_edit])



def test_train_py_trains_serac_and_evaluate_py_scores_it_with_the_cache(tiny_models, encoder_dir, synthetic_splits,
                                                                         tmp_path, monkeypatch, capsys):
    """configs/train/serac.yaml and configs/evaluate/serac.yaml on the tiny GPT-2: two training steps, one validation,
    the best checkpoint, then the suite with fluency (greedy generation through the routed logits)."""
    import yaml

    from lit_edit.cli import CONFIG_DIR, evaluate_main, train_main
    from lit_edit.config_files import load_config

    monkeypatch.chdir(tmp_path)
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    config = load_config(CONFIG_DIR / "train" / "serac.yaml")
    config["model"]["init_args"].update(model=spec, encoder=encoder_dir, counterfactual_trainable=["transformer.h.1.*"])
    config["data"].update({split: str(path) for split, path in synthetic_splits.items()}, limit_val=2)
    config["trainer"].update(max_steps=2, val_check_interval=2, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, max_time=None)
    config["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
        "dirpath": str(tmp_path / "ckpt"), "filename": "best", "monitor": "val/score", "mode": "max",
        "save_weights_only": True}}]
    (tmp_path / "serac.yaml").write_text(yaml.safe_dump(config))
    cli = train_main(["--config", str(tmp_path / "serac.yaml")], default_config=None)
    assert cli.trainer.global_step == 2 and (tmp_path / "ckpt" / "best.ckpt").exists()
    frozen = [n for n, p in cli.model.counterfactual.lm.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("transformer.h.1.") for n in frozen)

    config = load_config(CONFIG_DIR / "evaluate" / "serac.yaml")
    editors = config["model"]["editors"]
    del editors["mend"], editors["ke"]  # trained elsewhere (test_ke.py, test_training.py)
    editors["serac"]["init_args"].update(model=spec, encoder=encoder_dir, checkpoint=str(tmp_path / "ckpt" / "best.ckpt"),
                                         counterfactual_trainable=["transformer.h.1.*"])
    editors["cache"]["init_args"]["model"] = spec
    editors["unedited"]["init_args"] = {"model": spec}
    config["model"]["fluency_tokens"] = 2
    config["data"].update(test=str(synthetic_splits["test"]), format="auto", limit_test=3)
    config["trainer"]["logger"] = False
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(config))
    evaluate_main(["--config", str(tmp_path / "evaluate.yaml")], default_config=None)
    assert "| editor | ES | paraphrase ES" in capsys.readouterr().out
    records = {r["editor"]: r for r in json.loads((tmp_path / "results" / "evaluate_serac.json").read_text())}
    assert sorted(records) == ["cache", "serac", "unedited"]
    assert all(r["failed_edits"] == 0 and r["edits"] == 3 for r in records.values())
    assert records["cache"]["metrics"]["efficacy"] == 1.0  # the edit prompt itself is always within epsilon
    assert not math.isnan(records["cache"]["metrics"]["fluency"])  # generation ran through the memory
