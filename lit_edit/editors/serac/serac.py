"""SERAC: Semi-parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell et al., ICML 2022).

The base model stays frozen. An edit is stored in an :class:`~lit_edit.mechanics.memory.EditMemory` keyed by the
scope classifier's embedding of the edit's input. A query is embedded once and compared with every stored edit
in one matrix product; if the most similar edit's scope probability reaches ``threshold``, the counterfactual
model answers the query given that edit's descriptor, otherwise the untouched base model answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch, TokenizedExamples
from lit_edit.data.records import EditRecord
from lit_edit.editors.routed import NO_EDIT, MemoryEditor, RoutedModel, Router, Routing, prompt_texts
from lit_edit.editors.serac.counterfactual import CounterfactualModel, descriptors_of
from lit_edit.editors.serac.scope_classifier import DEFAULT_ENCODER, ScopeClassifier
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.edit_result import EditResult, composed
from lit_edit.mechanics.edited_model import EditFailedError, EditRefusedError
from lit_edit.mechanics.memory import EditMemory
from lit_edit.mechanics.schedule import LrSchedule, check_schedule, scheduled
from lit_edit.mechanics.settings import require_between, require_non_negative, require_positive
from lit_edit.models import ModelSpec


class SERAC(MemoryEditor):
    """Scope classifier + counterfactual model over an edit memory; trained with the sum of both parts' losses."""

    #: None by name: the scope classifier's encoder and the counterfactual model are compared tensor by tensor when
    #: a checkpoint loads (a mismatch is refused naming the file and the tensor), and the base model by its hash.
    checkpoint_shape_hparams: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ModelSpec | None = None, encoder: str = DEFAULT_ENCODER,
                 counterfactual: ModelSpec | None = None, threshold: float = 0.5, lr: float = 1.0e-5,
                 classifier_lr: float = 1.0e-5, classifier_head_lr: float = 1.0e-2, c_loc: float = 1.0,
                 template: str = "{prompt} {target}\n", counterfactual_trainable: list[str] | None = None,
                 checkpoint: str | None = None, max_length: int = 128, prefix_cache_mb: float = 256.0,
                 warmup_steps: int = 0, lr_schedule: LrSchedule = "constant") -> None:
        """
        Args:
            model: the base model (frozen).
            encoder: the scope classifier's sentence encoder (default: pretrained all-MiniLM-L6-v2) or a directory.
            counterfactual: the counterfactual LM (default: a trainable copy of the base model); it must share the
                base model's tokenizer.
            threshold: scope probability at which a query is answered by the counterfactual model.
            lr, classifier_lr, classifier_head_lr: learning rates of the counterfactual model, of the encoder and of
                the classifier's scale and offset.
            c_loc: weight of the counterfactual model's locality term.
            template: how an edit descriptor is written before the query.
            counterfactual_trainable: glob patterns of the counterfactual model's weights that training changes
                (default: all).
            checkpoint: a trained SERAC's checkpoint (``python train.py --config configs/serac.yaml``).
            max_length: longest tokenized prompt.
            prefix_cache_mb: memory for the counterfactual model's key/value states of descriptors it has read; a
                later query under the same edit then costs about one forward pass over the query alone.
            warmup_steps, lr_schedule: the learning rate rises linearly over ``warmup_steps`` optimizer steps, then
                stays (``constant``) or decays to 0 at the run's last step (``linear``, ``cosine``;
                :mod:`lit_edit.mechanics.schedule`).
        """
        owner = type(self).__name__
        require_between(owner, "threshold", threshold, 0.0, 1.0, low_open=True, high_open=True)  # a probability
        require_positive(owner, "lr", lr)
        require_non_negative(owner, "classifier_lr", classifier_lr)  # 0: the encoder stays as loaded
        require_non_negative(owner, "classifier_head_lr", classifier_head_lr)
        require_non_negative(owner, "c_loc", c_loc)
        require_non_negative(owner, "prefix_cache_mb", prefix_cache_mb)
        check_schedule(owner, warmup_steps, lr_schedule)
        try:
            template.format(prompt="", target="")
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigurationError(f"{owner}.template {template!r} is not a format string of {{prompt}} and "
                                     f"{{target}} ({type(error).__name__}: {error}; init_args.template of the {owner} "
                                     "config)") from None
        super().__init__(model, max_length)
        if self.kind != "causal":
            raise ConfigurationError(f"SERAC answers causal LMs only, got model.kind {self.kind!r}")
        self.save_hyperparameters(ignore=["checkpoint"])
        self.threshold = threshold
        self.classifier = ScopeClassifier(encoder, lr=classifier_lr, head_lr=classifier_head_lr, max_length=max_length)
        self.counterfactual = CounterfactualModel(counterfactual or self.model_spec, self.model_spec, lr=lr,
                                                  c_loc=c_loc, template=template, trainable=counterfactual_trainable,
                                                  prefix_cache_mb=prefix_cache_mb)
        if self.counterfactual.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ConfigurationError("SERAC's counterfactual model must use the base model's tokenizer: its logits "
                                     "stand in for the base model's (init_args.counterfactual of the SERAC config)")
        if checkpoint:
            self.load_editor(checkpoint)

    # -- memory ----------------------------------------------------------------------------------
    def new_memory(self) -> EditMemory:
        return EditMemory(self.classifier.encoder.config.hidden_size, "cosine", self.device)

    @torch.no_grad()
    def memory_for(self, records: Sequence[EditRecord], memory: EditMemory | None = None) -> EditMemory:
        """``records`` added to ``memory`` (default: a new one), keyed by their embedded edit inputs; all or nothing."""
        memory = memory if memory is not None else self.new_memory()
        keys = self.classifier.embed([r.prompt for r in records])
        if not torch.isfinite(keys).all():
            raise EditFailedError("SERAC: the scope classifier's embedding of an edit prompt is not finite; nothing "
                                  "was stored and the model was left unchanged")
        memory.add(descriptors_of(records), keys)
        return memory

    def routed(self, memory: EditMemory) -> RoutedModel:
        return RoutedModel(self.model, self.kind, SeracRouter(self, memory))

    def edit(self, batch: EditBatch, on: EditResult | None = None) -> EditResult:
        """The batch's edits stored in a new memory; on top of ``on`` (an earlier SERAC edit), joined to a copy of
        its memory."""
        if len(batch.records) != len(batch):
            raise EditRefusedError(f"SERAC stores edit descriptors: the batch has {len(batch)} edits but "
                                   f"{len(batch.records)} records; the model was left unchanged")
        return composed(on, self.routed(self.memory_for(batch.records)))

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor | None:
        scope_loss, scope_accuracy = self.classifier.loss(batch.records)
        cf_loss, logged = self.counterfactual.loss(batch)
        loss = scope_loss + cf_loss
        if not torch.isfinite(loss):
            return self.skip_step()
        self.log_dict({"train/loss": loss, "train/scope_loss": scope_loss, "train/scope_accuracy": scope_accuracy,
                       **logged}, prog_bar=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam([*self.classifier.param_groups(), *self.counterfactual.param_groups()])
        return scheduled(optimizer, self._trainer, self.hparams.warmup_steps, self.hparams.lr_schedule)


class SeracRouter(Router):
    """Routes by the scope classifier over the memory's keys; the counterfactual model answers routed rows."""

    def __init__(self, serac: SERAC, memory: EditMemory) -> None:
        self.serac, self.memory = serac, memory

    def over(self, memory: EditMemory) -> SeracRouter:
        return SeracRouter(self.serac, memory)

    @property
    def empty(self) -> bool:
        return len(self.memory) == 0

    @torch.no_grad()
    def route(self, examples: TokenizedExamples) -> Routing:
        queries = self.serac.classifier.embed(prompt_texts(examples, self.serac.tokenizer))
        similarity, index = self.memory.nearest(queries)
        in_scope = self.serac.classifier.probability(similarity) >= self.serac.threshold
        return Routing(torch.where(in_scope, index, NO_EDIT))

    @torch.no_grad()
    def answer(self, examples: TokenizedExamples, edits: Tensor, base_logits: Tensor | None) -> Tensor:
        descriptors = [self.memory.descriptors[i] for i in edits.tolist()]
        return self.serac.counterfactual(examples, descriptors)
