"""Tiny random models and a word-level tokenizer built in the test: nothing is downloaded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
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

#: Seconds a training or evaluation subprocess of a test may take (they take well under a minute on two idle cores).
SUBPROCESS_TIMEOUT = 300


def run_bounded(args: list[str], *, cwd: Path, env: dict[str, str],
                timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True)`` that cannot hang a CI run.

    The command runs in its own process group with ``faulthandler`` on. Past ``timeout`` the whole group (ranks a
    launcher started included) gets SIGABRT, so each process prints the stack it was stuck in, and the result comes
    back with that output and a non-zero return code instead of ``TimeoutExpired`` with nothing to go on.
    """
    process = subprocess.Popen(args, cwd=cwd, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        err = f"{err}\n[run_bounded] timed out after {timeout:.0f} s; the stacks above are where it hung\n"
    return subprocess.CompletedProcess(args, process.returncode, out, err)

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


def _weights_checksum(model: torch.nn.Module) -> torch.Tensor:
    """Each parameter's and buffer's sum, in float64: cheap, and moved by any in-place change a test could make."""
    tensors = [*model.parameters(), *model.buffers()]
    return torch.stack([t.detach().double().sum() for t in tensors]) if tensors else torch.zeros(0)


@pytest.fixture(scope="module", autouse=True)
def cached_models_stay_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the module that changed a base model of ``lit_edit.models``' cache in place, and drop that model from
    the cache: every later test shares it (editors never change it), so a change made there would fail tests far
    from its cause (a test once did; 10 unrelated tests failed). Models first loaded inside the module are checked
    from the next module on."""
    from lit_edit import models as model_cache

    before = {key: _weights_checksum(model) for key, model in model_cache._MODEL_CACHE.items()}
    yield
    changed = [key for key, model in list(model_cache._MODEL_CACHE.items())
               if key in before and not torch.equal(before[key], _weights_checksum(model))]
    for key in changed:
        del model_cache._MODEL_CACHE[key]
    if changed:
        names = ", ".join(str(key[0]) for key in changed)
        pytest.fail(f"{request.module.__name__} changed the cached base model(s) {names} in place; change a copy "
                    "(copy.deepcopy) instead", pytrace=False)


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


TRAIN_STEPS = 4


def tiny_training_config(model: ModelSpec, splits: dict[str, Path], work: Path, *, devices: int = 1,
                         editor: str = "enn", callbacks: list[dict] = ()) -> dict:
    """configs/train/enn.yaml (or MEND) on a tiny model, as train.py reads it: TRAIN_STEPS optimizer steps of a global
    batch of two edit batches of two edits (split over ``devices`` ranks, accumulated on one), one epoch, then
    validation on 6 edits. ``last.ckpt`` every 2 steps in ``work/ckpt``; ``RecordRun`` writes ``work/record.json``."""
    from lit_edit.cli import CONFIG_DIR
    from lit_edit.config_files import load_config

    config = load_config(CONFIG_DIR / "train" / "enn.yaml")
    model_config = {"name": model.name, "kind": "causal", "editable": model.editable}
    config["model"]["init_args"].update(model=model_config, inner_lr=1.0e-2, lr=1.0e-3, lr_lr=1.0e-3, c_loc=1.0)
    if editor == "mend":
        config["model"] = {"class_path": "lit_edit.editors.MEND",
                           "init_args": {"model": model_config, "rank": 8, "lr": 1.0e-3, "lr_lr": 1.0e-3}}
    config["data"].update({split: str(path) for split, path in splits.items()})
    config["data"].update(edits_per_batch=2, limit_val=6)  # 6 validation edits: 3 per rank, no padding
    config["trainer"].update(accelerator="cpu", max_steps=TRAIN_STEPS, val_check_interval=None,
                             check_val_every_n_epoch=1, logger=False, enable_progress_bar=False, max_time=None,
                             enable_model_summary=False, num_sanity_val_steps=0, devices=devices,
                             accumulate_grad_batches=2 // devices, limit_train_batches=2 * TRAIN_STEPS // devices)
    config["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(work / "ckpt"), "every_n_train_steps": 2, "save_top_k": 0, "save_last": True}},
        {"class_path": "conftest.RecordRun", "init_args": {"path": str(work / "record.json")}},
        *callbacks,
    ]
    config["ckpt_path"] = "last"
    return config


def assert_same_training(record: dict, state: dict, reference: tuple[dict, dict]) -> None:
    """Same micro-batch losses, same validation ES/DD and the same trained weights as the reference run."""
    assert "losses" in record, record.get("output")
    expected, expected_state = reference
    assert record["global_step"] == expected["global_step"] == TRAIN_STEPS
    assert len(record["losses"]) == 2 * TRAIN_STEPS
    torch.testing.assert_close(torch.tensor(record["losses"]), torch.tensor(expected["losses"]), rtol=1e-5, atol=1e-6)
    for key in ("val/es", "val/dd", "val/retention", "val/edit_nll"):
        assert record["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-5, abs=1e-6), key
    assert sorted(state) == sorted(expected_state)
    for key, value in expected_state.items():
        torch.testing.assert_close(state[key].float(), value.float(), rtol=1e-5, atol=1e-6, msg=key)


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
    """Sends ``signal`` (default SIGKILL) to its own process at the start of step ``step``, the first time only
    (``marker`` records that it did)."""

    def __init__(self, step: int, marker: str, signal: str = "SIGKILL") -> None:
        self.step = step
        self.marker = Path(marker)
        self.signal = signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text("killed")
            os.kill(os.getpid(), getattr(signal, self.signal))


class SlurmProbe(Callback):
    """Appends, at the start of every training batch on every rank, a JSON line with the rank, the step, the
    batch's case ids and the job's SLURM restart count; then sleeps ``seconds`` (so a test can requeue a job
    while it trains)."""

    def __init__(self, path: str, seconds: float = 0.0) -> None:
        self.path = Path(path)
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        line = {"rank": trainer.global_rank, "world": trainer.world_size, "step": trainer.global_step,
                "cases": [record.case_id for record in batch.records],
                "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
                "environment": type(trainer.strategy.cluster_environment).__name__}
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        time.sleep(self.seconds)


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """``os.environ`` as it was before the test. An in-process distributed run sets ``MASTER_ADDR``, ``LOCAL_RANK``
    and others there; a later test's ``python evaluate.py --trainer.devices 2`` would inherit them, take itself
    for one rank of an outside launcher, and wait forever for the other rank instead of starting it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
