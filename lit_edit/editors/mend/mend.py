"""MEND: Model Editor Networks with gradient decomposition (Mitchell et al., ICLR 2022).

The gradient of a linear layer's weight on one token is rank one: the layer's input ``u`` times the
gradient ``delta`` of its output. A small editor network, shared by all editable layers of one shape,
maps (u, delta) to pseudo-activations and pseudo-deltas; their outer products, summed over the edit's
tokens and scaled by a learned per-layer rate, give the weight update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor
from lit_edit.editors.objective import edit_and_locality_step
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.continuation_locality import Continuations
from lit_edit.mechanics.edit_result import builds_on_weights
from lit_edit.mechanics.edited_model import EditedModel, aligned_logits, nll_loss
from lit_edit.mechanics.hooks import ActivationCapture
from lit_edit.mechanics.model_layout import linear_weight_orientation
from lit_edit.mechanics.parameters import ParameterBank
from lit_edit.mechanics.schedule import LrSchedule, check_schedule, scheduled
from lit_edit.mechanics.settings import require_at_least, require_non_negative, require_positive
from lit_edit.models import ModelSpec, owning_module


class RunningNorm(nn.Module):
    """Standardises inputs with running mean and variance over every token seen in training."""

    def __init__(self, dim: int, eps: float = 1.0e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Chan et al.'s parallel update of mean and sum of squared deviations."""
        x = x.detach().double()
        if x.shape[0] == 0:
            return
        n, mean = x.shape[0], x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        if self.count < 2:
            return x
        std = (self.m2 / (self.count - 1)).sqrt().clamp_min(self.eps)
        return (x - self.mean.to(x.dtype)) / std.to(x.dtype)


class MENDNetwork(nn.Module):
    """Low-rank residual MLP on z = [u; delta], identity at initialisation, with per-layer scale and offset.

    Each block computes ``h + s_l * U(relu(V h + b)) + o_l`` with U zero-initialised, so the network
    starts as the identity and every parameter still receives a gradient.
    """

    def __init__(self, input_dim: int, output_dim: int, n_layers: int, rank: int = 64, n_blocks: int = 2) -> None:
        super().__init__()
        dim = input_dim + output_dim
        self.input_dim = input_dim
        self.norm = RunningNorm(dim)
        self.down = nn.ModuleList([nn.Linear(dim, rank) for _ in range(n_blocks)])
        self.up = nn.ModuleList([nn.Linear(rank, dim, bias=False) for _ in range(n_blocks)])
        for up in self.up:
            nn.init.zeros_(up.weight)
        self.scale = nn.Parameter(torch.ones(n_layers, n_blocks, dim))
        self.offset = nn.Parameter(torch.zeros(n_layers, n_blocks, dim))

    def forward(self, u: Tensor, delta: Tensor, layer: int, learn_statistics: bool = False) -> tuple[Tensor, Tensor]:
        """``learn_statistics``: add these inputs to the normaliser's statistics first (training steps only)."""
        z = torch.cat([u, delta], dim=-1)
        if learn_statistics:
            self.norm.update(z)
        h = self.norm(z)
        for block, (down, up) in enumerate(zip(self.down, self.up, strict=True)):
            h = h + self.scale[layer, block] * up(torch.relu(down(h))) + self.offset[layer, block]
        return h[..., : self.input_dim], h[..., self.input_dim:]


def _shape_key(shape: torch.Size) -> str:
    return "x".join(str(d) for d in shape)


class MEND(Editor):
    """Trained with L = c_edit * NLL(in-scope | edited) + c_loc * KL(pre || post on out-of-scope)."""

    supports_zero3 = True
    #: Set the editor networks' shapes: a checkpoint trained with others is refused by name, not by a size mismatch.
    checkpoint_shape_hparams = ("rank", "n_blocks")

    def __init__(self, model: ModelSpec | None = None, rank: int = 64, n_blocks: int = 2, edit_lr: float = 1.0e-4,
                 lr: float = 1.0e-4, lr_lr: float = 1.0e-4, c_edit: float = 0.1, c_loc: float = 1.0,
                 hard_locality_weight: float = 1.0, checkpoint: str | None = None, max_length: int = 128,
                 gradient_checkpointing: bool = False, warmup_steps: int = 0,
                 lr_schedule: LrSchedule = "constant", c_continuation: float = 0.0,
                 continuation_tokens: int = 8) -> None:
        """
        Args:
            rank, n_blocks: width and depth of each editor network's residual low-rank blocks.
            edit_lr: initial value of each editable layer's learned edit rate α_l.
            lr, lr_lr: Adam learning rates of the editor networks and of the edit rates.
            c_edit, c_loc: weights of the in-scope NLL after the edit and of the out-of-scope KL.
            hard_locality_weight: how many times each hard out-of-scope prompt (same subject or same relation as the
                edit) counts in that KL against an unrelated one (1: all alike, as the reference MEND, which has none).
            c_continuation, continuation_tokens: weight of a third term, the KL between the unedited and the edited
                model over the unedited model's ``continuation_tokens``-token greedy continuation of each edit prompt
                and its new target (0: none, as the reference MEND); it keeps an edit from repeating its target in
                what follows (:mod:`lit_edit.mechanics.continuation_locality`). Causal LMs only.
            warmup_steps, lr_schedule: the learning rate rises linearly over ``warmup_steps`` optimizer steps, then
                stays (``constant``) or decays to 0 at the run's last step (``linear``, ``cosine``;
                :mod:`lit_edit.mechanics.schedule`).
            checkpoint: a training checkpoint to start from (it holds only the editor's weights).
        """
        owner = type(self).__name__
        require_at_least(owner, "rank", rank, 1)
        require_at_least(owner, "n_blocks", n_blocks, 1)
        for name, value in (("edit_lr", edit_lr), ("lr", lr), ("c_edit", c_edit)):
            require_positive(owner, name, value)
        require_non_negative(owner, "lr_lr", lr_lr)  # 0: the per-layer rates stay as initialised
        require_non_negative(owner, "c_loc", c_loc)
        require_positive(owner, "hard_locality_weight", hard_locality_weight)
        require_non_negative(owner, "c_continuation", c_continuation)
        require_at_least(owner, "continuation_tokens", continuation_tokens, 1)
        check_schedule(owner, warmup_steps, lr_schedule)
        super().__init__(model, max_length, gradient_checkpointing)
        if c_continuation > 0 and self.kind != "causal":
            raise ConfigurationError(f"{owner}: c_continuation needs a causal LM (the target ends a {self.kind} "
                                     f"model's output); set it to 0")
        self.c_continuation = c_continuation
        self.continuations = Continuations(continuation_tokens) if c_continuation > 0 else None
        self.save_hyperparameters(ignore=["checkpoint"])
        self.lr, self.lr_lr, self.c_edit, self.c_loc = lr, lr_lr, c_edit, c_loc
        self.hard_locality_weight = hard_locality_weight
        self.module_names = [name.rpartition(".")[0] for name in self.editable_names]
        groups: dict[str, list[str]] = {}
        self.transposed: dict[str, bool] = {}
        for name, param in self.base_params().items():
            # GPT-2's Conv1D stores its weight as [in, out]
            self.transposed[name] = linear_weight_orientation(self.model, name, "MEND") == "in_out"
            groups.setdefault(_shape_key(param.shape), []).append(name)
        self.layer_index = {name: i for names in groups.values() for i, name in enumerate(names)}
        self.group_of = {name: key for key, names in groups.items() for name in names}
        self.networks = nn.ModuleDict()
        for key, names in groups.items():
            module = owning_module(self.model, names[0])
            fan_in, fan_out = (module.weight.shape[0], module.weight.shape[1]) if self.transposed[names[0]] \
                else (module.weight.shape[1], module.weight.shape[0])
            self.networks[key] = MENDNetwork(fan_in, fan_out, len(names), rank, n_blocks)
        self.edit_lrs = ParameterBank([torch.full((len(self.editable_names),), float(edit_lr))])
        self._in_training_step = False
        if checkpoint:
            self.load_editor(checkpoint)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Checkpoints written before the rates moved into a :class:`ParameterBank` name them ``edit_lrs``."""
        if "edit_lrs" in state_dict:
            state_dict = {**state_dict, "edit_lrs.values.0": state_dict["edit_lrs"]}
            del state_dict["edit_lrs"]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        base = self.base_params()
        leaves = {name: p.detach().requires_grad_(True) for name, p in base.items()}
        with ActivationCapture(self.model, self.module_names) as capture:
            loss = nll_loss(*aligned_logits(self.model, batch.edit, self.kind, leaves, labelled_only=True))
            torch.autograd.grad(loss, list(leaves.values()))
        params: dict[str, Tensor] = {}
        (edit_lrs,) = self.edit_lrs()
        for i, (name, weight) in enumerate(base.items()):
            module_name = name.rpartition(".")[0]
            u, delta = capture.inputs[module_name], capture.output_grads[module_name]
            u, delta = u.reshape(-1, u.shape[-1]), delta.reshape(-1, delta.shape[-1])
            # The gradient is the sum of u·δᵀ over positions; those with δ = 0 (padding, encoder or decoder,
            # and positions after the target) add nothing to it and must add nothing to the edit either.
            contributes = delta.abs().amax(dim=-1) > 0
            u, delta = u[contributes], delta[contributes]
            pseudo_u, pseudo_delta = self.networks[self.group_of[name]](u, delta, self.layer_index[name],
                                                                        learn_statistics=self._in_training_step)
            update = pseudo_u.T @ pseudo_delta if self.transposed[name] else pseudo_delta.T @ pseudo_u
            params[name] = weight - edit_lrs[i] * update.to(weight.dtype)
        return EditedModel(self.model, self.kind, params)

    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor | None:
        """The normaliser learns its statistics here only: an edit made outside training (an editor built in Python
        is in training mode until ``.eval()``) leaves the editor exactly as it was."""
        self._in_training_step = True
        try:
            return edit_and_locality_step(self, batch, self.c_edit, self.c_loc, edit_reads_only_gradients=True,
                                          hard_weight=self.hard_locality_weight,
                                          continuations=self.continuations, c_continuation=self.c_continuation)
        finally:
            self._in_training_step = False

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam([
            {"params": list(self.networks.parameters()), "lr": self.lr},
            {"params": list(self.edit_lrs.parameters()), "lr": self.lr_lr},
        ])
        return scheduled(optimizer, self._trainer, self.hparams.warmup_steps, self.hparams.lr_schedule)
