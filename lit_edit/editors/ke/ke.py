"""KE: KnowledgeEditor (De Cao, Aziz and Titov, EMNLP 2021), a hypernetwork that edits with gated gradients.

Each edit is described by a token sequence: the base model's own (greedy) answer to the edit prompt, the new
target and the prompt, in the paper's order ``prediction >> target || prompt`` (a classifier's prediction and
target: the tokens of the class names, ``model.labels``). A bidirectional LSTM over those
tokens' (frozen) embeddings gives a condition vector h. For every editable weight W (out x in), a small network
maps h to gates of rank one, and the update turns the fine-tuning gradient G of that edit's own loss into

    dW = max_scale * sigmoid(eta) * (A * G + B),   A = out * softmax(a) c^T,   B = out * softmax(b) d^T

(elementwise products; a, b over output units, c, d over input units). The factor ``out`` makes a uniform gate
mean one, so that ``max_scale`` reads as a step size; it multiplies c and d, so the function class is the paper's.
The editor is trained like MEND: L = c_edit * NLL(in-scope | edited) + c_loc * KL(pre || post on out-of-scope).

Where this differs from the paper: the embeddings are the base model's, read and never trained (the paper
trained a copy: 28 M parameters for SmolLM2's vocabulary), and the objective is MEND's rather than the paper's
constrained one (a KL margin with a learned Lagrange multiplier). Edits of one batch each get their own
condition and their own gradient; their updates add up (``configs/ke.yaml`` trains on one edit per step, as the
paper does: trained on sums of several edits' updates, KE's single edits came out weaker).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
from transformers import PreTrainedModel

from lit_edit.data.batch import IGNORE_INDEX, EditBatch, TokenizedExamples
from lit_edit.editors.base import Editor
from lit_edit.editors.objective import edit_and_locality_step
from lit_edit.mechanics.edit_result import builds_on_weights
from lit_edit.mechanics.edited_model import (
    EditedModel,
    EditFailedError,
    aligned_logits,
    at_least_float32,
)
from lit_edit.mechanics.hooks import ActivationCapture
from lit_edit.mechanics.model_layout import linear_weight_orientation
from lit_edit.mechanics.schedule import LrSchedule, check_schedule, scheduled
from lit_edit.mechanics.settings import require_at_least, require_non_negative, require_positive
from lit_edit.models import ModelSpec


def per_example_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Each row's mean NLL over its labelled tokens (a row without any scores 0)."""
    token_nll = F.cross_entropy(at_least_float32(logits).transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                reduction="none")
    return token_nll.sum(1) / (labels != IGNORE_INDEX).sum(1).clamp_min(1)


@torch.no_grad()
def greedy_answer(model: PreTrainedModel, kind: str, prompt: Tensor, length: int) -> Tensor:
    """The ``length`` tokens that ``model`` answers ``prompt`` with, greedily (a seq2seq model's decoder output)."""
    ids = prompt[None] if kind == "causal" else prompt.new_full((1, 1), model.config.decoder_start_token_id)
    for _ in range(length):
        if kind == "causal":
            logits = model(input_ids=ids, use_cache=False).logits
        else:
            logits = model(input_ids=prompt[None], decoder_input_ids=ids, use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, -length:] if length else ids[0, :0]


def split_edit(examples: TokenizedExamples, kind: str) -> list[tuple[Tensor, Tensor]]:
    """Each edit's (prompt ids, target ids), without padding."""
    pairs = []
    for ids, mask, labels in zip(examples.input_ids, examples.attention_mask, examples.labels, strict=True):
        real = mask.bool()
        if kind == "causal":  # prompt + target, labels -100 on the prompt
            pairs.append((ids[real & (labels == IGNORE_INDEX)], labels[labels != IGNORE_INDEX]))
        else:
            pairs.append((ids[real], labels[labels != IGNORE_INDEX]))
    return pairs


class ConditionEncoder(nn.Module):
    """A bidirectional LSTM over token embeddings; its two final states, through a tanh layer, are the condition."""

    def __init__(self, embedding_dim: int, hidden_dim: int, condition_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden_dim, condition_dim)

    def forward(self, embeddings: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(embeddings, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (final, _) = self.lstm(packed)  # final: [2 directions, batch, hidden]
        return torch.tanh(self.out(torch.cat([final[0], final[1]], dim=-1)))


class GatedUpdate(nn.Module):
    """The per-weight part of the hypernetwork: condition -> rank-one gates (A, B) and a scale sigmoid(eta).

    The last layer starts at zero with biases chosen so that, before training, ``A = -1`` everywhere, ``B = 0`` and
    ``sigmoid(eta) = 1/2``: the untrained edit is a plain gradient step of size ``max_scale / 2``.
    """

    def __init__(self, out_features: int, in_features: int, condition_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.shape = (out_features, in_features)
        self.hidden = nn.Linear(condition_dim, hidden_dim)
        self.gates = nn.Linear(hidden_dim, 2 * (out_features + in_features) + 1)
        nn.init.zeros_(self.gates.weight)
        nn.init.zeros_(self.gates.bias)
        with torch.no_grad():  # a (output units) uniform, c (input units) = -1: A = -1 everywhere
            self.gates.bias[out_features: out_features + in_features] = -1.0

    def forward(self, condition: Tensor, grads: Tensor) -> Tensor:
        """Per-edit updates ``[n, out, in]`` from conditions ``[n, condition_dim]`` and gradients ``[n, out, in]``."""
        out_features, in_features = self.shape
        a, c, b, d, eta = self.gates(torch.tanh(self.hidden(condition))).split(
            [out_features, in_features, out_features, in_features, 1], dim=-1)
        gate = out_features * a.softmax(-1)[:, :, None] * c[:, None, :]
        offset = out_features * b.softmax(-1)[:, :, None] * d[:, None, :]
        return torch.sigmoid(eta)[:, :, None] * (gate * grads + offset)


def _module_key(name: str) -> str:
    return name.replace(".", "-")  # module names may not contain dots


class KE(Editor):
    """Trained with L = c_edit * NLL(in-scope | edited) + c_loc * KL(pre || post on out-of-scope), as MEND."""

    supports_zero3 = True
    #: Set the condition encoder's and the gate networks' shapes.
    checkpoint_shape_hparams = ("lstm_dim", "condition_dim", "hidden_dim")

    def __init__(self, model: ModelSpec | None = None, max_scale: float = 0.1, lstm_dim: int = 256,
                 condition_dim: int = 1024, hidden_dim: int = 128, lr: float = 1.0e-3, c_edit: float = 1.0,
                 c_loc: float = 10.0, checkpoint: str | None = None, max_length: int = 128,
                 gradient_checkpointing: bool = False, warmup_steps: int = 0,
                 lr_schedule: LrSchedule = "constant") -> None:
        """Defaults are those of ``configs/ke.yaml`` (SmolLM2-135M).

        Args:
            max_scale: the paper's bound on the update's scale; with uniform gates, the step size of the gradient
                (the untrained editor makes a gradient step of ``max_scale / 2``).
            lstm_dim: hidden size of each direction of the condition LSTM.
            condition_dim: size of the condition vector h.
            hidden_dim: hidden size of each weight's gate network.
            lr: Adam learning rate of the hypernetwork.
            c_edit, c_loc: weights of the in-scope NLL after the edit and of the out-of-scope KL (as MEND's).
            warmup_steps, lr_schedule: the learning rate rises linearly over ``warmup_steps`` optimizer steps, then
                stays (``constant``) or decays to 0 at the run's last step (``linear``, ``cosine``;
                :mod:`lit_edit.mechanics.schedule`).
            checkpoint: a training checkpoint to start from (it holds only the hypernetwork's weights).
            gradient_checkpointing: recompute the base model's block activations in backward (see ``Editor``).
        """
        owner = type(self).__name__
        for name, value in (("max_scale", max_scale), ("lr", lr), ("c_edit", c_edit)):
            require_positive(owner, name, value)
        require_non_negative(owner, "c_loc", c_loc)
        check_schedule(owner, warmup_steps, lr_schedule)
        for name, value in (("lstm_dim", lstm_dim), ("condition_dim", condition_dim), ("hidden_dim", hidden_dim)):
            require_at_least(owner, name, value, 1)
        super().__init__(model, max_length, gradient_checkpointing)
        self.save_hyperparameters(ignore=["checkpoint"])
        self.max_scale, self.lr, self.c_edit, self.c_loc = max_scale, lr, c_edit, c_loc
        self.module_names = [name.rpartition(".")[0] for name in self.editable_names]
        self.transposed: dict[str, bool] = {}
        gates: dict[str, GatedUpdate] = {}
        for name, param in self.base_params().items():
            # GPT-2's Conv1D stores its weight as [in, out]
            self.transposed[name] = linear_weight_orientation(self.model, name, "KE") == "in_out"
            out_features, in_features = param.shape[::-1] if self.transposed[name] else param.shape
            gates[_module_key(name)] = GatedUpdate(out_features, in_features, condition_dim, hidden_dim)
        self.gates = nn.ModuleDict(gates)
        embedding_dim = self.model.get_input_embeddings().weight.shape[1]
        self.encoder = ConditionEncoder(embedding_dim, lstm_dim, condition_dim)
        self.separators = [self.tokenizer(s, add_special_tokens=False)["input_ids"] for s in (" >>", " ||")]
        #: A classifier's class names as tokens: what its prediction and target read as in the condition.
        self.class_tokens = [torch.tensor(self.tokenizer(name, add_special_tokens=False)["input_ids"])
                             for name in self.model_spec.labels or ()]
        self._answers: dict[tuple[int, ...], Tensor] = {}
        if checkpoint:
            self.load_editor(checkpoint)

    def original_answer(self, prompt: Tensor, length: int) -> Tensor:
        """The base model's greedy answer, as long as the new target (a classifier's predicted class); memoised,
        since the base model is frozen."""
        key = (length, *prompt.tolist())
        if key not in self._answers:
            if self.kind == "classifier":
                with torch.no_grad():
                    answer = self.model(input_ids=prompt[None]).logits.argmax(-1)
            else:
                answer = greedy_answer(self.model, self.kind, prompt, length)
            self._answers[key] = answer.cpu()
        return self._answers[key].to(prompt.device)

    def condition(self, edit: TokenizedExamples) -> Tensor:
        """One condition vector per edit, from ``prediction >> target || prompt``."""
        sequences = []
        for prompt, target in split_edit(edit, self.kind):
            answer = self.original_answer(prompt, len(target))
            if self.kind == "classifier":  # class indices -> their names' tokens
                answer, target = (self.class_tokens[int(c)].to(prompt.device) for c in (answer[0], target[0]))
            before, between = (prompt.new_tensor(s) for s in self.separators)
            sequences.append(torch.cat([answer, before, target, between, prompt]))
        lengths = torch.tensor([len(s) for s in sequences])
        ids = pad_sequence(sequences, batch_first=True, padding_value=0)
        with torch.no_grad():
            embeddings = self.model.get_input_embeddings()(ids)
        return self.encoder(embeddings.to(self.encoder.out.weight.dtype), lengths)

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        base = self.base_params()
        leaves = {name: p.detach().requires_grad_(True) for name, p in base.items()}
        with ActivationCapture(self.model, self.module_names) as capture:
            # The sum of per-edit mean NLLs: each edit's output gradients are those of its own loss alone.
            loss = per_example_nll(*aligned_logits(self.model, batch.edit, self.kind, leaves, labelled_only=True)).sum()
            if not torch.isfinite(loss):
                raise EditFailedError(f"KE: the edit loss is {loss.item()}; the model was left unchanged")
            torch.autograd.grad(loss, list(leaves.values()))
        condition = self.condition(batch.edit)
        params: dict[str, Tensor] = {}
        for name, weight in base.items():
            module_name = name.rpartition(".")[0]
            u, delta = capture.inputs[module_name], capture.output_grads[module_name]
            grads = torch.einsum("bto,bti->boi", delta, u.to(delta.dtype))  # each edit's own gradient, [out, in]
            updates = self.gates[_module_key(name)](condition, grads.to(condition.dtype))
            update = self.max_scale * updates.sum(0)
            params[name] = weight + (update.T if self.transposed[name] else update).to(weight.dtype)
        return EditedModel(self.model, self.kind, params)

    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor | None:
        return edit_and_locality_step(self, batch, self.c_edit, self.c_loc)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        return scheduled(optimizer, self._trainer, self.hparams.warmup_steps, self.hparams.lr_schedule)
