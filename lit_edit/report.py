"""Moved to :mod:`lit_edit.evaluation.report`; this module re-exports it (``lit-edit report`` runs it from here)."""

from lit_edit.evaluation import report as _moved
from lit_edit.evaluation.report import (
    ResultsFileError,
    add_arguments,
    load_results,
    main,
    plot_batch_sizes,
    plot_es_dd,
    plot_retention,
    read_results,
    records_from_log,
    results_table,
    write_run_report,
)

__doc__ = _moved.__doc__  # `lit-edit report --help` prints the docstring of this module

__all__ = ["ResultsFileError", "add_arguments", "load_results", "main", "plot_batch_sizes", "plot_es_dd",
           "plot_retention", "read_results", "records_from_log", "results_table", "write_run_report"]
