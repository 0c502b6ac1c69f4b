"""Classifier editing (MEND's FEVER task) on a tiny BERT classifier built here: nothing is downloaded.

The classifier is taught a few claims first, so an edit has a belief to flip and other beliefs to keep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from lit_edit.cli import CONFIG_DIR, evaluate_main, train_main
from lit_edit.config_files import load_config
from lit_edit.data.batch import PromptTokenizer, TokenizedExamples
from lit_edit.data.readers import FEVER_LABELS, FEVER_OUT_OF_SCOPE, load_edit_records, read_fever
from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt
from lit_edit.editors import ENN, KE, MEND, EditCache, FineTune
from lit_edit.errors import ConfigurationError
from lit_edit.evaluation import scoring
from lit_edit.evaluation.metrics import accuracy_drawdown, edit_success, retention
from lit_edit.evaluation.scores import EditScores
from lit_edit.generation import greedy_completion
from lit_edit.mechanics.edited_model import aligned_logits, nll_loss
from lit_edit.models import ModelSpec

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["anna", "boris", "carla", "dmitri", "elena", "farid", "greta", "hugo", "ines", "jonas", "kira", "lars"]
OBJECTS = ["painter", "singer", "pilot", "doctor"]
WORDS = [*SUBJECTS, *OBJECTS, "is", "a", "it", "true", "that", "reportedly", "SUPPORTS", "REFUTES", ">>", "||", "."]
EDITABLE = ["bert.encoder.layer.1.output.dense.weight"]


def claim(i: int) -> str:
    return f"{SUBJECTS[i]} is a {OBJECTS[i % len(OBJECTS)]}"


def paraphrases(i: int) -> tuple[str, ...]:
    return (f"it is true that {claim(i)}", f"reportedly {claim(i)}")


#: Each claim's gold class: balanced, and unrelated to its object word, so that a label is learnt per claim.
GOLD = [0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0]


def gold(i: int) -> str:
    return FEVER_LABELS[GOLD[i]]


def records() -> list[EditRecord]:
    """Each claim an edit to its other label; the other claims, with their gold labels, its out-of-scope inputs."""
    return [EditRecord(case_id=str(i), prompt=claim(i), target_new=FEVER_LABELS[1 - GOLD[i]], target_true=gold(i),
                       paraphrases=paraphrases(i),
                       out_of_scope=tuple(LabeledPrompt(claim(j), gold(j)) for j in range(len(SUBJECTS)) if j != i))
            for i in range(len(SUBJECTS))]


def classifier_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace words over this file's vocabulary, each input led by [CLS] (the token BERT's pooler reads)."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def teach(model: BertForSequenceClassification, examples: TokenizedExamples, parameters, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        nll_loss(*aligned_logits(model, examples, "classifier")).backward()
        optimizer.step()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A 2-layer BERT classifier that has learnt every claim's gold label (and its paraphrases').

    Like a pretrained encoder, its features tell the claims apart: the encoder first learns which claim an input is
    (one class per claim), then a binary head over those frozen features learns the labels. An encoder trained on
    the labels alone keeps one feature, the label, and any edit of it moves every claim."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = classifier_tokenizer()
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=32, pad_token_id=0, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
    inputs = [(text, i) for i in range(len(SUBJECTS)) for text in (claim(i), *paraphrases(i))]
    torch.manual_seed(0)
    identities = BertForSequenceClassification(BertConfig(num_labels=len(SUBJECTS), **shape))
    which = PromptTokenizer(tokenizer, "classifier", 32, labels=[str(i) for i in range(len(SUBJECTS))])
    teach(identities, which([LabeledPrompt(text, str(i)) for text, i in inputs]), identities.parameters(), 100, 3.0e-3)
    model = BertForSequenceClassification(BertConfig(num_labels=2, **shape))
    model.bert.load_state_dict(identities.bert.state_dict())
    labelled = PromptTokenizer(tokenizer, "classifier", 32, labels=FEVER_LABELS)
    head = [*model.classifier.parameters(), *model.bert.pooler.parameters()]
    teach(model, labelled([LabeledPrompt(text, gold(i)) for text, i in inputs]), head, 100, 1.0e-2)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return ModelSpec(name=str(directory), kind="classifier", labels=list(FEVER_LABELS), editable=EDITABLE)


def predictions(editor, texts: list[str], edited=None) -> list[str]:
    examples = editor.prompts([LabeledPrompt(text, FEVER_LABELS[0]) for text in texts]).to(editor.device)
    with torch.no_grad():
        logits, _ = editor.logits(examples, edited)
    return [FEVER_LABELS[int(c)] for c in logits[:, 0].argmax(-1)]


def assert_flips_and_keeps(editor, case: int = 0, keep_at_least: float = 1.0) -> None:
    """The edit of claim ``case`` flips it and its paraphrases, and leaves (at least a fraction of) the others."""
    record = records()[case]
    others = [j for j in range(len(SUBJECTS)) if j != case]
    before = predictions(editor, [claim(j) for j in range(len(SUBJECTS))])
    assert before == [gold(j) for j in range(len(SUBJECTS))]  # the taught beliefs
    edited = editor.checked_edit(editor.prompts.batch([record]))
    assert predictions(editor, [record.prompt], edited) == [record.target_new]
    after = predictions(editor, [claim(j) for j in others], edited)
    kept = sum(a == gold(j) for a, j in zip(after, others, strict=True)) / len(others)
    assert kept >= keep_at_least, (editor.name, after)


# -- the model -------------------------------------------------------------------------------------------------


def test_a_classifier_spec_names_its_classes():
    with pytest.raises(ValueError, match="labels must name at least two classes"):
        ModelSpec(name="x", kind="classifier", editable=EDITABLE)
    with pytest.raises(ValueError, match="names a class twice"):
        ModelSpec(name="x", kind="classifier", labels=["A", "A"], editable=EDITABLE)
    with pytest.raises(ValueError, match="kind 'causal' has none"):
        ModelSpec(labels=["A", "B"])


def test_a_classifier_is_a_one_position_model_whose_vocabulary_is_its_classes(classifier):
    editor = FineTune(classifier, steps=1)
    examples = editor.prompts([LabeledPrompt(claim(0), "REFUTES"), LabeledPrompt(paraphrases(1)[0], "SUPPORTS")])
    assert examples.labels.tolist() == [[1], [0]]
    logits, labels = editor.logits(examples)
    assert logits.shape == (2, 1, 2) and labels.tolist() == [[1], [0]]
    assert editor.model.config.id2label == {0: "SUPPORTS", 1: "REFUTES"}
    assert greedy_completion(editor.model, editor.tokenizer, "classifier", claim(1)) == gold(1)


def test_a_class_name_that_is_not_one_of_the_model_labels_is_an_error_naming_the_record(classifier):
    prompts = FineTune(classifier, steps=1).prompts
    bad = EditRecord(case_id="7", prompt=claim(0), target_new="NOT ENOUGH INFO",
                     out_of_scope=(LabeledPrompt(claim(1), gold(1)),))
    with pytest.raises(EditDataError, match=r"edit '7': field 'target_new': 'NOT ENOUGH INFO' is not one of"):
        prompts.batch([bad])
    bad = EditRecord(case_id="8", prompt=claim(0), target_new="REFUTES", out_of_scope=(LabeledPrompt(claim(1), "yes"),))
    with pytest.raises(EditDataError, match=r"edit '8': field 'out_of_scope\[0\].target'"):
        prompts.batch([bad])


def test_a_saved_head_with_other_classes_is_refused(classifier, tmp_path):
    model = BertForSequenceClassification.from_pretrained(classifier.name)
    model.config.id2label = {0: "REFUTES", 1: "SUPPORTS"}
    model.save_pretrained(tmp_path / "swapped")
    classifier_tokenizer().save_pretrained(tmp_path / "swapped")
    with pytest.raises(ConfigurationError, match=r"names its classes \['REFUTES', 'SUPPORTS'\] but model.labels"):
        FineTune(ModelSpec(name=str(tmp_path / "swapped"), kind="classifier", labels=list(FEVER_LABELS),
                           editable=EDITABLE))
    with pytest.raises(ConfigurationError, match=r"with 3 classes \(model.labels\)"):
        FineTune(ModelSpec(name=classifier.name, kind="classifier", labels=["A", "B", "C"], editable=EDITABLE))


# -- metrics ---------------------------------------------------------------------------------------------------


def test_es_and_accuracy_drawdown_of_class_logits_match_a_hand_computation():
    """Four in-scope rows (target class per row), four out-of-scope rows (gold class), logits as a classifier gives
    them ([rows, 1, classes]); ES, DD and retention by hand."""
    post_in = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])[:, None]
    targets = torch.tensor([[1], [1], [0], [0]])
    assert edit_success(post_in, targets) == pytest.approx(3 / 4)  # argmax 0, 1, 0, 0 against 1, 1, 0, 0
    pre_out = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])[:, None]  # argmax 0, 1, 0, 1
    post_out = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])[:, None]  # argmax 0, 0, 1, 1
    gold_labels = torch.tensor([[0], [1], [1], [1]])  # before: right, right, wrong, right; after: right, wrong, right, right
    assert accuracy_drawdown(pre_out, post_out, gold_labels) == pytest.approx((3 - 3) / 4)
    assert accuracy_drawdown(pre_out, post_out, torch.tensor([[0], [1], [0], [1]])) == pytest.approx((4 - 2) / 4)
    assert retention(pre_out, post_out, gold_labels) == pytest.approx(2 / 4)


def test_the_shared_scoring_scores_a_classifier_edit(classifier):
    """ES and DD of an FT edit through lit_edit.evaluation.scoring, as every evaluation computes them."""
    editor = FineTune(classifier, steps=10, lr=1.0e-2)
    batch = editor.prompts.batch([records()[10]])
    scores = EditScores(compare_targets=True)
    scoring.score(editor, batch, scores)
    assert scores.es.compute() == 1.0 and scores.pre_es.compute() == 0.0
    dd = float(scores.drawdown.compute())
    assert 0.0 <= dd <= 1 / 11  # 11 other claims, each right before: at most one may have turned
    assert scores.efficacy.compute() == 1.0  # the new class beats the true one after the edit


# -- editors ---------------------------------------------------------------------------------------------------


def test_ft_flips_the_edited_claim_and_leaves_the_others(classifier):
    assert_flips_and_keeps(FineTune(classifier, steps=10, lr=1.0e-2), case=4)


def test_ft_kl_flips_the_edited_claim_keeping_its_locality_claims(classifier):
    editor = FineTune(classifier, steps=10, lr=1.0e-2, kl_weight=1.0, locality_prompts=[claim(5), claim(6)])
    assert editor.locality_examples().labels.shape == (2, 1)
    assert_flips_and_keeps(editor, case=3)


def test_mend_edits_the_encoder_mlp(classifier):
    """Untrained, MEND's networks are the identity: its edit is the edit gradient's rank-one parts times edit_lr."""
    editor = MEND(classifier, rank=8, edit_lr=1.0)
    assert list(editor.networks) == ["32x64"]  # one network for the MLP output projection (out 32, in 64)
    assert_flips_and_keeps(editor, case=4, keep_at_least=0.9)


def test_enn_edits_its_meta_weights(classifier):
    editor = ENN(classifier, inner_steps=3, inner_lr=1.0)
    assert_flips_and_keeps(editor, case=5, keep_at_least=0.9)


def test_ke_conditions_on_the_class_names(classifier):
    editor = KE(classifier, max_scale=6.0, lstm_dim=8, condition_dim=16, hidden_dim=8)
    batch = editor.prompts.batch([records()[0]])
    answer, target = editor.original_answer(batch.edit.input_ids[0], 1), batch.edit.labels[0]
    assert [editor.class_tokens[int(answer[0])].tolist(), editor.class_tokens[int(target[0])].tolist()] == [
        editor.tokenizer("SUPPORTS", add_special_tokens=False)["input_ids"],
        editor.tokenizer("REFUTES", add_special_tokens=False)["input_ids"]]
    assert editor.condition(batch.edit).shape == (1, 16)
    assert_flips_and_keeps(editor, case=3, keep_at_least=0.9)


def test_the_cache_answers_the_edited_claim_with_the_new_class(classifier):
    editor = EditCache(classifier, epsilon=1.0e-3)
    assert_flips_and_keeps(editor, case=6)
    edited = editor.checked_edit(editor.prompts.batch([records()[6]]))
    with edited.applied() as model:  # generation shows the class the memory answers with
        assert greedy_completion(model, editor.tokenizer, "classifier", claim(6)) == records()[6].target_new
        assert greedy_completion(model, editor.tokenizer, "classifier", claim(7)) == gold(7)


@pytest.mark.parametrize("editor", ["KnowledgeNeurons", "ROME", "MEMIT"])
def test_editors_that_need_a_causal_lm_refuse_a_classifier(classifier, editor):
    import lit_edit.editors

    settings = {"ROME": {"layer": 1}, "MEMIT": {"layers": [1]}}.get(editor, {})
    with pytest.raises(ConfigurationError, match="causal LMs.*model.kind 'classifier'"):
        getattr(lit_edit.editors, editor)(classifier, **settings)


# -- FEVER Lite ------------------------------------------------------------------------------------------------


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def fever_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "fever-lite-test.jsonl", [
        {"claim": f"Claim number {i}.", "label": FEVER_LABELS[i % 2], "evidence": ["Some sentence ."]}
        for i in range(8)])


def test_the_fever_reader_flips_each_claim_and_joins_its_paraphrases(tmp_path):
    rephrased = write_lines(tmp_path / "paraphrases.jsonl", [
        {"claim": "Claim number 1.", "paraphrases": ["It is true that claim number 1."]}])
    read = read_fever(fever_file(tmp_path), paraphrases=rephrased)
    assert [(r.case_id, r.prompt, r.target_true, r.target_new) for r in read[:2]] == [
        ("0", "Claim number 0.", "SUPPORTS", "REFUTES"), ("1", "Claim number 1.", "REFUTES", "SUPPORTS")]
    assert read[1].paraphrases == ("It is true that claim number 1.",) and read[0].paraphrases == ()
    for record in read:
        assert len(record.out_of_scope) == FEVER_OUT_OF_SCOPE
        assert all(pair.prompt != record.prompt for pair in record.out_of_scope)
        assert all(pair.target == FEVER_LABELS[int(pair.prompt.split()[2][:-1]) % 2] for pair in record.out_of_scope)
    assert read_fever(fever_file(tmp_path), paraphrases=rephrased) == read  # the same draw every time
    assert load_edit_records(fever_file(tmp_path))[3].prompt == "Claim number 3."  # detected by its keys


@pytest.mark.parametrize(("line", "where"), [
    ({"claim": "Fine.", "label": "NOT ENOUGH INFO"}, r"record 2 \(line 3\): field 'label': expected one of"),
    ({"label": "SUPPORTS"}, r"record 2 \(line 3\): field 'claim': missing"),
    ({"claim": "", "label": "SUPPORTS"}, r"record 2 \(line 3\): field 'claim': expected a non-empty string"),
    ('{"claim": "cut', r"record 2 \(line 3\): field '<json>': invalid JSON"),
], ids=["unknown label", "no claim", "empty claim", "broken JSON"])
def test_a_malformed_fever_line_is_named_by_file_line_and_field(tmp_path, line, where):
    good = {"claim": "A claim.", "label": "SUPPORTS"}
    path = write_lines(tmp_path / "bad.jsonl", [good, good, line, good])
    with pytest.raises(EditDataError, match=f"^{path}: {where}"):
        read_fever(path, paraphrases=None)


def test_a_malformed_paraphrase_line_is_named_by_file_line_and_field(tmp_path):
    rephrased = write_lines(tmp_path / "paraphrases.jsonl", [{"claim": "x", "paraphrases": ["y"]},
                                                            {"claim": "z", "paraphrases": "not a list"}])
    with pytest.raises(EditDataError, match=rf"^{rephrased}: record 1 \(line 2\): field 'paraphrases'"):
        read_fever(fever_file(tmp_path), paraphrases=rephrased)


def test_the_shipped_paraphrases_are_the_script_s_output(tmp_path):
    """The seeded build of the documented subset (first 2,000 validation, first 1,000 test claims), byte for byte."""
    import importlib.util

    shipped = REPO / "lit_edit" / "data" / "fever_paraphrases.jsonl"
    assert shipped.stat().st_size < 3_000_000
    spec = importlib.util.spec_from_file_location("build_fever_paraphrases", REPO / "scripts" / "build_fever_paraphrases.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.paraphrases("Savages was a German film.", 3, 0) == script.paraphrases("Savages was a German film.", 3, 0)
    data = REPO.parent / "shared" / "data" / "fever"
    if not (data / "fever-lite-test.jsonl").exists():
        pytest.skip("FEVER Lite is not in ../shared/data here")
    built = tmp_path / "paraphrases.jsonl"
    script.main(["--data", str(data), "--output", str(built)])
    assert built.read_bytes() == shipped.read_bytes()
    rows = [json.loads(line) for line in shipped.read_text().splitlines()]
    assert all(row["paraphrases"] and row["claim"] not in row["paraphrases"] for row in rows)


# -- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("main", "config"), [(evaluate_main, "evaluate/fever.yaml"), (train_main, "train/mend_fever.yaml")])
def test_the_fever_configs_parse_against_the_code(main, config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(CONFIG_DIR / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    settings = load_config(CONFIG_DIR / config)
    specs = ([e["init_args"]["model"] for e in settings["model"]["editors"].values()] if "editors" in settings["model"]
             else [settings["model"]["init_args"]["model"]])
    assert all(spec["kind"] == "classifier" and spec["labels"] == list(FEVER_LABELS) for spec in specs)
    assert settings["data"]["format"] == "fever"


def test_classifier_logits_follow_the_attention_mask(classifier):
    """Padding a row changes nothing: the edit batch's rows are padded to the longest claim."""
    editor = FineTune(classifier, steps=1)
    alone = editor.prompts([LabeledPrompt(claim(0), "SUPPORTS")])
    padded = editor.prompts([LabeledPrompt(claim(0), "SUPPORTS"), LabeledPrompt(paraphrases(0)[0], "SUPPORTS")])
    assert padded.attention_mask[0].tolist() == [1] * 5 + [0] * 4  # [CLS] and 4 words, then padding
    assert torch.allclose(editor.logits(alone)[0][0], editor.logits(padded)[0][0], atol=1.0e-5)


def test_train_py_trains_mend_on_fever_records_with_the_shipped_config(classifier, tmp_path, monkeypatch):
    """configs/train/mend_fever.yaml with the tiny classifier and a FEVER Lite file of its claims: two MEND steps,
    then validation scores every edit (the data module reads the ``fever`` format and tokenizes classes)."""
    import yaml

    monkeypatch.chdir(tmp_path)
    fever = write_lines(tmp_path / "fever.jsonl", [{"claim": claim(i), "label": gold(i)} for i in range(len(SUBJECTS))])
    config = load_config(CONFIG_DIR / "train" / "mend_fever.yaml")
    config["model"]["init_args"].update(model={**config["model"]["init_args"]["model"], "name": classifier.name,
                                               "editable": EDITABLE}, rank=8, warmup_steps=0)
    config["data"].update(train=f"{fever}#0:8", val=f"{fever}#8:12", test=f"{fever}#8:12", limit_val=4,
                          edits_per_batch=2)
    config["trainer"].update(max_steps=2, val_check_interval=None, check_val_every_n_epoch=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_train_batches=2, max_time=None, callbacks=[])
    config["ckpt_path"] = None
    path = tmp_path / "mend_fever.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = train_main(["--config", str(path)])
    assert cli.trainer.global_step == 2
    assert {"val/es", "val/dd", "val/retention"} <= set(cli.trainer.callback_metrics)
    assert 0.0 <= float(cli.trainer.callback_metrics["val/es"]) <= 1.0


def test_evaluate_py_runs_every_fever_editor_with_the_shipped_config(classifier, tmp_path, monkeypatch):
    """configs/evaluate/fever.yaml on the tiny classifier (MEND untrained: no checkpoint): every editor is scored."""
    import yaml

    monkeypatch.chdir(tmp_path)
    fever = write_lines(tmp_path / "fever.jsonl", [{"claim": claim(i), "label": gold(i)} for i in range(len(SUBJECTS))])
    config = load_config(CONFIG_DIR / "evaluate" / "fever.yaml")
    for name, editor in config["model"]["editors"].items():
        settings = editor["init_args"]
        settings["model"] = {**settings["model"], "name": classifier.name, "editable": EDITABLE}
        settings.pop("checkpoint", None)
        if name == "mend":
            settings["rank"] = 8
        if name == "ke":
            settings.update(lstm_dim=8, condition_dim=16, hidden_dim=8)
    config["model"]["output"] = str(tmp_path / "results.json")
    config["data"]["test"] = f"{fever}#0:2"
    config["trainer"].update(logger=False, enable_progress_bar=False, callbacks=[])
    path = tmp_path / "fever.yaml"
    path.write_text(yaml.safe_dump(config))
    evaluate_main(["--config", str(path)])
    results = {row["editor"]: row for row in json.loads((tmp_path / "results.json").read_text())}
    assert sorted(results) == ["cache", "enn", "ft", "ft_kl", "ke", "mend", "unedited"]
    assert all(row["edits"] == 2 and row["failed_edits"] == 0 for row in results.values())
    assert results["unedited"]["metrics"]["es"] == 0.0 and results["cache"]["metrics"]["es"] == 1.0
    assert all(0.0 <= row["metrics"]["es"] <= 1.0 and 0.0 <= row["metrics"]["retention"] <= 1.0 for row in results.values())
