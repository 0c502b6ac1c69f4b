"""``lit-edit --help`` and every subcommand's ``--help`` import no torch, transformers, Lightning or matplotlib: the
top level lists the subcommands from a table, and only the chosen subcommand's module is imported to build its
parser. (No timing here: what is imported is what takes the time, about 7 s of CPU for torch and the rest.)"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import REPO

from lit_edit import model_names, models, statistics_command, trace_command, tracing
from lit_edit.__main__ import COMMANDS
from lit_edit.edit_command import resolve_device
from lit_edit.key_statistics import KeyStatisticsSpec

HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers", "matplotlib", "deepspeed")

PROBE = """
import json, runpy, sys
words, heavy = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
sys.argv = ["lit-edit", *words]
try:
    runpy.run_module("lit_edit", run_name="__main__")
    code = None
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "modules": sorted(name for name in sys.modules
                                                  if name.split(".")[0] in heavy or name.startswith("lit_edit."))}))
"""


def help_of(*words: str) -> tuple[int | None, str, list[str]]:
    """Exit code, everything printed before the probe's report, and the modules imported by ``lit-edit WORDS``."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(words), json.dumps(HEAVY)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    *printed, report = done.stdout.rstrip("\n").split("\n")
    probe = json.loads(report)
    return probe["code"], "\n".join(printed), probe["modules"]


def test_top_level_help_lists_every_subcommand_and_imports_none_of_them():
    code, printed, modules = help_of("--help")
    assert code == 0 and printed.startswith("usage: lit-edit")
    for name, command in COMMANDS.items():
        assert name in printed and command.help.split()[0] in printed
    heavy = [name for name in modules if not name.startswith("lit_edit.")]
    assert not heavy, heavy
    assert [name for name in modules if name != "lit_edit.__main__"] == ["lit_edit.model_names"], modules


@pytest.mark.parametrize("subcommand", sorted(COMMANDS))
def test_a_subcommands_help_imports_its_module_alone_and_nothing_heavy(subcommand):
    code, printed, modules = help_of(subcommand, "--help")
    assert code == 0 and printed.startswith(f"usage: lit-edit {subcommand}"), printed
    heavy = [name for name in modules if not name.startswith("lit_edit.")]
    assert not heavy, f"lit-edit {subcommand} --help imported {heavy}"
    others = {command.module for name, command in COMMANDS.items() if name != subcommand and command.module}
    assert not others & set(modules), others & set(modules)


def test_a_usage_error_needs_no_heavy_import_either():
    code, _, modules = help_of("edit")  # no EDIT given
    assert code == 2 and not [name for name in modules if not name.startswith("lit_edit.")]


def test_defaults_written_out_for_help_are_the_modules_own():
    spec = {field.name: field.default for field in dataclasses.fields(KeyStatisticsSpec)}
    assert {key: spec[key] for key in vars(statistics_command.SPEC_DEFAULTS)} == vars(statistics_command.SPEC_DEFAULTS)
    assert trace_command.KINDS == tracing.KINDS
    assert models.ModelSpec().name == model_names.DEFAULT_MODEL
    assert models.EMBEDDED_MODELS is model_names.EMBEDDED_MODELS  # still importable from lit_edit.models


def test_edit_device_auto_is_decided_when_the_command_runs():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
