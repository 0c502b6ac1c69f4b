"""The one editor interface: ``edit(batch) -> EditedModel``, and the shared evaluation of an edit.

Every editor is a LightningModule. Validation and test steps are the same for all of them: edit,
then score the in-scope and out-of-scope inputs before and after; trainable editors add a
``training_step``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from lit_edit.activation_checkpointing import checkpoint_blocks
from lit_edit.data.batch import (
    IGNORE_INDEX,
    SAME_RELATION,
    SAME_SUBJECT,
    UNRELATED,
    EditBatch,
    PromptTokenizer,
    TokenizedExamples,
)
from lit_edit.data.records import LabeledPrompt
from lit_edit.editors.edited_model import EditedModel, EditFailedError, aligned_logits, prediction_mask
from lit_edit.editors.lower_blocks import LowerBlocks
from lit_edit.editors.settings import require_at_least
from lit_edit.errors import CheckpointError
from lit_edit.key_statistics import model_fingerprint, model_weights_fingerprint
from lit_edit.metrics import AccuracyDrawdown, EditSuccess, Retention, TargetNLL
from lit_edit.models import ModelSpec, editable_parameters, load_model, load_tokenizer
from lit_edit.paper_scores import Consistency, Fluency, TargetPreference, TokenAccuracy, example_nll
from lit_edit.pretrained import is_exported, read_exported, resolve_editor_path
from lit_edit.safe_files import (
    check_deepspeed_directory,
    deepspeed_globals,
    deepspeed_reads_weights_only,
    load_tensors_file,
    use_safe_checkpoint_io,
)

#: The key under which an editor's training checkpoint records what it was made for (:meth:`Editor.made_for`).
MADE_FOR_KEY = "lit_edit_made_for"


def read_editor_state(path: str | Path) -> dict[str, Tensor]:
    """An editor's weights from a training checkpoint: a Lightning ``.ckpt`` file, or the directory that the
    DeepSpeed strategy writes instead (its ZeRO shards are merged into full float32 tensors)."""
    return read_editor_checkpoint(path)[0]


def read_editor_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(weights, what the checkpoint records it was made for, or ``None`` for one written before that was recorded).

    ``path``: a ``.ckpt`` file, a DeepSpeed checkpoint directory, or a shipped editor (``pretrained:NAME`` or its
    directory: safetensors and a manifest, :mod:`lit_edit.pretrained`).

    Nothing in the file runs: a ``.ckpt`` is read with ``weights_only=True``, and so is every file DeepSpeed's loader
    reads of a DeepSpeed directory (:mod:`lit_edit.safe_files`); otherwise
    :class:`~lit_edit.errors.UnsafeFileError` or :class:`~lit_edit.errors.CheckpointError` names the file.
    """
    path = resolve_editor_path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no editor checkpoint there (train the editor first: python train.py ...)")
    if is_exported(path):  # a shipped editor: safetensors and its manifest (lit_edit.pretrained)
        return read_exported(path)
    if not path.is_dir():
        saved = load_tensors_file(path, "editor checkpoint (a train.py .ckpt)")
        if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
            raise CheckpointError(f"{path}: not a training checkpoint (it has no state_dict)")
        return saved["state_dict"], saved.get(MADE_FOR_KEY)
    check_deepspeed_directory(path)
    shards = sorted((path / "checkpoint").glob("*model_states.pt"))
    if not shards:
        raise CheckpointError(f"{path}: not a DeepSpeed checkpoint of train.py (no checkpoint/*model_states.pt)")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    client_state = load_tensors_file(shards[0], "DeepSpeed checkpoint file", allow=deepspeed_globals(), mmap=True)
    with deepspeed_reads_weights_only():
        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag="checkpoint")
    made_for = client_state.get(MADE_FOR_KEY) if isinstance(client_state, dict) else None
    return {key.removeprefix("_forward_module."): value for key, value in state.items()}, made_for


class EditScores(nn.Module):
    """ES, paraphrase ES, accuracy drawdown, retention, target NLL and token accuracy over one stage's batches;
    with ``compare_targets``, also CounterFact's efficacy, paraphrase and neighbourhood scores
    (:mod:`lit_edit.paper_scores`; they cost three more forward passes per batch, so validation skips them)."""

    def __init__(self, compare_targets: bool = False) -> None:
        super().__init__()
        self.compare_targets = compare_targets
        self.es = EditSuccess()
        self.paraphrase_es = EditSuccess()
        self.pre_es = EditSuccess()
        self.drawdown = AccuracyDrawdown()
        self.retention = Retention()
        # EasyEdit's locality: per out-of-scope example, the fraction of labelled positions whose argmax is unchanged.
        self.token_retention = TokenAccuracy()
        self.drawdown_unrelated = AccuracyDrawdown()
        self.drawdown_same_subject = AccuracyDrawdown()
        self.drawdown_same_relation = AccuracyDrawdown()
        self.edit_nll = TargetNLL()
        self.token_accuracy = TokenAccuracy()
        self.edit_seconds = MeanMetric()
        if compare_targets:
            self.efficacy = TargetPreference()
            self.paraphrase_score = TargetPreference()
            self.neighbourhood_score = TargetPreference()
            self.fluency = Fluency()  # filled only by an evaluation that generates (EditorSuite(fluency_tokens=N))
            self.consistency = Consistency()  # the same, for records with reference texts
            # Filled only by data with portability questions (MQuAKE's multi-hop questions, KnowEdit's portability).
            self.portability = EditSuccess()
            self.pre_portability = EditSuccess()
            self.portability_token_accuracy = TokenAccuracy()

    def as_logged(self) -> dict[str, Any]:
        """Metric objects by the names they are logged under (Lightning syncs, computes and resets them)."""
        logged = {"es": self.es, "paraphrase_es": self.paraphrase_es, "pre_es": self.pre_es, "dd": self.drawdown,
                  "retention": self.retention, "token_retention": self.token_retention, "dd_unrelated": self.drawdown_unrelated,
                  "dd_same_subject": self.drawdown_same_subject, "dd_same_relation": self.drawdown_same_relation,
                  "edit_nll": self.edit_nll, "token_accuracy": self.token_accuracy,
                  "edit_seconds": self.edit_seconds}
        if self.compare_targets:
            logged.update(efficacy=self.efficacy, paraphrase_score=self.paraphrase_score,
                          neighbourhood_score=self.neighbourhood_score, fluency=self.fluency,
                          consistency=self.consistency,
                          portability=self.portability, pre_portability=self.pre_portability,
                          portability_token_accuracy=self.portability_token_accuracy)
        return logged


def unedited_predictions(pre_logits: Tensor, labels: Tensor) -> Tensor:
    """The unedited model's argmax as labels, at the labelled positions only: what token retention compares with."""
    return torch.where(labels != IGNORE_INDEX, pre_logits.argmax(dim=-1), torch.full_like(labels, IGNORE_INDEX))


def kept_score(paraphrase_es: Tensor, es: Tensor, retention: Tensor) -> Tensor:
    """Harmonic mean of generalisation (paraphrase ES, or ES where there are no paraphrases: nan) and retention (1
    where there are no out-of-scope inputs): high only when an edit both generalises and leaves the rest alone."""
    generalisation = torch.where(paraphrase_es.isnan(), es, paraphrase_es).nan_to_num(0.0)
    kept = retention.nan_to_num(1.0)
    return 2 * generalisation * kept / (generalisation + kept).clamp_min(1e-12)


class Editor(LightningModule):
    """Base class: holds the (frozen, shared) base model and scores edits."""

    #: Whether DeepSpeed ZeRO-3 may partition this editor's trainable parameters: true when each is read only
    #: inside a submodule's forward (directly read ones go through a :class:`~lit_edit.editors.parameters.ParameterBank`).
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
        self.prompts = PromptTokenizer.for_model(self.tokenizer, self.model_spec.kind, max_length, self.model)
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
    def edit(self, batch: EditBatch) -> EditedModel:
        """Return the model edited by ``batch.edit``; the base model itself is never modified."""
        raise NotImplementedError

    def checked_edit(self, batch: EditBatch) -> EditedModel:
        """:meth:`edit`, refused (:class:`EditFailedError`) when the edited model's logits on the edit prompts are not
        finite: weights can stay finite while the outputs overflow (FT at a huge learning rate), and such an edit
        must count as failed, not be scored or saved. Every caller that makes an edit for use goes through here."""
        with torch.inference_mode(False), torch.enable_grad():
            edited = self.edit(batch)
        self.refuse_non_finite_outputs(batch, edited)
        return edited

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
        inputs (causal LMs; ``None`` where nothing can be skipped: :mod:`lit_edit.editors.lower_blocks`)."""
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

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, EditBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

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
        memory = getattr(self, "memory_based", False)  # edits a memory, not weights: its editable names are unused
        return {"editor": self.name,
                "model": {"name": self.model_spec.name, "hash": model_fingerprint(self.model),
                          "weights_hash": model_weights_fingerprint(self.model)},
                "editable": None if memory else list(self.editable_names),
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
        self.score(batch, self.val_scores)
        self.log_scores(self, self.val_scores, "val", len(batch))

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
        self.score(batch, self.test_scores)
        self.log_scores(self, self.test_scores, "test", len(batch))

    def pre_edit_logits(self, batch: EditBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Unedited (in-scope logits, labels, out-of-scope logits, labels): shareable by editors of one model."""
        with torch.no_grad():
            return (*self.logits(batch.in_scope), *self.logits(batch.out_of_scope))

    def score(self, batch: EditBatch, scores: EditScores,
              pre: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> EditedModel:
        """Edit with ``batch`` and update ``scores`` from the logits before (``pre``, computed if not given) and after."""
        pre_in, in_labels, pre_out, out_labels = pre if pre is not None else self.pre_edit_logits(batch)
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            edited = self.edit(batch)
        seconds = (time.perf_counter() - start) / len(batch)
        if edited.changes_outputs:
            with torch.no_grad():
                post_in, _ = self.logits(batch.in_scope, edited)
                # As checked_edit, on the in-scope rows (the edit prompts and their paraphrases), which are needed
                # anyway: an edit whose outputs are not finite has failed.
                self.refuse_non_finite_logits(post_in, batch.in_scope)
                post_out, _ = self.logits(batch.out_of_scope, edited)
        else:  # nothing was changed: the unedited logits are the answer
            post_in, post_out = pre_in, pre_out
        para = batch.in_scope_is_paraphrase
        scores.es.update(post_in, in_labels)
        scores.pre_es.update(pre_in, in_labels)
        if para.any():
            scores.paraphrase_es.update(post_in[para], in_labels[para])
        scores.drawdown.update(pre_out, post_out, out_labels)
        scores.retention.update(pre_out, post_out, out_labels)
        scores.token_retention.update(post_out, unedited_predictions(pre_out, out_labels))
        if batch.out_of_scope_kind is not None:  # the same drawdown, per kind of out-of-scope prompt
            kind = batch.out_of_scope_kind.to(pre_out.device)
            for code, metric in ((UNRELATED, scores.drawdown_unrelated), (SAME_SUBJECT, scores.drawdown_same_subject),
                                 (SAME_RELATION, scores.drawdown_same_relation)):
                rows = kind == code
                if rows.any():
                    metric.update(pre_out[rows], post_out[rows], out_labels[rows])
        scores.edit_nll.update(post_in, in_labels)
        scores.token_accuracy.update(post_in, in_labels)
        scores.edit_seconds.update(torch.tensor(seconds), weight=len(batch))
        if scores.compare_targets and all(record.target_true for record in batch.records):
            with torch.no_grad():
                self.score_target_preference(batch, edited, post_in, in_labels, scores)
        if scores.compare_targets and batch.portability is not None:
            with torch.no_grad():
                self.score_portability(batch.portability, edited, scores)
        return edited

    def score_portability(self, questions: TokenizedExamples, edited: EditedModel, scores: EditScores) -> None:
        """The questions the edit should carry over to (answered with the post-edit answer), before and after."""
        pre, labels = self.logits(questions)
        post = self.logits(questions, edited)[0] if edited.changes_outputs else pre
        scores.pre_portability.update(pre, labels)
        scores.portability.update(post, labels)
        scores.portability_token_accuracy.update(post, labels)

    def score_target_preference(self, batch: EditBatch, edited: EditedModel, post_in: Tensor, in_labels: Tensor,
                                scores: EditScores) -> None:
        """CounterFact's comparisons of the new and the true target after the edit (:mod:`lit_edit.paper_scores`)."""
        records = batch.records
        true_in = self.prompts([LabeledPrompt(p, r.target_true) for r in records for p in (r.prompt, *r.paraphrases)])
        post_true, true_labels = self.logits(true_in.to(self.device), edited)
        nll_new, nll_true = example_nll(post_in, in_labels), example_nll(post_true, true_labels)
        para = batch.in_scope_is_paraphrase.to(nll_new.device)
        scores.efficacy.update(nll_new[~para], nll_true[~para])
        if para.any():
            scores.paraphrase_score.update(nll_new[para], nll_true[para])
        # Neighbours: other subjects of the same relation whose true object is the edited fact's true object.
        neighbours = [(p.prompt, r) for r in records for p in r.hard_out_of_scope if p.target == r.target_true]
        if neighbours:
            keep, new = (self.prompts([LabeledPrompt(p, getattr(r, field)) for p, r in neighbours]).to(self.device)
                         for field in ("target_true", "target_new"))
            scores.neighbourhood_score.update(example_nll(*self.logits(keep, edited)),
                                              example_nll(*self.logits(new, edited)))

    @staticmethod
    def log_scores(module: LightningModule, scores: EditScores, prefix: str, batch_size: int) -> None:
        """Log the metric objects themselves, so Lightning syncs them across ranks and resets them per epoch."""
        for key, metric in scores.as_logged().items():
            module.log(f"{prefix}/{key}", metric, on_step=False, on_epoch=True, batch_size=batch_size)

    def configure_optimizers(self) -> Any:
        return None
