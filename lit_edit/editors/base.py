"""The one editor interface: ``edit(batch) -> EditedModel``, and the shared evaluation of an edit.

Every editor is a LightningModule. Validation and test steps are the same for all of them: edit,
then score the in-scope and out-of-scope inputs before and after; trainable editors add a
``training_step``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from transformers import PreTrainedModel

from lit_edit.checkpoint_files import MADE_FOR_KEY as MADE_FOR_KEY
from lit_edit.data.batch import EditBatch, MovesEditBatches, PromptTokenizer, TokenizedExamples
from lit_edit.errors import CheckpointError
from lit_edit.evaluation import scoring
from lit_edit.evaluation.scores import EditScores as EditScores
from lit_edit.evaluation.scores import kept_score
from lit_edit.evaluation.scores import unedited_predictions as unedited_predictions
from lit_edit.mechanics.activation_checkpointing import checkpoint_blocks
from lit_edit.mechanics.edit_result import EditResult
from lit_edit.mechanics.edited_model import EditedModel, EditFailedError, aligned_logits, prediction_mask
from lit_edit.mechanics.key_statistics import model_fingerprint, model_weights_fingerprint
from lit_edit.mechanics.lower_blocks import LowerBlocks
from lit_edit.mechanics.settings import require_at_least
from lit_edit.models import ModelSpec, editable_parameters, load_model, load_tokenizer
from lit_edit.pretrained import read_editor_checkpoint as read_editor_checkpoint
from lit_edit.pretrained import read_editor_state as read_editor_state
from lit_edit.safe_files import use_safe_checkpoint_io


class Editor(MovesEditBatches, LightningModule):
    """Base class: holds the (frozen, shared) base model and scores edits."""

    #: Whether DeepSpeed ZeRO-3 may partition this editor's trainable parameters: true when each is read only inside a
    #: submodule's forward (directly read ones go through a :class:`~lit_edit.mechanics.parameters.ParameterBank`).
    supports_zero3: ClassVar[bool] = False
    #: Hyperparameters that change how fast an editor works, not what it edits: an evaluation log written with
    #: other values of these is still resumed (they are left out of the run's fingerprint, as the accelerator is).
    #: Gradient checkpointing recomputes the same activations, so it is one of them.
    unscored_hparams: ClassVar[frozenset[str]] = frozenset({"gradient_checkpointing"})
    #: Hyperparameters that set the shapes or meaning of a trainable editor's weights (MEND's rank): recorded in its
    #: training checkpoints, and a checkpoint made with other values is refused (:meth:`load_editor`).
    checkpoint_shape_hparams: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ModelSpec | None = None, max_length: int = 128,
                 gradient_checkpointing: bool = False) -> None:
        """
        Args:
            model: the base model to edit.
            max_length: longest tokenized prompt.
            gradient_checkpointing: recompute the base model's block activations in backward instead of keeping
                them (less memory, one more forward); correct through second-order inner loops. It applies to the
                base model instance, which editors of the same spec in one process share.
        """
        require_at_least(type(self).__name__, "max_length", max_length, 2)  # before the model loads: fails cheaply
        super().__init__()
        self.model_spec = model or ModelSpec()
        # The frozen base model is deliberately not a registered submodule: it is never trained nor checkpointed
        # with the editor, and strategies that shard parameters (ZeRO-3) must not partition it (edits substitute
        # its weights functionally). `_apply` still moves and casts it with the editor.
        self.__dict__["_base_model"] = load_model(self.model_spec)
        self.tokenizer = load_tokenizer(self.model_spec)
        self.prompts = PromptTokenizer.for_model(self.tokenizer, self.model_spec.kind, max_length, self.model,
                                                 self.model_spec.labels)
        self.editable_names = list(editable_parameters(self.model, self.model_spec.editable))
        if gradient_checkpointing:
            checkpoint_blocks(self.model)
        self.val_scores = EditScores()
        self.test_scores = EditScores(compare_targets=True)
        self.skipped_steps = 0

    @property
    def model(self) -> PreTrainedModel:
        """The base model (frozen, shared by every editor of the same spec in this process)."""
        return self.__dict__["_base_model"]

    @property
    def kind(self) -> str:
        return self.model_spec.kind

    # -- the interface -------------------------------------------------------------------------
    def edit(self, batch: EditBatch, on: EditResult | None = None) -> EditResult:
        """Return the model edited by ``batch.edit``; the base model itself is never modified.

        ``on``: an earlier result of this editor (every edit so far, in a sequential run): the new edits are made on
        top of it and the result holds them all (:mod:`lit_edit.mechanics.edit_result`), for weight editors and memory
        editors alike. An editor whose edit reads the base model's weights gets this from
        :func:`~lit_edit.mechanics.edit_result.builds_on_weights`."""
        raise NotImplementedError

    def checked_edit(self, batch: EditBatch, on: EditResult | None = None) -> EditResult:
        """:meth:`edit`, refused (:class:`EditFailedError`) when the edited model's logits on the edit prompts are not
        finite: weights can stay finite while the outputs overflow (FT at a huge learning rate), and such an edit
        must count as failed, not be scored or saved. Every caller that makes an edit for use goes through here."""
        with torch.inference_mode(False), torch.enable_grad():
            edited = self.edit(batch) if on is None else self.edit(batch, on=on)  # an edit(batch) of old works
        self.refuse_non_finite_outputs(batch, edited)
        return edited

    def load_edit(self, path: str | Path) -> EditResult:
        """An edit saved with :meth:`EditResult.save <lit_edit.mechanics.edit_result.EditResult.save>`, on this
        editor's base model (a weight edit here; memory editors read their memory file)."""
        return EditedModel.load(path, self.model, self.kind)

    def refuse_non_finite_outputs(self, batch: EditBatch, edited: EditedModel) -> None:
        """Raise :class:`EditFailedError` if ``edited`` (weights or a memory-based model's routed logits alike)
        predicts a non-finite logit at a real position of ``batch.edit``; an edit that changes nothing passes."""
        if not edited.changes_outputs:
            return
        with torch.no_grad():
            logits, _ = self.logits(batch.edit, edited)
        self.refuse_non_finite_logits(logits, batch.edit)

    def refuse_non_finite_logits(self, logits: Tensor, examples: TokenizedExamples) -> None:
        """Raise :class:`EditFailedError` if ``logits`` (an edited model's on ``examples``) are non-finite at a real
        position."""
        real = prediction_mask(examples, self.kind).to(logits.device).bool()
        if not torch.isfinite(logits[real]).all():
            raise EditFailedError("the edited model's logits on the edit prompt are not finite; the model was left "
                                  "unchanged")

    @property
    def name(self) -> str:
        return type(self).__name__

    def base_params(self) -> dict[str, Tensor]:
        named = dict(self.model.named_parameters())
        return {name: named[name] for name in self.editable_names}

    def logits(self, examples: TokenizedExamples, edited: EditedModel | None = None) -> tuple[Tensor, Tensor]:
        return edited.logits(examples) if edited else aligned_logits(self.model, examples, self.kind)

    @property
    def lower_blocks(self) -> LowerBlocks | None:
        """The frozen blocks below every edited weight, run once for an unedited and an edited pass over the same
        inputs (causal LMs; ``None`` where nothing can be skipped: :mod:`lit_edit.mechanics.lower_blocks`)."""
        if "_lower_blocks" not in self.__dict__:
            self.__dict__["_lower_blocks"] = (LowerBlocks.below(self.model, self.editable_names)
                                              if self.kind == "causal" else None)
        return self.__dict__["_lower_blocks"]

    # -- Lightning -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Editor:
        """The base model always stays in eval mode (no dropout): edits are measured against a fixed model."""
        super().train(mode)
        self.model.eval()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> Editor:
        """``.to(device)``, ``.half()`` and the like reach the (unregistered) base model too."""
        super()._apply(fn, recurse)
        self.model._apply(fn, recurse)
        return self

    def skip_step(self) -> None:
        """For a trainable editor's ``training_step`` whose loss diverged: no update, counted in the logs."""
        self.skipped_steps += 1
        self.log("train/skipped_steps", float(self.skipped_steps))
        return None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A finite loss can still give non-finite gradients (an overflow in backward): such a step is skipped (every
        gradient dropped, so the optimizer moves nothing) and counted, never applied as a silent NaN. Under
        DeepSpeed the gradients live in its partitions and it checks them itself."""
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradients and not all(torch.isfinite(g).all() for g in gradients):
            optimizer.zero_grad(set_to_none=True)
            self.skip_step()

    def load_editor(self, path: str) -> None:
        """Load the editor's own weights from a training checkpoint (which holds only those), once what it records
        it was made for (:meth:`made_for`) is this editor's; :class:`~lit_edit.errors.CheckpointError` names the
        file and the difference. A checkpoint from before that was recorded loads with a warning."""
        state, made_for = read_editor_checkpoint(path)
        if made_for is not None and not isinstance(made_for, dict):
            raise CheckpointError(f"{path}: its {MADE_FOR_KEY!r} entry is not a mapping (a damaged or foreign file)")
        if made_for is None:
            warnings.warn(f"{path} records neither the base model, the editable weights nor the {self.name} settings "
                          "it was trained for (written before checkpoints did): loaded unchecked", stacklevel=2)
        else:
            self.check_made_for(made_for, path)
        try:
            self.load_state_dict(state)
        except RuntimeError as error:
            written_by = (made_for or {}).get("editor")
            by = f" (it was written by {written_by})" if written_by and written_by != self.name else ""
            detail = " ".join(str(error).split())
            raise CheckpointError(f"{path}: its weights do not fit this {self.name}{by}: {detail}") from None

    def made_for(self) -> dict[str, Any]:
        """What this editor's checkpoints are for: the base model (its name, the key-statistics hash and a hash
        that is the same wherever and in whichever float dtype it was loaded), the editable weights it edits and
        its :attr:`checkpoint_shape_hparams`."""
        return {"editor": self.name,
                "model": {"name": self.model_spec.name, "hash": model_fingerprint(self.model),
                          "weights_hash": model_weights_fingerprint(self.model)},
                "editable": list(self.editable_names),
                "shape": {name: self.hparams.get(name) for name in self.checkpoint_shape_hparams}}

    def check_made_for(self, recorded: dict[str, Any], path: str | Path) -> None:
        """Raise :class:`~lit_edit.errors.CheckpointError` where checkpoint ``path`` was made for another base model,
        other editable weights or other :attr:`checkpoint_shape_hparams` than this editor's."""
        here = self.made_for()
        model, ours = recorded.get("model") if isinstance(recorded.get("model"), dict) else {}, here["model"]
        if model.get("weights_hash") not in (None, ours["weights_hash"]):
            raise CheckpointError(
                f"{path} was trained for base model {model.get('name')!r} (hash {model.get('hash')}) but this "
                f"{self.name} edits {ours['name']!r} (hash {ours['hash']}), which has other weights or another "
                "architecture: set model.name (--model.init_args.model.name) to the model it was trained for, "
                "or train for this one")
        editable = recorded.get("editable")
        if isinstance(editable, list) and here["editable"] is not None and editable != here["editable"]:
            raise CheckpointError(
                f"{path} was trained for editable {editable} but this {self.name} edits {here['editable']}: "
                "set model.editable (--model.init_args.model.editable) to the patterns it was trained with, or "
                "train for these")
        shape = recorded.get("shape") if isinstance(recorded.get("shape"), dict) else {}
        differ = [name for name in self.checkpoint_shape_hparams if name in shape and shape[name] != here["shape"][name]]
        if differ:
            trained = ", ".join(f"{name}={shape[name]!r}" for name in differ)
            asked = ", ".join(f"{name}={here['shape'][name]!r}" for name in differ)
            flags = ", ".join(f"--model.init_args.{name}" for name in differ)
            raise CheckpointError(f"{path} was trained with {self.name} {trained} but this editor has {asked} "
                                  f"({flags}): set them as trained, or train with these")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every training checkpoint records what it was made for (:meth:`made_for`), for :meth:`load_editor`."""
        checkpoint[MADE_FOR_KEY] = self.made_for()

    def setup(self, stage: str) -> None:
        """A run resuming from ``ckpt_path`` reads its ``.ckpt`` with ``weights_only=True`` (and a DeepSpeed
        directory as plain data too; see :mod:`lit_edit.strategies`)."""
        super().setup(stage)
        if self._trainer is not None:
            use_safe_checkpoint_io(self.trainer.strategy)

    def validation_step(self, batch: EditBatch, batch_idx: int) -> None:
        scoring.score(self, batch, self.val_scores)
        scoring.log_scores(self, self.val_scores, "val", len(batch))

    def on_validation_epoch_end(self) -> None:
        """``val/score`` = ES - DD, and ``val/kept_score``: the harmonic mean of paraphrase ES (ES where there are no
        paraphrases) and retention. Checkpoints are chosen by one of them; ``kept_score`` sees locality where DD
        cannot (a base model that answers none of the out-of-scope questions has DD 0 whatever an edit does to them)."""
        scores = self.val_scores
        if scores.es.update_count:
            self.log("val/score", scores.es.compute() - scores.drawdown.compute().nan_to_num(0.0))
            self.log("val/kept_score", kept_score(scores.paraphrase_es.compute(), scores.es.compute(),
                                                  scores.retention.compute()))

    def test_step(self, batch: EditBatch, batch_idx: int) -> None:
        scoring.score(self, batch, self.test_scores)
        scoring.log_scores(self, self.test_scores, "test", len(batch))

    # Scoring lives in lit_edit.evaluation.scoring; these delegates keep older callers working.
    def pre_edit_logits(self, batch: EditBatch) -> scoring.UneditedLogits:
        """:func:`lit_edit.evaluation.scoring.unedited_logits` of this editor."""
        return scoring.unedited_logits(self, batch)

    def score(self, batch: EditBatch, scores: EditScores,
              pre: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> EditedModel:
        """:func:`lit_edit.evaluation.scoring.score` of this editor."""
        return scoring.score(self, batch, scores, pre)

    def score_portability(self, questions: TokenizedExamples, edited: EditedModel, scores: EditScores) -> None:
        """:func:`lit_edit.evaluation.scoring.score_portability` of this editor."""
        scoring.score_portability(self, questions, edited, scores)

    def score_target_preference(self, batch: EditBatch, edited: EditedModel, post_in: Tensor, in_labels: Tensor,
                                scores: EditScores) -> None:
        """:func:`lit_edit.evaluation.scoring.score_target_preference` of this editor."""
        scoring.score_target_preference(self, batch, edited, post_in, in_labels, scores)

    @staticmethod
    def log_scores(module: LightningModule, scores: EditScores, prefix: str, batch_size: int) -> None:
        """:func:`lit_edit.evaluation.scoring.log_scores`."""
        scoring.log_scores(module, scores, prefix, batch_size)

    def configure_optimizers(self) -> Any:
        return None
