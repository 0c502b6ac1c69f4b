"""Moved to :mod:`lit_edit.evaluation.paper_scores`; this module re-exports it, so that configs and code naming
``lit_edit.paper_scores.TargetPreference`` and the like keep working."""

from lit_edit.evaluation.paper_scores import (
    Consistency,
    Fluency,
    TargetPreference,
    TokenAccuracy,
    example_nll,
    inverse_document_frequencies,
    ngram_entropy,
    preference,
    tfidf_cosine,
    token_accuracy,
)

__all__ = [
    "Consistency",
    "Fluency",
    "TargetPreference",
    "TokenAccuracy",
    "example_nll",
    "inverse_document_frequencies",
    "ngram_entropy",
    "preference",
    "tfidf_cosine",
    "token_accuracy",
]
