"""The FEVER base-model fine-tune (configs/train/fever_classifier.yaml) on a tiny BERT encoder built here: the shipped
config runs through train.py, and the model it exports loads as ``kind: classifier`` and scores as it reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from lit_edit.cli import CONFIG_DIR, train_main
from lit_edit.data.readers import FEVER_LABELS
from lit_edit.errors import ConfigurationError
from lit_edit.models import ModelSpec, load_model, load_tokenizer

SUBJECTS = ["anna", "boris", "carla", "dmitri", "elena", "farid", "greta", "hugo", "ines", "jonas", "kira", "lars"]
#: The object word decides a claim's gold label, so the tiny encoder can learn it in a few steps.
OBJECTS = {"painter": "SUPPORTS", "pilot": "SUPPORTS", "singer": "REFUTES", "doctor": "REFUTES"}


def claims() -> list[dict]:
    return [{"claim": f"{subject} is a {obj}", "label": label, "evidence": []}
            for obj, label in OBJECTS.items() for subject in SUBJECTS]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT encoder (no head) with a whitespace tokenizer, standing in for all-MiniLM-L6-v2."""
    directory = tmp_path_factory.mktemp("tiny_encoder")
    words = [*SUBJECTS, *OBJECTS, "is", "a"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, pad_token_id=0)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def fine_tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: Path, *extra: str) -> Path:
    """Run the shipped config in ``tmp_path`` on the tiny encoder and small files; return the results file."""
    monkeypatch.chdir(tmp_path)  # ModelCheckpoint's checkpoints/<run> and the logs land here
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    rows = claims()
    train = write_jsonl(tmp_path / "train.jsonl", rows[::2])
    val = write_jsonl(tmp_path / "val.jsonl", rows[1::4])
    test = write_jsonl(tmp_path / "test.jsonl", rows[3::4])
    results = tmp_path / "results.json"
    train_main(["--config", str(CONFIG_DIR / "train" / "fever_classifier.yaml"),
                "--model.init_args.encoder", str(encoder), "--data.init_args.encoder", str(encoder),
                "--model.init_args.lr", "3.0e-3", "--model.init_args.warmup_steps", "0",
                "--model.init_args.results", str(results),
                "--data.init_args.train", train, "--data.init_args.val", val, "--data.init_args.test", test,
                "--data.init_args.batch_size", "8", "--trainer.max_epochs", "8", "--trainer.logger.init_args.save_dir",
                str(tmp_path / "logs"), *extra])
    return results


def test_the_fine_tune_config_exports_a_classifier_that_loads_with_its_labels(tmp_path, monkeypatch, encoder):
    results = json.loads(fine_tune(tmp_path, monkeypatch, encoder).read_text())
    exported = tmp_path / "checkpoints" / "models" / "minilm-fever"
    assert results["model"] == str(exported)
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    assert not exported.with_name("minilm-fever.partial").exists()  # written aside, then renamed

    spec = ModelSpec(name=str(exported), kind="classifier", labels=list(FEVER_LABELS))
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    assert [model.config.id2label[i] for i in range(2)] == list(FEVER_LABELS)
    with pytest.raises(ConfigurationError, match="names its classes"):  # the saved order is enforced
        load_model(ModelSpec(name=str(exported), kind="classifier", labels=["REFUTES", "SUPPORTS"]))

    # The exported weights are the ones the command scored: its test accuracy, recomputed from the saved model.
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    with torch.no_grad():
        logits = model(**tokenizer([row["claim"] for row in test], padding=True, return_tensors="pt")).logits
    accuracy = sum(FEVER_LABELS[int(c)] == row["label"] for c, row in zip(logits.argmax(-1), test, strict=True))
    assert results["test_claims"] == len(test)
    assert results["test_accuracy"] == pytest.approx(accuracy / len(test), abs=1e-4)
    assert results["test_accuracy"] >= 0.9  # the object word decides the label: learnt in a few epochs


def test_a_record_with_a_label_the_head_lacks_is_refused_naming_it(tmp_path, monkeypatch, encoder):
    with pytest.raises(ConfigurationError, match="label .REFUTES., not one of"):
        fine_tune(tmp_path, monkeypatch, encoder, "--model.init_args.labels", "[SUPPORTS, NOT ENOUGH INFO]",
                  "--data.init_args.labels", "[SUPPORTS, NOT ENOUGH INFO]")
