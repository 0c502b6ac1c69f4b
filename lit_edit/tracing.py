"""Causal tracing (Meng et al., 2022): where in the network a fact about a subject is recalled.

Run the prompt clean, then with Gaussian noise added to the subject tokens' input embeddings (which usually
destroys the answer), then corrupted again but with one clean state restored: a block's output (the hidden state),
or its MLP's or its attention's output, at one token and layer. The probability of the correct answer that the
restoration brings back, over the corrupted one, is that state's *indirect effect*. One forward pass restores
every token of one layer at once (one row per token and noise sample); the noise samples are drawn once per
fact, so every restoration is compared against the same corruptions.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_edit.data.batch import context_length
from lit_edit.data.datamodule import non_empty, resolve_data_path
from lit_edit.data.readers import iter_json_records
from lit_edit.data.records import EditDataError
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.hooks import removed_after
from lit_edit.mechanics.model_layout import ModelLayout
from lit_edit.mechanics.subject_tokens import subject_token_span

Kind = Literal["hidden", "mlp", "attention"]
KINDS: tuple[Kind, ...] = ("hidden", "mlp", "attention")


@dataclass(frozen=True)
class Fact:
    """A prompt that names ``subject`` and should be completed by ``answer`` (``None``: the model's own greedy
    next token, as ROME traces the model's prediction)."""

    prompt: str
    subject: str
    answer: str | None = None


def read_known_facts(spec: str, option: str = "known facts path") -> list[Fact]:
    """ROME's known facts (``known_1000.json``: ``prompt``, ``subject``, ``attribute``) from a data path such as
    ``shared:rome_known/known_1000.json#0:20``; a record without those fields is an error naming file and field,
    and a path or slice that selects no fact an error naming ``option`` (the setting it came from)."""
    path, window = resolve_data_path(spec, option)
    facts = []
    for index, line, record in iter_json_records(path):
        values = []
        for name in ("prompt", "subject", "attribute"):
            value = record.get(name) if isinstance(record, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise EditDataError(str(path), index, name, f"expected a non-empty string, got {value!r}", line)
            values.append(value)
        facts.append(Fact(*values))
    return non_empty(facts[window], len(facts), spec, option)


def answer_token(tokenizer: PreTrainedTokenizerBase, answer: str, separator: str = " ") -> int:
    """The first token of ``answer`` as it follows a prompt (joined by ``separator``, as edit targets are)."""
    ids = tokenizer(separator + answer.lstrip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"answer {answer!r} tokenizes to nothing")
    return int(ids[0])


def embedding_noise_std(model: nn.Module, tokenizer: PreTrainedTokenizerBase, subjects: Sequence[str]) -> float:
    """Standard deviation of the input embeddings of the subjects' tokens (ROME's noise is 3 times this)."""
    ids = sorted({i for s in subjects for i in tokenizer(s, add_special_tokens=False)["input_ids"]})
    if not ids:
        raise ValueError("no subject tokens to measure the embeddings' spread on")
    weight = model.get_input_embeddings().weight.detach()
    return float(weight[torch.tensor(ids, device=weight.device)].float().std())


@dataclass
class CausalTrace:
    """One fact's trace: ``restored[kind]`` is the answer's probability, ``[token, layer]``, with that state
    restored (mean over noise samples); ``indirect_effect(kind)`` subtracts the corrupted probability."""

    prompt: str
    subject: str
    answer: str
    answer_token_id: int
    tokens: list[str]
    subject_span: tuple[int, int]
    clean_prob: float
    corrupted_prob: float
    noise: float
    samples: int
    window: int
    restored: dict[str, Tensor] = field(default_factory=dict)

    @property
    def last_subject_token(self) -> int:
        return self.subject_span[1] - 1

    def indirect_effect(self, kind: Kind) -> Tensor:
        return self.restored[kind] - self.corrupted_prob

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "subject": self.subject, "answer": self.answer,
                "answer_token_id": self.answer_token_id, "tokens": self.tokens, "subject_span": list(self.subject_span),
                "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob, "noise": self.noise,
                "samples": self.samples, "window": self.window,
                "restored_prob": {kind: scores.tolist() for kind, scores in self.restored.items()},
                "indirect_effect": {kind: self.indirect_effect(kind).tolist() for kind in self.restored}}  # type: ignore[arg-type]


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, value: Tensor) -> Any:
    return (value, *output[1:]) if isinstance(output, tuple) else value


def traced_module(layout: ModelLayout, kind: Kind, layer: int) -> nn.Module:
    """The module whose output is the state ``kind`` of ``layer``: the block (hidden state), its MLP or attention."""
    if kind == "hidden":
        return layout.blocks[layer]
    name = layout.mlp_name(layer) if kind == "mlp" else layout.attention_name(layer)
    return layout.model.get_submodule(name)


def window_layers(layer: int, window: int, num_layers: int) -> range:
    """The ``window`` layers centred on ``layer`` (ROME restores MLP and attention outputs over such a window)."""
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))


class Tracer:
    """Runs one prompt clean, corrupted, and corrupted with restorations, on ``model`` (which it never writes)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layout: ModelLayout | None = None,
                 seed: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.layout = layout or ModelLayout(model)
        self.seed = seed
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer_probability(self, input_ids: Tensor, answer_id: int) -> Tensor:
        """The answer's next-token probability after each row of ``input_ids``."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                                  "use_cache": False}
        if self._keep_last:  # only the last position's logits are needed
            kwargs["logits_to_keep"] = 1
        logits = self.model(**kwargs).logits[:, -1]
        return torch.softmax(logits.float(), dim=-1)[:, answer_id]

    @torch.no_grad()
    def trace(self, fact: Fact, noise: float, samples: int = 10, window: int = 10,
              kinds: Sequence[Kind] = KINDS, positions: Sequence[int] | None = None) -> CausalTrace:
        """Trace ``fact``: restore each of ``kinds`` at every layer and at ``positions`` (default: every token)."""
        if samples < 1 or window < 1:
            raise ConfigurationError(f"tracing needs samples and window of at least 1, got {samples} and {window}")
        if not math.isfinite(noise) or noise < 0:
            raise ConfigurationError(f"tracing needs a finite noise std >= 0, got {noise}")
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown trace kinds {sorted(unknown)}; expected some of {list(KINDS)}")
        start, stop = subject_token_span(self.tokenizer, fact.prompt, fact.subject)
        ids = torch.tensor([self.tokenizer(fact.prompt)["input_ids"]], device=self.device)
        limit = context_length(getattr(self.model, "config", None))
        if limit is not None and ids.shape[1] > limit:  # a learned position table has no row past it
            raise EditDataError(f"fact {fact.prompt[:40]!r}", None, None,
                                f"the prompt is {ids.shape[1]} tokens, more than the model's context of {limit}; "
                                "shorten it (tracing corrupts the subject, so the prompt cannot be cut)")
        n_tokens, n_layers = ids.shape[1], self.layout.num_layers
        clean_states, logits_prob = self._clean_run(ids, kinds)
        if fact.answer is None:
            answer_id = int(logits_prob.argmax())
            answer = self.tokenizer.decode([answer_id])
        else:
            answer_id, answer = answer_token(self.tokenizer, fact.answer), fact.answer
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        hidden = self.layout.embeddings().weight.shape[1]
        draws = (torch.randn(samples, stop - start, hidden, generator=generator) * noise).to(
            self.device, self.layout.embeddings().weight.dtype)
        with self._corrupted(draws, start, stop, rows_per_sample=1):
            corrupted = float(self.answer_probability(ids.expand(samples, -1), answer_id).mean())
        positions = list(range(n_tokens)) if positions is None else list(positions)
        restored = {}
        for kind in kinds:
            scores = torch.full((n_tokens, n_layers), math.nan)
            width = 1 if kind == "hidden" else window
            for layer in range(n_layers):
                layers = window_layers(layer, width, n_layers)
                scores[positions, layer] = self._restored_probability(
                    ids, answer_id, draws, start, stop, kind, layers, positions, clean_states).cpu()
            restored[kind] = scores
        tokens = [self.tokenizer.decode([i]) for i in ids[0].tolist()]
        return CausalTrace(fact.prompt, fact.subject, answer, answer_id, tokens, (start, stop),
                           float(logits_prob[answer_id]), corrupted, noise, samples, window, restored)

    def _clean_run(self, ids: Tensor, kinds: Sequence[Kind]) -> tuple[dict[tuple[str, int], Tensor], Tensor]:
        """Every traced module's clean output for the one prompt (``[tokens, hidden]``) and the next-token
        distribution."""
        states: dict[tuple[str, int], Tensor] = {}
        handles = []
        for kind in kinds:
            for layer in range(self.layout.num_layers):
                def record(module: nn.Module, args: Any, output: Any, key: tuple[str, int] = (kind, layer)) -> None:
                    states[key] = _first(output)[0].detach().clone()
                handles.append(traced_module(self.layout, kind, layer).register_forward_hook(record))
        with removed_after(handles):
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        return states, torch.softmax(logits[0, -1].float(), dim=-1)

    @contextmanager
    def _corrupted(self, draws: Tensor, start: int, stop: int, rows_per_sample: int) -> Iterator[None]:
        """Adds noise to the subject's input embeddings: rows ``[k * samples, (k + 1) * samples)`` get the
        ``samples`` draws, for each of ``rows_per_sample`` groups."""
        noise = draws.repeat(rows_per_sample, 1, 1)

        def corrupt(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            output = output.clone()
            output[:, start:stop] += noise
            return output

        with removed_after([self.layout.embeddings().register_forward_hook(corrupt)]):
            yield

    def _restored_probability(self, ids: Tensor, answer_id: int, draws: Tensor, start: int, stop: int, kind: Kind,
                              layers: range, positions: list[int],
                              clean_states: dict[tuple[str, int], Tensor]) -> Tensor:
        """Mean answer probability per position with ``kind``'s clean output restored there at ``layers``."""
        samples = draws.shape[0]
        rows = torch.arange(len(positions) * samples, device=self.device)
        tokens = torch.tensor(positions, device=self.device).repeat_interleave(samples)
        handles = []
        for layer in layers:
            clean = clean_states[(kind, layer)]

            def restore(module: nn.Module, args: Any, output: Any, clean: Tensor = clean) -> Any:
                state = _first(output).clone()
                state[rows, tokens] = clean[tokens].to(state.dtype)
                return _with_first(output, state)
            handles.append(traced_module(self.layout, kind, layer).register_forward_hook(restore))
        with self._corrupted(draws, start, stop, rows_per_sample=len(positions)), removed_after(handles):
            probs = self.answer_probability(ids.expand(len(rows), -1), answer_id)
        return probs.view(len(positions), samples).mean(1)


def trace_fact(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fact: Fact, *, noise: float | None = None,
               noise_scale: float = 3.0, samples: int = 10, window: int = 10, kinds: Sequence[Kind] = KINDS,
               layout: ModelLayout | None = None, seed: int = 0) -> CausalTrace:
    """Trace one fact; ``noise`` (the noise's standard deviation) defaults to ``noise_scale`` times the spread of
    the subject's token embeddings."""
    if noise is None:
        noise = noise_scale * embedding_noise_std(model, tokenizer, [fact.subject])
    return Tracer(model, tokenizer, layout, seed).trace(fact, noise, samples, window, kinds)


def mlp_effect_by_layer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, facts: Sequence[Fact], *,
                        noise_scale: float = 3.0, samples: int = 10, window: int = 1,
                        layout: ModelLayout | None = None, seed: int = 0) -> Tensor:
    """Mean indirect effect of each layer's MLP output at the subject's last token, over ``facts``."""
    if not facts:
        raise ValueError("layer selection needs at least one fact to trace")
    noise = noise_scale * embedding_noise_std(model, tokenizer, [f.subject for f in facts])
    tracer = Tracer(model, tokenizer, layout, seed)
    effects = []
    for fact in facts:
        last = subject_token_span(tokenizer, fact.prompt, fact.subject)[1] - 1
        trace = tracer.trace(fact, noise, samples, window, kinds=("mlp",), positions=[last])
        effects.append(trace.indirect_effect("mlp")[last])
    return torch.stack(effects).mean(0)


@dataclass
class LayerSelection:
    """Choose the layer to edit by causal tracing: the one whose MLP output, restored at the subject's last
    token, brings back most of the answer's probability on average over ``facts``."""

    facts: str = "shared:rome_known/known_1000.json#0:20"
    """Facts to trace (ROME's ``known_1000.json`` layout: prompt, subject, attribute), as a data path with slice."""
    answer: Literal["model", "given"] = "model"
    """Trace the model's own prediction (``model``, as ROME) or the file's ``attribute`` (``given``)."""
    samples: int = 10
    """Noise samples per fact."""
    window: int = 1
    """MLP outputs restored together around each layer (ROME's figures use 10)."""
    noise_scale: float = 3.0
    """Noise standard deviation in units of the subject tokens' embedding spread."""
    neighbours: int = 0
    """``select_layers`` also returns this many layers on each side of the chosen one."""
    seed: int = 0

    def effects(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                layout: ModelLayout | None = None) -> Tensor:
        facts = read_known_facts(self.facts)
        if self.answer == "model":
            facts = [Fact(f.prompt, f.subject) for f in facts]
        return mlp_effect_by_layer(model, tokenizer, facts, noise_scale=self.noise_scale, samples=self.samples,
                                   window=self.window, layout=layout, seed=self.seed)

    def select(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
               layout: ModelLayout | None = None) -> int:
        return int(self.effects(model, tokenizer, layout).argmax())

    def select_layers(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      layout: ModelLayout | None = None, top: int | None = None) -> list[int]:
        """The traced layer and ``neighbours`` on each side, none above ``top`` (default: the last block; ROME and
        MEMIT pass the one below it, since a value they write at the subject in the last block reaches no answer)."""
        layout = layout or ModelLayout(model)
        top = layout.num_layers - 1 if top is None else max(0, top)
        best = min(self.select(model, tokenizer, layout), top)
        return list(range(max(0, best - self.neighbours), min(top, best + self.neighbours) + 1))


def plot_trace(trace: CausalTrace, path: str | Path) -> Path:
    """ROME-style heatmaps, one panel per traced kind: the answer's probability with each state restored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(trace.restored)
    titles = {"hidden": "hidden state (block output)", "mlp": f"MLP output (window {trace.window})",
              "attention": f"attention output (window {trace.window})"}
    colours = {"hidden": "Purples", "mlp": "Greens", "attention": "Reds"}
    labels = [f"{t!r}*" if trace.subject_span[0] <= i < trace.subject_span[1] else repr(t)
              for i, t in enumerate(trace.tokens)]
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 0.32 * len(labels) + 1.8), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        scores = trace.restored[kind].numpy()
        image = axis.pcolormesh(scores, cmap=colours[kind], vmin=min(trace.corrupted_prob, float(scores.min())))
        axis.invert_yaxis()
        axis.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=7)
        axis.set_xlabel("layer")
        axis.set_title(titles[kind], fontsize=9)
        figure.colorbar(image, ax=axis).set_label(f"p({trace.answer.strip()!r})", fontsize=8)
    figure.suptitle(f"{trace.prompt!r} -> {trace.answer!r}: clean p={trace.clean_prob:.3f}, "
                    f"corrupted p={trace.corrupted_prob:.3f} (noise {trace.noise:.3f}, {trace.samples} samples)",
                    fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """Mean indirect effect by layer at the subject's last token and at the last token, one line per kind (the
    averages that ``lit-edit trace`` writes to ``summary.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    colours = {"hidden": "purple", "mlp": "green", "attention": "red"}
    for axis, where, title in ((axes[0], "last_subject_token", "at the subject's last token"),
                               (axes[1], "last_token", "at the prompt's last token")):
        for kind in KINDS:
            values = summary.get(f"{kind}_effect_at_{where}")
            if values is not None:
                axis.plot(range(len(values)), values, color=colours[kind], label=kind)
        axis.set_title(f"mean indirect effect {title}", fontsize=9)
        axis.set_xlabel("layer")
        axis.axhline(0, color="grey", linewidth=0.5)
    axes[0].set_ylabel("p(answer) restored - corrupted")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{summary['facts']} facts, clean p {summary['mean_clean_prob']:.3f}, corrupted p "
                    f"{summary['mean_corrupted_prob']:.3f}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_trace(trace: CausalTrace, stem: str | Path) -> tuple[Path, Path]:
    """``STEM.png`` (heatmaps) and ``STEM.json`` (every number behind them)."""
    stem = Path(stem)
    json_path = stem.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(trace.to_dict(), indent=1))
    return plot_trace(trace, stem.with_suffix(".png")), json_path


__all__ = ["KINDS", "CausalTrace", "Fact", "LayerSelection", "Tracer",
           "answer_token", "embedding_noise_std", "mlp_effect_by_layer", "plot_summary", "plot_trace", "read_known_facts",
           "trace_fact", "window_layers", "write_trace"]
