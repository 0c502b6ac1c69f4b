"""Knowledge Neurons (Dai et al., ACL 2022): find the MLP neurons that express a fact, then rewrite their values.

An MLP neuron's activation at the prompt's last token scales one column of the MLP output projection (its
*value*) into the residual stream. Integrated gradients attribute the probability of the fact's current answer to
each neuron: ``a_i`` times the mean gradient along the straight path from 0 to ``a_i`` (one layer scaled at a
time, the path's steps batched). Neurons above ``threshold`` times the prompt's largest attribution, in more than
``shared_fraction`` of the prompts (edit prompt and paraphrases), and (optionally) not above it on the prompts
of other facts, are the fact's knowledge neurons; the edit adds
``edit_scale * sign(a_i) * (e_new - e_old)`` to each one's value, with ``e`` the output embedding of a target's
first token. Dai et al. add ``e_new - e_old`` itself (BERT's GELU neurons that matter fire positively); with SiLU
or GELU a neuron can matter while negative, and its value then has to move the other way for ``a_i * v_i`` to
move towards the new answer. No training: the editor has no weights of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch
from lit_edit.data.records import EditRecord
from lit_edit.editors.base import Editor
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.edit_result import builds_on_weights
from lit_edit.mechanics.edited_model import EditedModel, EditFailedError
from lit_edit.mechanics.hooks import removed_after
from lit_edit.mechanics.model_layout import LayoutSpec, ModelLayout, as_out_in, weight_orientation
from lit_edit.mechanics.prefix_cache import read_stacked
from lit_edit.mechanics.settings import require_at_least, require_between, require_layers, require_positive
from lit_edit.models import ModelSpec
from lit_edit.tracing import LayerSelection


def last_token_activations(layout: ModelLayout, input_ids: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """Each layer's MLP intermediate activations (the output projection's input) at the last token, ``[inner]``."""
    captured: dict[int, Tensor] = {}
    handles = []
    for layer in layers:
        def record(module: torch.nn.Module, args: tuple[Tensor, ...], layer: int = layer) -> None:
            captured[layer] = args[0][0, -1].detach().clone()
        handles.append(layout.mlp_out(layer).register_forward_pre_hook(record))
    with removed_after(handles), torch.no_grad():
        layout.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    return captured


def integrated_gradients(layout: ModelLayout, input_ids: Tensor, target_id: int, layers: Sequence[int],
                         steps: int = 20, batch_size: int = 20, reuse_prefix_states: bool = True) -> Tensor:
    """Integrated-gradients attribution of ``p(target | prompt)`` to every MLP neuron of ``layers`` at the prompt's
    last token, ``[len(layers), inner]``. Each layer's activations are scaled by ``(k + 0.5) / steps`` (the path's
    midpoints) while the other layers run as usual; ``batch_size`` scaled copies of the prompt share a forward.
    The tokens before the last cannot see the scaling, so their key/value states are read once, and every forward
    runs the last token alone (``reuse_prefix_states=False``, or a model that cannot continue from read states: the
    whole prompt)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    input_ids = input_ids[:1]
    activations = last_token_activations(layout, input_ids, layers)
    alphas = (torch.arange(steps, device=input_ids.device, dtype=torch.float64) + 0.5) / steps
    # Only the last position's logits are needed: skip the vocabulary projection elsewhere where the model can.
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(layout.model.forward).parameters else {}
    past = read_stacked(layout.model, [input_ids[0, :-1].tolist()]) if reuse_prefix_states else None
    run_ids = input_ids if past is None else input_ids[:, -1:]
    attributions = []
    for layer in layers:
        active = activations[layer]
        gradient_sum = torch.zeros_like(active, dtype=torch.float32)
        for chunk in alphas.split(batch_size):
            scaled = (chunk.to(active.dtype)[:, None] * active[None]).requires_grad_(True)

            def substitute(module: torch.nn.Module, args: tuple[Tensor, ...],
                           scaled: Tensor = scaled) -> tuple[Tensor, ...]:
                inner = args[0].clone()
                inner[:, -1] = scaled
                return (inner, *args[1:])

            with removed_after([layout.mlp_out(layer).register_forward_pre_hook(substitute)]):
                ids = run_ids.expand(len(chunk), -1)
                inputs = {"attention_mask": torch.ones_like(ids), "use_cache": False}
                if past is not None:  # every copy continues after the same prompt states
                    inputs.update(past.select(torch.zeros(len(chunk), dtype=torch.long)).continuation(
                        layout.model.config, inputs["attention_mask"]))
                logits = layout.model(input_ids=ids, **inputs, **extra).logits
                probability = torch.softmax(logits[:, -1].float(), dim=-1)[:, target_id]
                (gradient,) = torch.autograd.grad(probability.sum(), scaled)
            gradient_sum += gradient.float().sum(0)
        attributions.append(active.float() * gradient_sum / steps)
    return torch.stack(attributions)


def above_threshold(scores: Tensor, threshold: float) -> Tensor:
    """Bool mask of the neurons whose attribution exceeds ``threshold`` times the prompt's largest."""
    top = scores.max()
    return scores > threshold * top if top > 0 else torch.zeros_like(scores, dtype=torch.bool)


def knowledge_neurons(attributions: Sequence[Tensor], threshold: float = 0.2, shared_fraction: float = 0.5,
                      max_neurons: int | None = None, exclude: Sequence[Tensor] = ()) -> list[tuple[int, int]]:
    """(layer index, neuron) pairs whose attribution exceeds ``threshold`` times its prompt's largest in more than
    ``shared_fraction`` of the prompts, except those above the threshold on any ``exclude`` attribution (prompts of
    other facts); the ``max_neurons`` with the largest mean attribution if more."""
    if not attributions:
        raise ValueError("no prompts to find knowledge neurons on")
    votes = torch.stack([above_threshold(scores, threshold) for scores in attributions]).sum(0)
    keep = votes > shared_fraction * len(attributions)
    for scores in exclude:
        keep &= ~above_threshold(scores, threshold)
    chosen = keep.nonzero().tolist()
    if max_neurons is not None and len(chosen) > max_neurons:
        mean = torch.stack(list(attributions)).mean(0)
        chosen.sort(key=lambda pair: -float(mean[pair[0], pair[1]]))
        chosen = chosen[:max_neurons]
    return sorted((int(layer), int(neuron)) for layer, neuron in chosen)


@dataclass(frozen=True)
class FoundNeurons:
    """What the editor found for one edit: the neurons (model layer, neuron), the sign of each one's activation on
    the edit prompt, and the answers it moves from and to."""

    case_id: str
    neurons: list[tuple[int, int]]
    signs: list[float]
    old_token: int
    new_token: int


class KnowledgeNeurons(Editor):
    """KN: integrated-gradients knowledge neurons, edited by rewriting their value vectors (no training)."""

    def __init__(self, model: ModelSpec | None = None, layers: list[int] | None = None,
                 layer_selection: LayerSelection | None = None, layout: LayoutSpec | None = None, steps: int = 20,
                 batch_size: int = 20, threshold: float = 0.2, shared_fraction: float = 0.5,
                 max_neurons: int | None = 10, edit_scale: float = 1.0, use_paraphrases: bool = True,
                 exclusion_prompts: int = 0, max_length: int = 128) -> None:
        """
        Args:
            model: the base model to edit.
            layers: layers whose MLP neurons are attributed (default: all; ``layer_selection`` overrides).
            layer_selection: choose the layers by causal tracing (:class:`lit_edit.tracing.LayerSelection`),
                once, at the first edit (so on the device the evaluation runs on).
            layout: module names of the model's blocks and MLP output projections (default: found by structure).
            steps: integrated-gradients steps along the path from zero to each activation (Dai et al.: 20).
            batch_size: path steps run together in one forward and backward pass.
            threshold: a neuron counts for a prompt above this fraction of that prompt's largest attribution.
            shared_fraction: a knowledge neuron counts for more than this fraction of the prompts.
            max_neurons: keep at most this many (largest mean attribution first); ``null`` for no limit.
            edit_scale: ``lambda`` in ``v_i += lambda * sign(a_i) * (e_new - e_old)``.
            use_paraphrases: attribute over the edit prompt and its paraphrases (as Dai et al.'s several
                prompts per fact); the paraphrase scores are then not measured on unseen prompts.
            exclusion_prompts: refinement against neurons that carry other facts too: attribute this many of the
                record's out-of-scope prompts (hard ones first), each for its own answer, and leave out every
                neuron above the threshold there. Such generic output neurons pass the sharing filter of a fact's
                few prompts and then move many unrelated answers. 0 turns it off; each prompt costs as much as an
                edit prompt.
            max_length: longest tokenized prompt.
        """
        owner = type(self).__name__
        if layers is not None:
            require_layers(owner, "layers", layers)
        require_at_least(owner, "steps", steps, 1)
        require_at_least(owner, "batch_size", batch_size, 1)
        require_between(owner, "threshold", threshold, 0.0, 1.0, low_open=True, high_open=True)
        require_between(owner, "shared_fraction", shared_fraction, 0.0, 1.0, high_open=True)
        if max_neurons is not None:
            require_at_least(owner, "max_neurons", max_neurons, 1)
        require_positive(owner, "edit_scale", edit_scale)
        require_at_least(owner, "exclusion_prompts", exclusion_prompts, 0)
        super().__init__(model, max_length)
        if self.kind != "causal":  # attribution reads the next-token logits at the prompt's last token
            raise ConfigurationError(f"{owner} edits causal LMs, got model.kind {self.kind!r}")
        self.save_hyperparameters()
        self.layout = ModelLayout(self.model, layout)
        self.layer_selection = layer_selection
        self._layers = list(range(self.layout.num_layers)) if layers is None else list(layers)
        require_layers(owner, "layers", self._layers, self.layout.num_layers)
        self.steps, self.batch_size = steps, batch_size
        self.threshold, self.shared_fraction, self.max_neurons = threshold, shared_fraction, max_neurons
        self.edit_scale = edit_scale
        self.use_paraphrases = use_paraphrases
        self.exclusion_prompts = exclusion_prompts
        self.found: list[FoundNeurons] = []  # the last edit's neurons, for inspection

    @property
    def name(self) -> str:
        return "KN"

    @property
    def layers(self) -> list[int]:
        """The attributed layers: as configured, or chosen by causal tracing the first time they are needed."""
        if self.layer_selection is not None:
            with torch.no_grad():
                self._layers = self.layer_selection.select_layers(self.model, self.tokenizer, self.layout)
            self.layer_selection = None
        return self._layers

    def prompt_ids(self, prompt: str) -> Tensor:
        ids = self.prompts.prompt_ids(prompt)[-self.prompts.max_length:]
        return torch.tensor([ids], device=self.device)

    def old_token(self, record: EditRecord, prompt_ids: Tensor) -> int:
        """The answer to move away from: the true target's first token if the record has one, else the model's
        current prediction."""
        if record.target_true:
            return self.prompts.target_ids(record.target_true)[0]
        with torch.no_grad():
            logits = self.model(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), use_cache=False).logits
        return int(logits[0, -1].argmax())

    def find_neurons(self, record: EditRecord) -> FoundNeurons:
        """The record's knowledge neurons for its old answer, over its prompt (and paraphrases)."""
        prompts = (record.prompt, *record.paraphrases) if self.use_paraphrases else (record.prompt,)
        old = self.old_token(record, self.prompt_ids(record.prompt))
        new = self.prompts.target_ids(record.target_new)[0]
        attributions = [integrated_gradients(self.layout, self.prompt_ids(p), old, self.layers, self.steps,
                                             self.batch_size) for p in prompts]
        others = [*record.hard_out_of_scope, *record.out_of_scope][: self.exclusion_prompts]
        exclude = [integrated_gradients(self.layout, self.prompt_ids(pair.prompt), self.prompts.target_ids(pair.target)[0],
                                        self.layers, self.steps, self.batch_size) for pair in others]
        found = [(self.layers[i], n) for i, n in
                 knowledge_neurons(attributions, self.threshold, self.shared_fraction, self.max_neurons, exclude)]
        layers = sorted({layer for layer, _ in found})
        activations = last_token_activations(self.layout, self.prompt_ids(record.prompt), layers)
        signs = [1.0 if activations[layer][neuron] >= 0 else -1.0 for layer, neuron in found]
        return FoundNeurons(record.case_id, found, signs, old, new)

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        """Find each record's knowledge neurons and move their values; several records' changes add up."""
        if not batch.records:
            raise EditFailedError("KnowledgeNeurons edits records (prompt, target, paraphrases); the batch has none")
        unembedding = self.model.get_output_embeddings().weight.detach()
        self.found = [self.find_neurons(record) for record in batch.records]
        named = dict(self.model.named_parameters())
        params: dict[str, Tensor] = {}
        for found in self.found:
            if not found.neurons:
                raise EditFailedError(f"edit {found.case_id}: no knowledge neuron passed threshold {self.threshold} "
                                      f"in more than {self.shared_fraction} of its prompts; the model was left unchanged")
            if found.old_token == found.new_token:
                raise EditFailedError(f"edit {found.case_id}: the new and the old answer begin with the same token, "
                                      "which KN's value edit cannot tell apart; the model was left unchanged")
            direction = self.edit_scale * (unembedding[found.new_token] - unembedding[found.old_token])
            for (layer, neuron), sign in zip(found.neurons, found.signs, strict=True):
                name = self.layout.mlp_out_weight_name(layer)
                if name not in params:
                    params[name] = named[name].detach().clone()
                value = as_out_in(params[name], weight_orientation(self.layout.mlp_out(layer)))
                value[:, neuron] += sign * direction.to(value.dtype)
        return EditedModel(self.model, self.kind, params)
