"""C = E[k kᵀ]: the second moment of the keys that an MLP output projection reads, per model and layer.

ROME and MEMIT spread an edit's change along C⁻¹k*, the direction that disturbs the other stored keys least.
C is estimated once from text (a corpus file, or by default text the model samples itself), streamed with a
progress bar, saved every few batches so an interrupted estimate resumes where it stopped, and cached under
``checkpoints/key_statistics/`` for every later edit of the same model and layer. A cache file holds only tensors
and plain values and is read with ``weights_only=True`` (users carry caches between machines: a planted file must
not run code); one that cannot be read so is recomputed, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_edit.errors import UserInputError
from lit_edit.mechanics.atomic_files import save_file_atomically
from lit_edit.mechanics.hooks import captured_inputs, stopping_after
from lit_edit.mechanics.model_layout import ModelLayout
from lit_edit.models import checkpoints_dir
from lit_edit.safe_files import load_tensors_file

#: Saved with every cache file; a file written by another version is recomputed, not misread. Version 2 stores
#: a moment's sum and count as a tensor and an int (version 1 pickled a ``KeyMoment`` object, which a
#: ``weights_only`` load refuses).
FORMAT_VERSION = 2


@dataclass
class KeyStatisticsSpec:
    """Where the text for C comes from and how much of it."""

    corpus: str | None = None
    """A text file (one passage per line) to estimate C from; ``None``: text the model samples itself."""
    samples: int = 1000
    """Passages (sampled or read) to average over."""
    tokens: int = 64
    """Tokens per passage."""
    batch_size: int = 64
    """Passages sampled per batch (part of what the cache is keyed by: batch i is sampled under seed + i)."""
    seed: int = 0
    """Seed of the sampled passages (batch ``i`` is sampled under ``seed + i``, so a resumed run sees the same text)."""
    save_every: int = 8
    """Batches between the partial saves that an interrupted estimate resumes from."""


@dataclass
class KeyMoment:
    """Running sums for one layer: C = sum / count."""

    sum: Tensor
    count: int = 0

    def add(self, keys: Tensor) -> None:
        keys = keys.double()
        self.sum += keys.T @ keys
        self.count += keys.shape[0]

    def second_moment(self) -> Tensor:
        return (self.sum / max(self.count, 1)).float()

    def digest(self) -> str:
        """A short hash of the sums: two machines that sampled the same text got the same C exactly when it agrees."""
        return hashlib.sha256(self.sum.cpu().numpy().tobytes()).hexdigest()[:16]


def _sampled_parameters(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Every eighth parameter (by order): the weights a model's fingerprints read."""
    named = list(model.named_parameters())
    return named[:: max(1, len(named) // 8)]


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of the config and of a few weights: different models or fine-tunes never share a cache.

    The config includes where the model was read from (``_name_or_path``), the transformers version and the
    dtype, so the same weights read from another directory get another hash (and cache)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for _, parameter in _sampled_parameters(model):
        digest.update(parameter.detach().float().cpu().flatten()[:4096].numpy().tobytes())
    return digest.hexdigest()[:16]


def model_weights_fingerprint(model: nn.Module) -> str:
    """A short hash of every parameter's name and shape and of :func:`model_fingerprint`'s sampled weights
    rounded to bfloat16: what an editor checkpoint compares its base model by. Unlike :func:`model_fingerprint`
    it does not change with the directory the model was read from, the transformers version, or whether the
    weights were loaded (or cast by DeepSpeed) in float32 or bfloat16."""
    digest = hashlib.sha256(json.dumps([(name, list(p.shape)) for name, p in model.named_parameters()]).encode())
    for _, parameter in _sampled_parameters(model):
        digest.update(parameter.detach().flatten()[:4096].to(torch.bfloat16).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def json_digest(value: object, length: int) -> str:
    """A short hash of a JSON-able value that does not depend on key order: the name of a cache keyed by settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def cache_path(model: PreTrainedModel, module_name: str, spec: KeyStatisticsSpec,
               root: Path | None = None) -> Path:
    """``checkpoints/key_statistics/<model hash>/<module>/<source hash>.pt``."""
    source = dict(asdict(spec), save_every=None)  # how often partial sums are saved does not change them
    if spec.corpus:
        source["corpus_mtime"] = os.path.getmtime(spec.corpus)
    tag = json_digest(source, 12)
    return (root or checkpoints_dir() / "key_statistics") / model_fingerprint(model) / module_name / f"{tag}.pt"


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` whole or not at all (:func:`~lit_edit.mechanics.atomic_files.save_file_atomically`)."""
    save_file_atomically(path, lambda staged: torch.save(obj, staged))


class PassageStream:
    """Batches of token ids: sampled by the model, or read from a corpus file."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: KeyStatisticsSpec) -> None:
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.lines: list[str] | None = None
        if spec.corpus:
            path = Path(spec.corpus)
            if not path.is_file():
                raise FileNotFoundError(f"key statistics corpus {path} does not exist")
            self.lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not self.lines:
                raise ValueError(f"key statistics corpus {path} has no text")

    def batches(self) -> int:
        return -(-self.spec.samples // self.spec.batch_size)

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask) of batch ``index``; the same every time it is asked for."""
        size = min(self.spec.batch_size, self.spec.samples - index * self.spec.batch_size)
        device = self.model.device
        if self.lines is not None:
            texts = [self.lines[(index * self.spec.batch_size + i) % len(self.lines)] for i in range(size)]
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.spec.tokens)
            return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        prompt = torch.full((size, 1), start, dtype=torch.long, device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.spec.seed + index)
            ids = self.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0,
                                      max_new_tokens=self.spec.tokens - 1, min_new_tokens=self.spec.tokens - 1,
                                      pad_token_id=self.tokenizer.pad_token_id or start)
        return ids, torch.ones_like(ids)


@torch.no_grad()
def estimate_key_moments(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layout: ModelLayout,
                         layers: list[int], spec: KeyStatisticsSpec | None = None,
                         root: Path | None = None, progress: bool = True) -> dict[int, Tensor]:
    """C for each of ``layers``: read from the cache, or estimated (resuming a partial estimate) and cached."""
    spec = spec or KeyStatisticsSpec()
    names = {layer: layout.mlp_out_name(layer) for layer in layers}
    paths = {layer: cache_path(model, names[layer], spec, root) for layer in layers}
    saved = {layer: _load(path, _width(layout, layer)) for layer, path in paths.items()}
    result = {layer: found["moment"].second_moment() for layer, found in saved.items() if found and found["done"]}
    missing = [layer for layer in layers if layer not in result]
    if not missing:
        return result
    partials = {layer: saved[layer] for layer in missing}
    points = {p["next_batch"] if p else 0 for p in partials.values()}
    start = points.pop() if len(points) == 1 else 0  # the layers are estimated together: resume only in step
    moments = {layer: partials[layer]["moment"] if start else KeyMoment(_zeros(layout, layer)) for layer in missing}
    stream = PassageStream(model, tokenizer, spec)
    modules = {names[layer]: layout.model.get_submodule(names[layer]) for layer in missing}
    bar = tqdm(range(start, stream.batches()), initial=start, total=stream.batches(), disable=not progress,
               desc=f"key statistics, layers {missing}")
    for index in bar:
        input_ids, attention_mask = stream.batch(index)
        with captured_inputs(modules) as seen, stopping_after(modules[names[max(missing)]]):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        keep = attention_mask.bool()
        for layer in missing:
            moments[layer].add(seen[names[layer]][keep].cpu())
        done = index + 1 == stream.batches()
        if done or (index + 1 - start) % spec.save_every == 0:
            for layer in missing:
                atomic_save({"version": FORMAT_VERSION, "sum": moments[layer].sum, "count": moments[layer].count,
                             "next_batch": index + 1, "done": done, "spec": asdict(spec)}, paths[layer])
    for layer in missing:
        result[layer] = moments[layer].second_moment()
    return result


def _width(layout: ModelLayout, layer: int) -> int:
    """The size of the keys the layer's MLP output projection reads."""
    module = layout.mlp_out(layer)
    return int(module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0])


def _zeros(layout: ModelLayout, layer: int) -> Tensor:
    width = _width(layout, layer)
    return torch.zeros(width, width, dtype=torch.float64)


def read_moment_file(path: Path) -> dict:
    """A cache file's contents, its sums as a :class:`KeyMoment` under ``"moment"``; raises
    :class:`~lit_edit.errors.UserInputError` naming the file if it is unsafe, unreadable or of another format."""
    saved = load_tensors_file(path, "key statistics cache file")
    if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
        version = saved.get("version") if isinstance(saved, dict) else None
        raise UserInputError(f"{path}: a key statistics cache of format {version}, not {FORMAT_VERSION}")
    if not isinstance(saved.get("sum"), Tensor) or not isinstance(saved.get("count"), int) \
            or not isinstance(saved.get("next_batch"), int) or not isinstance(saved.get("done"), bool):
        raise UserInputError(f"{path}: a key statistics cache without its sum, count and progress (a damaged file)")
    return {**saved, "moment": KeyMoment(saved["sum"].double(), saved["count"])}


def _load(path: Path, width: int) -> dict | None:
    """:func:`read_moment_file` of a layer with keys of ``width``, or ``None`` (with a warning naming the file)
    where the cache cannot be trusted."""
    if not path.exists():
        return None
    try:
        saved = read_moment_file(path)
        if tuple(saved["sum"].shape) != (width, width):
            raise UserInputError(f"{path}: sums of shape {tuple(saved['sum'].shape)}, not ({width}, {width})")
        return saved
    except UserInputError as error:  # a truncated, foreign, old-format or code-running file: say so, then recompute
        warnings.warn(f"key statistics cache {path} is unreadable here ({error}); recomputing it (files written before "
                      f"format {FORMAT_VERSION} held a pickled object and are recomputed once)", stacklevel=2)
        return None


def well_conditioned(moment: Tensor, max_condition: float = 1.0e6, name: str = "C") -> Tensor:
    """``moment`` in float64; if singular or ill-conditioned, with a ridge that bounds its condition number
    by ``max_condition`` (and a warning saying so)."""
    moment = moment.double()
    eigenvalues = torch.linalg.eigvalsh(moment)
    largest, smallest = eigenvalues[-1].item(), eigenvalues[0].item()
    if largest <= 0:
        raise ValueError(f"{name} is zero: no keys were seen")
    if smallest > largest / max_condition:
        return moment
    ridge = largest / max_condition - min(smallest, 0.0)
    warnings.warn(f"{name} is ill-conditioned (eigenvalues {smallest:.3g}..{largest:.3g}); adding {ridge:.3g}·I",
                  stacklevel=2)
    return moment + ridge * torch.eye(moment.shape[0], dtype=moment.dtype, device=moment.device)


def regularised_inverse_solve(moment: Tensor, rhs: Tensor, max_condition: float = 1.0e6,
                              name: str = "C") -> Tensor:
    """Solve ``C x = rhs`` in float64, with :func:`well_conditioned`'s ridge where C needs one."""
    moment = well_conditioned(moment, max_condition, name)
    return torch.linalg.solve(moment, rhs.double().to(moment.device))
