"""Evaluation of edits, apart from the editors that make them.

* :mod:`~lit_edit.evaluation.metrics` and :mod:`~lit_edit.evaluation.paper_scores`: the metrics, as torchmetrics
  classes over small pure functions;
* :mod:`~lit_edit.evaluation.scores`: :class:`EditScores`, the metrics of one stage together;
* :mod:`~lit_edit.evaluation.scoring`: :func:`score`, which turns an edit's logits into metric updates;
* :mod:`~lit_edit.evaluation.results`: the typed per-batch log entry and results record, with their JSON forms;
* :mod:`~lit_edit.evaluation.suite`: :class:`EditorSuite`, several editors on the same test batches;
* :mod:`~lit_edit.evaluation.report`: tables and plots of results (``lit-edit report``).

Names are loaded on first use: ``lit-edit report --help`` imports this package and must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_EXPORTS = {
    "EditScores": "scores",
    "kept_score": "scores",
    "unedited_predictions": "scores",
    "Scoreable": "scoring",
    "TimedEdit": "scoring",
    "UneditedLogits": "scoring",
    "score": "scoring",
    "timed_edit": "scoring",
    "unedited_logits": "scoring",
    "EditorResult": "results",
    "LogEntry": "results",
    "EditorSuite": "suite",
    "load_results": "report",
    "read_results": "report",
    "results_table": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
