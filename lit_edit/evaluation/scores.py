"""The metrics of one stage's edits held together (:class:`EditScores`), and the figures derived from them.

They live here, not on the editor, so that adding a metric changes evaluation only: an editor computes an edit,
and :mod:`lit_edit.evaluation.scoring` fills these from its logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_edit.evaluation.generation_metrics import LikelihoodEditSuccess, PerplexityDrawdown
from lit_edit.evaluation.metrics import IGNORE_INDEX, AccuracyDrawdown, EditSuccess, Retention, TargetNLL
from lit_edit.evaluation.paper_scores import Consistency, Fluency, TargetPreference, TokenAccuracy

__all__ = ["EditScores", "kept_score", "unedited_predictions"]


class EditScores(nn.Module):
    """ES, paraphrase ES, accuracy drawdown, retention, target NLL and token accuracy over one stage's batches;
    with ``compare_targets``, also CounterFact's efficacy, paraphrase and neighbourhood scores
    (:mod:`lit_edit.evaluation.paper_scores`; they cost three more forward passes per batch, so validation skips
    them)."""

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
        # Generation editing (MEND's WikiText task): out-of-scope text's perplexity, and targets made likelier.
        self.perplexity_drawdown = PerplexityDrawdown()
        self.likelihood_es = LikelihoodEditSuccess()
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
                  "ppl_dd": self.perplexity_drawdown, "likelihood_es": self.likelihood_es,
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
