"""C = E[k kᵀ]: the second moment of the keys that an MLP output projection reads, per model and layer.

ROME and MEMIT spread an edit's change along C⁻¹k*, the direction that disturbs the other stored keys least.
C is estimated once from text (a corpus file, or by default text the model samples itself), streamed with a
progress bar, saved every few batches so an interrupted estimate resumes where it stopped, and cached under
``checkpoints/key_statistics/`` for every later edit of the same model and layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_edit.model_layout import ModelLayout
from lit_edit.models import checkpoints_dir
from lit_edit.partial_forward import stopping_after

#: Saved with every cache file; a file written by another version is recomputed, not misread.
FORMAT_VERSION = 1


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


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of the config and of a few weights: different models or fine-tunes never share a cache."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for parameter in list(model.parameters())[:: max(1, len(list(model.parameters())) // 8)]:
        digest.update(parameter.detach().float().cpu().flatten()[:4096].numpy().tobytes())
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
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    torch.save(obj, partial)
    partial.replace(path)


@contextmanager
def captured_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Records the input of each named module during forward passes inside the block."""
    seen: dict[str, Tensor] = {}
    with ExitStack() as stack:
        for name, module in modules.items():
            def hook(_module: nn.Module, args: tuple[Tensor, ...], name: str = name) -> None:
                seen[name] = args[0]
            stack.callback(module.register_forward_pre_hook(hook).remove)
        yield seen


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
    result: dict[int, Tensor] = {}
    for layer, path in paths.items():
        saved = _load(path)
        if saved is not None and saved["done"]:
            result[layer] = saved["moment"].second_moment()
    missing = [layer for layer in layers if layer not in result]
    if not missing:
        return result
    partials = {layer: _load(paths[layer]) for layer in missing}
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
                atomic_save({"version": FORMAT_VERSION, "moment": moments[layer], "next_batch": index + 1,
                              "done": done, "spec": asdict(spec)}, paths[layer])
    for layer in missing:
        result[layer] = moments[layer].second_moment()
    return result


def _zeros(layout: ModelLayout, layer: int) -> Tensor:
    module = layout.mlp_out(layer)
    width = module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0]
    return torch.zeros(width, width, dtype=torch.float64)


def _load(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: say so, then recompute
        warnings.warn(f"key statistics cache {path} is unreadable ({error}); recomputing it", stacklevel=2)
        return None
    if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
        warnings.warn(f"key statistics cache {path} has another format; recomputing it", stacklevel=2)
        return None
    return saved


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
