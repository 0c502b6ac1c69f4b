"""Scoring an edit: the one place where an edited model's logits become :class:`EditScores` updates.

The suite, an editor's validation and test steps and the benchmark scripts all call :func:`score`, so a new metric
is added here, once, and every caller reports it. It needs of an editor only what :class:`Scoreable` names.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
from torch import Tensor

from lit_edit.data.batch import SAME_RELATION, SAME_SUBJECT, UNRELATED, EditBatch, PromptTokenizer, TokenizedExamples
from lit_edit.data.records import LabeledPrompt
from lit_edit.evaluation.paper_scores import example_nll
from lit_edit.evaluation.scores import EditScores, unedited_predictions

if TYPE_CHECKING:  # at run time these would import the editors, which import this module
    from lightning.pytorch import LightningModule

    from lit_edit.mechanics.edit_result import EditResult
    from lit_edit.mechanics.edited_model import EditedModel

__all__ = ["Scoreable", "TimedEdit", "UneditedLogits", "log_scores", "score", "score_portability",
           "score_target_preference", "timed_edit", "unedited_logits"]


class Scoreable(Protocol):
    """What scoring needs of an editor (every :class:`~lit_edit.editors.base.Editor` has it)."""

    @property
    def prompts(self) -> PromptTokenizer: ...

    @property
    def device(self) -> torch.device: ...

    def edit(self, batch: EditBatch, on: EditResult | None = None) -> EditedModel: ...

    def logits(self, examples: TokenizedExamples, edited: EditedModel | None = None) -> tuple[Tensor, Tensor]: ...

    def refuse_non_finite_logits(self, logits: Tensor, examples: TokenizedExamples) -> None: ...


class UneditedLogits(NamedTuple):
    """The unedited model's logits and labels on a batch's in-scope and out-of-scope inputs: the same for every
    editor of one base model, so an evaluation of several editors computes them once."""

    in_scope: Tensor
    in_labels: Tensor
    out_of_scope: Tensor
    out_labels: Tensor


class TimedEdit(NamedTuple):
    """An edit and the seconds it took per edit of its batch."""

    model: EditedModel
    seconds: float


def unedited_logits(editor: Scoreable, batch: EditBatch) -> UneditedLogits:
    """The base model's logits on ``batch``, before any edit."""
    with torch.no_grad():
        return UneditedLogits(*editor.logits(batch.in_scope), *editor.logits(batch.out_of_scope))


def timed_edit(editor: Scoreable, batch: EditBatch, on: EditResult | None = None) -> TimedEdit:
    """``editor.edit(batch, on=on)`` (with gradients, which editors that optimise need even under inference mode),
    timed; ``on``: the earlier edits this one is made on (sequential editing)."""
    start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        edited = editor.edit(batch) if on is None else editor.edit(batch, on=on)
    return TimedEdit(edited, (time.perf_counter() - start) / len(batch))


def score(editor: Scoreable, batch: EditBatch, scores: EditScores,
          pre: tuple[Tensor, Tensor, Tensor, Tensor] | None = None, made: TimedEdit | None = None) -> EditedModel:
    """Update ``scores`` with the edit of ``batch``, against the unedited logits; return the edited model.

    ``pre``: the unedited logits (:func:`unedited_logits`, computed if not given). ``made``: the edit, when the
    caller made it (one edit scored in chunks); otherwise it is made and timed here. An edit whose outputs on the
    in-scope rows are not finite raises :class:`~lit_edit.mechanics.edited_model.EditFailedError`, as
    ``Editor.checked_edit`` does, and updates nothing.
    """
    pre_in, in_labels, pre_out, out_labels = pre if pre is not None else unedited_logits(editor, batch)
    edited, seconds = made if made is not None else timed_edit(editor, batch)
    if edited.changes_outputs:
        with torch.no_grad():
            post_in, _ = editor.logits(batch.in_scope, edited)
            # On the in-scope rows (the edit prompts and their paraphrases), which are needed anyway.
            editor.refuse_non_finite_logits(post_in, batch.in_scope)
            post_out, _ = editor.logits(batch.out_of_scope, edited)
    else:  # nothing was changed: the unedited logits are the answer
        post_in, post_out = pre_in, pre_out
    para = batch.in_scope_is_paraphrase
    scores.es.update(post_in, in_labels)
    scores.pre_es.update(pre_in, in_labels)
    if para.any():
        scores.paraphrase_es.update(post_in[para], in_labels[para])
    scores.drawdown.update(pre_out, post_out, out_labels)
    scores.perplexity_drawdown.update(pre_out, post_out, out_labels)
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
    scores.likelihood_es.update(pre_in, post_in, in_labels)
    scores.token_accuracy.update(post_in, in_labels)
    scores.edit_seconds.update(torch.tensor(seconds), weight=len(batch))
    if scores.compare_targets and all(record.target_true for record in batch.records):
        with torch.no_grad():
            score_target_preference(editor, batch, edited, post_in, in_labels, scores)
    if scores.compare_targets and batch.portability is not None:
        with torch.no_grad():
            score_portability(editor, batch.portability, edited, scores)
    return edited


def score_portability(editor: Scoreable, questions: TokenizedExamples, edited: EditedModel,
                      scores: EditScores) -> None:
    """The questions the edit should carry over to (answered with the post-edit answer), before and after."""
    pre, labels = editor.logits(questions)
    post = editor.logits(questions, edited)[0] if edited.changes_outputs else pre
    scores.pre_portability.update(pre, labels)
    scores.portability.update(post, labels)
    scores.portability_token_accuracy.update(post, labels)


def score_target_preference(editor: Scoreable, batch: EditBatch, edited: EditedModel, post_in: Tensor,
                            in_labels: Tensor, scores: EditScores) -> None:
    """CounterFact's comparisons of the new and the true target after the edit
    (:mod:`lit_edit.evaluation.paper_scores`)."""
    records = batch.records
    true_in = editor.prompts([LabeledPrompt(p, r.target_true) for r in records for p in (r.prompt, *r.paraphrases)])
    post_true, true_labels = editor.logits(true_in.to(editor.device), edited)
    nll_new, nll_true = example_nll(post_in, in_labels), example_nll(post_true, true_labels)
    para = batch.in_scope_is_paraphrase.to(nll_new.device)
    scores.efficacy.update(nll_new[~para], nll_true[~para])
    if para.any():
        scores.paraphrase_score.update(nll_new[para], nll_true[para])
    # Neighbours: other subjects of the same relation whose true object is the edited fact's true object.
    neighbours = [(p.prompt, r) for r in records for p in r.hard_out_of_scope if p.target == r.target_true]
    if neighbours:
        keep, new = (editor.prompts([LabeledPrompt(p, getattr(r, field)) for p, r in neighbours]).to(editor.device)
                     for field in ("target_true", "target_new"))
        scores.neighbourhood_score.update(example_nll(*editor.logits(keep, edited)),
                                          example_nll(*editor.logits(new, edited)))


def log_scores(module: LightningModule, scores: EditScores, prefix: str, batch_size: int) -> None:
    """Log the metric objects themselves, so Lightning syncs them across ranks and resets them per epoch."""
    for key, metric in scores.as_logged().items():
        module.log(f"{prefix}/{key}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
