"""SERAC's counterfactual model: a small causal LM that answers a query given the edit it falls under.

It reads ``descriptor + query`` (the descriptor is the edit written out, e.g. "The capital of France is Rome")
and its logits over the query's tokens are returned aligned with the query's labels, exactly as the base
model's would be, so they can stand in for the base model's on routed rows. It shares the base model's
tokenizer (by default it is a separate, trainable copy of the base model itself). Training: the edit's new
target on the edit's in-scope prompts, and (``c_loc``) the base model's predictions on out-of-scope prompts
shown with an unrelated edit, so that a wrongly routed query is still answered as the base model would.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from lit_edit.data.batch import EditBatch, MovesEditBatches, TokenizedExamples, select_out_of_scope
from lit_edit.data.records import EditRecord
from lit_edit.errors import ConfigurationError
from lit_edit.evaluation.metrics import edit_success
from lit_edit.mechanics.edited_model import EditRefusedError, aligned_logits, locality_kl, nll_loss, prediction_mask
from lit_edit.mechanics.memory import EditDescriptor
from lit_edit.mechanics.prefix_cache import PrefixCache, continue_after_prefixes, read_prefixes
from lit_edit.models import (
    ModelSpec,
    _load_pretrained,
    editable_parameters,
    load_model,
    load_tokenizer,
    resolve_model_path,
)


def context_length(config: Any) -> int | None:
    """The longest sequence a model's positions allow (``None`` when its config does not say)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def descriptors_of(records: Sequence[EditRecord]) -> list[EditDescriptor]:
    return [EditDescriptor(r.case_id, r.prompt, r.target_new) for r in records]


def out_of_scope_owners(records: Sequence[EditRecord], count: int) -> list[int]:
    """For the first ``count`` out-of-scope prompts of a batch (as :func:`select_out_of_scope` orders them), the
    record that brought each one (a hard out-of-scope prompt is then shown with its own look-alike edit)."""
    owners = []
    for pair in select_out_of_scope(records)[:count]:
        owners.append(next(i for i, r in enumerate(records) if pair in (*r.out_of_scope, *r.hard_out_of_scope)))
    return owners


class CounterfactualModel(MovesEditBatches, LightningModule):
    """``descriptor + query -> answer``; trainable on its own (with the frozen base model for its locality term)
    or inside SERAC."""

    def __init__(self, model: ModelSpec | None = None, base: ModelSpec | None = None, lr: float = 1.0e-5,
                 c_loc: float = 1.0, template: str = "{prompt} {target}\n", trainable: list[str] | None = None,
                 prefix_cache_mb: float = 256.0) -> None:
        """
        Args:
            model: the counterfactual LM (a causal LM with the base model's tokenizer); loaded as its own trainable
                copy even when it names the base model.
            base: the base model, whose predictions out of scope the locality term keeps (default: ``model``).
            lr: learning rate.
            c_loc: weight of the locality term (KL from the base model on out-of-scope prompts).
            template: how an edit descriptor is written before the query (``{prompt}``, ``{target}``).
            trainable: glob patterns naming the weights that training changes (default: all); the rest stay as
                loaded (e.g. only the top blocks: cheaper backward passes and optimizer state).
            prefix_cache_mb: memory for the key/value states of descriptors already read, reused at inference by
                later queries under the same edit (0: read every descriptor with its query).
        """
        super().__init__()
        self.save_hyperparameters()
        self.spec = model or ModelSpec()
        self.base_spec = base or self.spec
        if self.spec.kind != "causal":
            raise ConfigurationError(f"the counterfactual model must be a causal LM, got model.kind {self.spec.kind!r}")
        where, gguf_file = resolve_model_path(self.spec)
        self.lm = _load_pretrained(where, "causal", self.spec.torch_dtype, gguf_file, self.spec.attn_implementation)
        if trainable is not None:
            chosen = set(editable_parameters(self.lm, trainable))
            for name, parameter in self.lm.named_parameters():
                parameter.requires_grad_(name in chosen)
        self.tokenizer = load_tokenizer(self.spec)
        self.lr, self.c_loc, self.template = lr, c_loc, template
        self.max_positions = context_length(self.lm.config)
        if prefix_cache_mb < 0:
            raise ConfigurationError(f"CounterfactualModel.prefix_cache_mb must be >= 0, got {prefix_cache_mb}")
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None

    @property
    def base(self) -> Any:
        """The frozen base model (the process-wide shared instance, never trained here)."""
        return load_model(self.base_spec)

    def _apply(self, fn: Any, recurse: bool = True) -> CounterfactualModel:
        """``.to(device)`` reaches the (unregistered) base model that the locality term reads."""
        super()._apply(fn, recurse)
        self.base._apply(fn, recurse)
        return self

    def forward(self, examples: TokenizedExamples, descriptors: Sequence[EditDescriptor]) -> Tensor:
        """Aligned logits ``[rows, seq - 1, vocab]`` of each query row, read after its edit's descriptor.

        A descriptor that does not fit before its query in the model's context keeps its last tokens; a query that
        leaves no room for any descriptor token is an error. At inference (no gradients, eval mode) the
        descriptors' key/value states come from the prefix cache: the same logits, about a query's cost per row.
        """
        if len(descriptors) != len(examples):
            raise ValueError(f"{len(examples)} queries but {len(descriptors)} edit descriptors")
        lengths = [int(n) for n in examples.attention_mask.sum(1).tolist()]
        prefixes = [self._prefix_ids(d, n) for d, n in zip(descriptors, lengths, strict=True)]
        if self.prefix_cache is not None and not self.training and not torch.is_grad_enabled():
            try:
                return self._continue_cached(self.prefix_cache, examples, prefixes)
            except TypeError as error:  # e.g. a model whose cache has no per-layer keys and values
                warnings.warn(f"SERAC's counterfactual model cannot reuse descriptor states ({error}); every descriptor "
                              "is read again with its query from now on", stacklevel=2)
                self.prefix_cache = None
        return self._read_concatenated(examples, prefixes, lengths)

    def _prefix_ids(self, descriptor: EditDescriptor, query_length: int) -> tuple[int, ...]:
        ids = self.tokenizer(self.template.format(prompt=descriptor.prompt, target=descriptor.target),
                             add_special_tokens=True)["input_ids"]
        if self.max_positions is not None:
            room = self.max_positions - query_length
            if room < 1:
                raise EditRefusedError(f"a query of {query_length} tokens leaves no room for its edit in the "
                                       f"counterfactual model's context of {self.max_positions} tokens; lower "
                                       "max_length")
            ids = ids[-room:]
        return tuple(ids)

    @property
    def _pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id) if self.tokenizer.pad_token_id is not None else 0

    def _read_concatenated(self, examples: TokenizedExamples, prefixes: Sequence[tuple[int, ...]],
                           lengths: Sequence[int]) -> Tensor:
        rows = [list(p) + row[:n].tolist() for p, row, n in zip(prefixes, examples.input_ids, lengths, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        logits = self.lm(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False).logits
        # Position offset + t holds query token t and predicts token t + 1: the query's aligned logit t.
        steps = examples.input_ids.shape[1] - 1
        offsets = torch.tensor([len(p) for p in prefixes], device=logits.device)
        index = (offsets[:, None] + torch.arange(steps, device=logits.device)).clamp_max(width - 1)
        return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))

    def _continue_cached(self, cache: PrefixCache, examples: TokenizedExamples,
                         prefixes: Sequence[tuple[int, ...]]) -> Tensor:
        missing = list(dict.fromkeys(p for p in prefixes if p not in cache))  # each new descriptor read once
        fresh = dict(zip(missing, read_prefixes(self.lm, missing, self._pad_id), strict=True)) if missing else {}
        for ids, states in fresh.items():
            cache.put(ids, states)
        states = [fresh[p] if p in fresh else cache.get(p) for p in prefixes]
        logits = continue_after_prefixes(self.lm, states, examples.input_ids, examples.attention_mask)
        return logits[:, :-1]

    def train(self, mode: bool = True) -> CounterfactualModel:
        """Training changes the weights the cached descriptor states were computed with: forget them."""
        if mode and getattr(self, "prefix_cache", None) is not None:
            self.prefix_cache.clear()
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self, "prefix_cache", None) is not None:
            self.prefix_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def loss(self, batch: EditBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """NLL of the new targets on in-scope prompts + ``c_loc`` · KL(base || counterfactual) out of scope."""
        records = batch.records
        if not records:
            raise ValueError("training the counterfactual model needs the batch's records (its edit descriptors)")
        descriptors = descriptors_of(records)
        owners = [i for i, r in enumerate(records) for _ in r.in_scope]
        post_in = self(batch.in_scope, [descriptors[i] for i in owners])
        in_labels = batch.in_scope.labels[:, 1:]
        edit_loss = nll_loss(post_in, in_labels)
        logged = {"train/cf_edit_loss": edit_loss.detach(), "train/cf_es": edit_success(post_in.detach(), in_labels)}
        loss = edit_loss
        if self.c_loc > 0:
            owners_out = out_of_scope_owners(records, len(batch.out_of_scope))
            with torch.no_grad():
                pre_out, _ = aligned_logits(self.base, batch.out_of_scope, "causal")
            post_out = self(batch.out_of_scope, [descriptors[i] for i in owners_out])
            loc_loss = locality_kl(pre_out, post_out, prediction_mask(batch.out_of_scope, "causal"))
            loss = loss + self.c_loc * loc_loss
            logged["train/cf_loc_loss"] = loc_loss.detach()
        return loss, logged

    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor:
        loss, logged = self.loss(batch)
        self.log_dict(logged, batch_size=len(batch))
        return loss

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.lm.parameters() if p.requires_grad], "lr": self.lr}]

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.param_groups())
