"""Results people can read without opening JSON: markdown tables and PNG plots.

``evaluate.py`` writes, beside its results JSON, the table (``.md``), ES against DD per editor
(``_es_dd.png``) and, for a sequential run, the retention curves (``_retention.png``).
``lit-edit report RESULTS.json ...`` does the same for several runs at once and adds ES and DD against the
number of edits made at once, from runs that differ in ``data.eval_edits_per_batch``. Given a run's per-batch
log (``RESULTS.jsonl``; a multi-device run's ranks' logs beside it are read too) instead, it reports the edits
finished so far: the figures of a long evaluation that is still running, or that stopped and will be resumed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lit_edit.errors import UserInputError
from lit_edit.evaluation.results import EditorResult, LogEntry

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "ResultsFileError", "add_arguments", "load_results", "main",
           "plot_batch_sizes", "plot_es_dd", "plot_retention", "read_results", "records_from_log", "results_table",
           "write_run_report"]

#: Table columns: (heading, logged metric key, format).
COLUMNS = (
    ("ES", "es", "{:.3f}"),
    ("paraphrase ES", "paraphrase_es", "{:.3f}"),
    ("pre-edit ES", "pre_es", "{:.3f}"),
    ("DD (acc.)", "dd", "{:+.3f}"),
    ("retention", "retention", "{:.3f}"),
    ("token ret.", "token_retention", "{:.3f}"),
    ("DD unrelated", "dd_unrelated", "{:+.3f}"),
    ("DD same subject", "dd_same_subject", "{:+.3f}"),
    ("DD same relation", "dd_same_relation", "{:+.3f}"),
    ("target NLL", "edit_nll", "{:.3f}"),
    ("ppl DD", "ppl_dd", "{:+.3f}"),
    ("likelihood ES", "likelihood_es", "{:.3f}"),
    ("token acc.", "token_accuracy", "{:.3f}"),
    ("efficacy", "efficacy", "{:.3f}"),
    ("para. score", "paraphrase_score", "{:.3f}"),
    ("neigh. score", "neighbourhood_score", "{:.3f}"),
    ("fluency", "fluency", "{:.2f}"),
    ("consistency", "consistency", "{:.3f}"),
    ("portability", "portability", "{:.3f}"),
    ("pre-edit port.", "pre_portability", "{:.3f}"),
    ("port. token acc.", "portability_token_accuracy", "{:.3f}"),
    ("edit s/edit", "edit_seconds", "{:.3f}"),
)
#: Columns left out of the table when no editor has a figure for them (data without portability questions or
#: reference texts).
OPTIONAL_COLUMNS = frozenset({"consistency", "portability", "pre_portability", "portability_token_accuracy"})


@functools.cache
def _pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no screen); imported with the first plot, not for ``--help``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class ResultsFileError(UserInputError, ValueError):
    """A file given to ``lit-edit report`` that is not a results JSON or per-batch log of ``evaluate.py``."""


def read_results(paths: Sequence[Path]) -> list[EditorResult]:
    """Every editor record of every results file (or per-batch log), each tagged with the file it came from; a file
    that is missing, not UTF-8, not JSON or not evaluate.py's is a :class:`ResultsFileError` naming it."""
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ResultsFileError(f"{path}: no such results file (give evaluate.py's results JSON or its .jsonl log)")
        if path.suffix == ".jsonl":
            try:
                loaded = records_from_log(path)
            except ResultsFileError:
                raise
            except UnicodeDecodeError as error:
                line = path.read_bytes().count(b"\n", 0, error.start) + 1
                raise ResultsFileError(f"{path}: line {line}: not UTF-8 text; give evaluate.py's .jsonl log") from None
            except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as error:
                raise ResultsFileError(f"{path}: not a per-batch log of evaluate.py ({type(error).__name__}: "
                                       f"{error})") from None
            except ValueError as error:  # the log reader's own errors name the file and line
                message = str(error)
                raise ResultsFileError(message if str(path) in message else f"{path}: {message}") from None
        else:
            loaded = _read_results_json(path)
        records.extend(replace(record, source=str(path)) for record in loaded)
    return records


def load_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """:func:`read_results` as the JSON records (each with its ``source``)."""
    return [record.to_json() for record in read_results(paths)]


def _read_results_json(path: Path) -> list[EditorResult]:
    """A results JSON's editor records: a list of objects, each with an ``editor`` name and its ``metrics``."""
    data = path.read_bytes()
    try:
        loaded = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ResultsFileError(f"{path}: line {line}: not UTF-8 text; give evaluate.py's results JSON") from None
    except json.JSONDecodeError as error:
        raise ResultsFileError(f"{path}: line {error.lineno}: not JSON ({error.msg}); give evaluate.py's results "
                               "JSON or its .jsonl log") from None
    except RecursionError:
        raise ResultsFileError(f"{path}: nested too deeply to be evaluate.py's results JSON") from None
    if not isinstance(loaded, list):
        raise ResultsFileError(f"{path}: expected evaluate.py's results, a JSON list of editor records, got a "
                               f"{type(loaded).__name__}")
    for index, record in enumerate(loaded):
        if not (isinstance(record, dict) and isinstance(record.get("editor"), str)
                and isinstance(record.get("metrics"), dict)):
            raise ResultsFileError(f"{path}: record {index} is not an editor record of evaluate.py (an object with "
                                   "'editor' and 'metrics')")
    return [EditorResult.from_json(record) for record in loaded]


def records_from_log(path: Path) -> list[EditorResult]:
    """One record per editor from the batches a per-batch log holds, scored exactly as the finished run scores
    them (``edits``: the edits made and scored, not counting failed ones); ``finished``: whether the run ended."""
    from lit_edit.protocol import read_run  # torch: not for --help

    fingerprint, lines, finished = read_run(Path(path))
    if not fingerprint:
        raise ResultsFileError(f"{path}: not a per-batch log of evaluate.py (its first line has no run fingerprint)")
    settings = json.loads(fingerprint)
    if settings["protocol"]["mode"] == "sequential":
        raise ResultsFileError(f"{path}: a sequential run's retention curve is in its results JSON, not its log; "
                               "report that file once the run has finished")
    entries = [LogEntry.from_json(line) for line in lines]
    order = list(dict.fromkeys(entry.editor for entry in entries))  # the config's order (the fingerprint sorts)
    ranked = sorted(settings["editors"].items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return [EditorResult.from_entries(entries, editor, init_args=init_args, protocol=settings["protocol"],
                                      data=settings["data"], finished=finished) for editor, init_args in ranked]


def _labels(records: Sequence[EditorResult]) -> list[str]:
    """Editor names, with the run's file name only where one editor name comes from more than one run."""
    runs_of: dict[str, set[str | None]] = {}
    for record in records:
        runs_of.setdefault(record.editor, set()).add(record.source)
    return [record.editor if len(runs_of[record.editor]) == 1 else f"{record.editor} ({Path(record.source or '').stem})"
            for record in records]


#: What the x axis of the ES plot reads: accuracy drawdown, or the share of out-of-scope predictions the edit changed
#: (1 - retention), which is what tells editors apart where the unedited model gets no out-of-scope answer right
#: (zsRE's NQ questions on a small model) and every DD is 0.
LOCALITY_AXES = {"dd": "drawdown (accuracy, lower is better)",
                 "changed": "out-of-scope predictions changed (1 - retention, lower is better)"}


def _locality(record: EditorResult, against: str) -> float:
    if against == "dd":
        return record.metrics.get("dd", math.nan)
    return 1.0 - record.metrics.get("retention", math.nan)


def plot_es_dd(records: Sequence[EditorResult], path: Path, title: str = "ES against DD",
               against: str = "dd") -> Path:
    """One point per editor (and run): ES against accuracy drawdown (or, ``against="changed"``, 1 - retention); up
    and to the left is better. Labels of points that lie close together are stacked so that they stay readable."""
    if against not in LOCALITY_AXES:
        raise ValueError(f"against must be one of {sorted(LOCALITY_AXES)}, got {against!r}")
    figure, axes = _pyplot().subplots(figsize=(6.4, 4.6))
    placed: list[tuple[float, float]] = []
    points = [(_locality(record, against), record.metrics.get("es", math.nan)) for record in records]
    span = max((abs(dd) for dd, _ in points if not math.isnan(dd)), default=1.0) or 1.0
    labelled = sorted(zip(points, _labels(records), strict=True), key=lambda item: -item[0][1]
                      if not math.isnan(item[0][1]) else math.inf)
    for (dd, es), label in labelled:  # highest first: a stacked label goes below, under the lower point
        axes.scatter(dd, es, s=40)
        crowd = sum(abs(dd - x) < 0.08 * span and abs(es - y) < 0.04 for x, y in placed)
        placed.append((dd, es))
        axes.annotate(label, (dd, es), textcoords="offset points", xytext=(5, 4 - 9 * crowd), fontsize=7)
    axes.set(xlabel=LOCALITY_AXES[against], ylabel="edit success", ylim=(-0.05, 1.05), title=title)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_retention(records: Sequence[EditorResult], path: Path) -> Path | None:
    """Sequential runs: ES over all edits so far, ES of the first edit and DD, against edits made."""
    sequential = [r for r in records if r.sequential]
    if not sequential:
        return None
    figure, (left, right) = _pyplot().subplots(1, 2, figsize=(10, 4))
    for record, label in zip(sequential, _labels(sequential), strict=True):
        curve = record.sequential or []
        edits = [point["edits"] for point in curve]
        line, = left.plot(edits, [p["es"] for p in curve], marker="o", label=label)
        left.plot(edits, [p["first_edit_es"] for p in curve], linestyle="--", color=line.get_color())
        right.plot(edits, [p["dd"] for p in curve], marker="o", label=label)
    left.set(xlabel="edits made", ylabel="ES (solid: all edits so far; dashed: the first)", ylim=(-0.05, 1.05),
             title="Retention of earlier edits")
    right.set(xlabel="edits made", ylabel="drawdown against the unedited model", title="Damage to other facts")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, path)


def plot_batch_sizes(records: Sequence[EditorResult], path: Path) -> Path | None:
    """ES and DD against the number of edits made at once, one line per editor (needs two or more sizes)."""
    by_editor: dict[str, list[tuple[int, float, float]]] = {}
    for record in records:
        protocol = record.protocol or {}
        if protocol.get("mode") in ("single", "batch"):
            by_editor.setdefault(record.editor, []).append(
                (protocol["edits_per_batch"], record.metrics.get("es", math.nan), record.metrics.get("dd", math.nan)))
    if all(len({k for k, _, _ in points}) < 2 for points in by_editor.values()):
        return None
    figure, (left, right) = _pyplot().subplots(1, 2, figsize=(10, 4))
    for editor, points in sorted(by_editor.items()):
        points.sort()
        sizes = [k for k, _, _ in points]
        left.plot(sizes, [es for _, es, _ in points], marker="o", label=editor)
        right.plot(sizes, [dd for _, _, dd in points], marker="o", label=editor)
    left.set(xlabel="edits made at once", ylabel="edit success", ylim=(-0.05, 1.05), xscale="log")
    right.set(xlabel="edits made at once", ylabel="drawdown", xscale="log")
    sizes = sorted({k for points in by_editor.values() for k, _, _ in points})
    for axes in (left, right):
        axes.set_xticks(sizes, [str(k) for k in sizes])
        axes.minorticks_off()
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return path


def write_run_report(records: Sequence[EditorResult], output: Path, table: str) -> list[Path]:
    """The table and plots of one evaluation, beside its results JSON."""
    written = [output.with_suffix(".md")]
    written[0].write_text(table + "\n")
    tagged = [replace(record, source=str(output)) for record in records]
    written.append(plot_es_dd(tagged, output.with_name(f"{output.stem}_es_dd.png")))
    retention = plot_retention(tagged, output.with_name(f"{output.stem}_retention.png"))
    return written + ([retention] if retention else [])


def results_table(results: Sequence[EditorResult]) -> str:
    """A markdown table, one row per editor."""
    columns = [(heading, key, fmt) for heading, key, fmt in COLUMNS if key not in OPTIONAL_COLUMNS
               or any(not math.isnan(record.metrics.get(key, math.nan)) for record in results)]
    head = "| editor | " + " | ".join(h for h, _, _ in columns) + " | failed |"
    rule = "|---" * (len(columns) + 2) + "|"
    rows = []
    for record in results:
        cells = []
        for _, key, fmt in columns:
            value = record.metrics.get(key, math.nan)
            cells.append("n/a" if math.isnan(value) else fmt.format(value))
        rows.append(f"| {record.editor} | " + " | ".join(cells) + f" | {record.failed_edits or 0} |")
    return "\n".join([head, rule, *rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path,
                        help="results JSON files written by evaluate.py, or their per-batch logs (.jsonl) for the "
                             "edits an unfinished run has made so far")
    parser.add_argument("--out", type=Path, default=Path("results/report"), help="directory for the table and plots")
    parser.add_argument("--title", default="ES against DD", help="title of the ES-against-DD plot (say the task)")
    parser.add_argument("--against", choices=sorted(LOCALITY_AXES), default="dd",
                        help="x axis of the ES plot: accuracy DD, or 'changed' (1 - retention) where every DD is 0")


def main(args: argparse.Namespace) -> int:
    records = read_results(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    table = results_table([replace(record, editor=label) for record, label in zip(records, _labels(records), strict=True)])
    (args.out / "results.md").write_text(table + "\n")
    written = [args.out / "results.md", plot_es_dd(records, args.out / "es_dd.png", args.title, args.against)]
    written += [p for p in (plot_retention(records, args.out / "retention.png"),
                            plot_batch_sizes(records, args.out / "batch_sizes.png")) if p]
    so_far: dict[str, list[int]] = {}
    for record in records:
        if record.finished is False:
            so_far.setdefault(str(record.source), []).append(record.edits or 0)
    unfinished = [f"{source} ({min(counts)}–{max(counts)} edits per editor so far)" if min(counts) < max(counts)
                  else f"{source} ({counts[0]} edits so far)" for source, counts in so_far.items()]
    print(table + "\n\nwritten: " + ", ".join(str(p) for p in written)
          + ("\nunfinished runs: " + ", ".join(unfinished) if unfinished else ""))
    return 0
