"""Moved to :mod:`lit_edit.evaluation.suite`; this module re-exports it, so that configs naming
``lit_edit.suite.EditorSuite`` keep working."""

from lit_edit.evaluation.suite import COLUMNS, OPTIONAL_COLUMNS, EditorSuite, only_editors, results_table

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "EditorSuite", "only_editors", "results_table"]
