"""Tiny random models and a word-level tokenizer built in the test: nothing is downloaded."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BartConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from lit_edit.data.readers import write_edit_records
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.models import ModelSpec

REPO = Path(__file__).resolve().parents[1]

SUBJECTS = [f"s{i}" for i in range(40)]
RELATIONS = {
    "colour": ["the colour of {} is", "{} has the colour", "what colour is {} ? it is"],
    "home": ["the home of {} is", "{} lives in", "where does {} live ? in"],
}
OBJECTS = {"colour": [f"c{i}" for i in range(8)], "home": [f"h{i}" for i in range(8)]}
WORDS = sorted({w for ts in RELATIONS.values() for t in ts for w in t.split() if w != "{}"}
               | set(SUBJECTS) | {o for os_ in OBJECTS.values() for o in os_}
               | {"alpha", "beta", "gamma", "delta", "omega"})


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over the fixture vocabulary."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


TINY_CONFIGS = {
    "gpt2": (GPT2Config, dict(n_layer=2, n_embd=32, n_head=2, n_positions=64), "causal",
             ["transformer.h.1.mlp.c_proj.weight"]),
    "gpt_neox": (GPTNeoXConfig, dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64), "causal", ["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"]),
    "llama": (LlamaConfig, dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                                intermediate_size=64, max_position_embeddings=64), "causal",
              ["model.layers.1.mlp.down_proj.weight"]),
    "t5": (T5Config, dict(num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=2, d_kv=16,
                          decoder_start_token_id=0), "seq2seq", ["decoder.block.1.layer.2.DenseReluDense.wo.weight"]),
    "bart": (BartConfig, dict(encoder_layers=2, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
                              encoder_attention_heads=2, decoder_attention_heads=2, max_position_embeddings=64,
                              decoder_start_token_id=2, forced_bos_token_id=None), "seq2seq", ["model.decoder.layers.1.fc2.weight"]),
}


def make_tiny_model(directory: Path, arch: str, **overrides: int) -> ModelSpec:
    """Save a tiny random model of ``arch`` with the word tokenizer; return its spec."""
    config_class, kwargs, kind, editable = TINY_CONFIGS[arch]
    kwargs = {**kwargs, **overrides}
    tokenizer = word_tokenizer()
    config = config_class(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=2, eos_token_id=3, **kwargs)
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return ModelSpec(name=str(directory), kind=kind, editable=editable)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: make_tiny_model(root / arch, arch) for arch in TINY_CONFIGS}


def true_object(subject: str, relation: str) -> str:
    """The fixture world's fact: fixed per (subject, relation), whatever the split."""
    return random.Random(f"{subject}/{relation}").choice(OBJECTS[relation])


def all_facts() -> list[LabeledPrompt]:
    return [LabeledPrompt(t.format(s), true_object(s, r)) for s in SUBJECTS for r, ts in RELATIONS.items() for t in ts]


def synthetic_records(seed: int = 0, subjects: list[str] | None = None) -> list[EditRecord]:
    """Counterfactual edits over the fixture vocabulary, with paraphrases and (hard) out-of-scope prompts."""
    rng = random.Random(seed)
    subjects = subjects or SUBJECTS
    truth = {(s, r): true_object(s, r) for s in subjects for r in RELATIONS}
    records = []
    for i, subject in enumerate(subjects):
        relation = list(RELATIONS)[i % 2]
        other_relation = list(RELATIONS)[(i + 1) % 2]
        templates = RELATIONS[relation]
        new = rng.choice([o for o in OBJECTS[relation] if o != truth[subject, relation]])
        neighbour = subjects[(i + 1) % len(subjects)]
        far = subjects[(i + 7) % len(subjects)]
        records.append(EditRecord(
            case_id=str(i), prompt=templates[0].format(subject), target_new=new, subject=subject,
            target_true=truth[subject, relation], relation=relation,
            paraphrases=tuple(t.format(subject) for t in templates[1:]),
            out_of_scope=(LabeledPrompt(RELATIONS[other_relation][0].format(far), truth[far, other_relation]),),
            hard_out_of_scope=(
                LabeledPrompt(RELATIONS[other_relation][0].format(subject), truth[subject, other_relation]),
                LabeledPrompt(templates[0].format(neighbour), truth[neighbour, relation]),
            ),
        ))
    return records


@pytest.fixture(scope="session")
def synthetic_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/val/test files of synthetic edits, split by subject."""
    root = tmp_path_factory.mktemp("edits")
    splits = {"train": SUBJECTS[:28], "val": SUBJECTS[28:34], "test": SUBJECTS[34:]}
    return {name: write_edit_records(synthetic_records(i, subs), root / f"{name}.json")
            for i, (name, subs) in enumerate(splits.items())}


def teach_facts(spec: ModelSpec, steps: int = 400) -> ModelSpec:
    """Train a tiny model in place on every true fact of the fixture world, so that it has confident
    beliefs to edit and to keep."""
    from lit_edit.data.batch import PromptTokenizer
    from lit_edit.editors.edited_model import aligned_logits, nll_loss

    tokenizer = PreTrainedTokenizerFast.from_pretrained(spec.name)
    auto = AutoModelForCausalLM if spec.kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(spec.name)
    examples = PromptTokenizer(tokenizer, spec.kind)(all_facts())
    optimizer = torch.optim.Adam(model.parameters(), lr=3.0e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nll_loss(*aligned_logits(model, examples, spec.kind)).backward()
        optimizer.step()
    model.save_pretrained(spec.name)
    return spec


@pytest.fixture(scope="session")
def knowing_gpt2(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A tiny GPT-2 that has learnt every true fact of the fixture world."""
    return teach_facts(make_tiny_model(tmp_path_factory.mktemp("knowing") / "gpt2", "gpt2", n_embd=64))


class RecordTrainBatches(Callback):
    """Appends the case ids of every training batch to a JSON-lines file (resume tests; by class path in configs)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps([record.case_id for record in batch.records]) + "\n")


class RecordRun(Callback):
    """Writes, on rank 0, every micro-batch's loss from all ranks (in global batch order) and the final metrics
    as JSON (distributed tests run train.py in subprocesses; referenced by class path)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().reshape(1) * trainer.accumulate_grad_batches  # undo Lightning's scaling
        gathered = trainer.strategy.all_gather(loss)  # [world, 1]: rank r trained on global batch k * world + r
        self.losses += [float(x) for x in gathered.reshape(-1)]

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
            self.path.write_text(json.dumps({"losses": self.losses, "metrics": metrics,
                                             "global_step": trainer.global_step}))


class KillOnce(Callback):
    """SIGKILLs its own process at the start of step ``step`` the first time (``marker`` records that it did)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
