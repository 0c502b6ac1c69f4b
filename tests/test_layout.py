"""The package's layout holds: one folder per method under ``lit_edit/editors/``, none importing another; shared
mechanics in ``lit_edit/mechanics/``, importing no editor; the package itself on the new paths; and every module path
of before the layout (issue 23) still importing, as the same module where it is now an alias of a moved one.

Imports are read from the source (``ast``): every import counts, inside functions and ``TYPE_CHECKING`` too.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "lit_edit"
METHODS = ("ft", "mend", "enn", "ke", "rome", "memit", "kn", "serac", "cache")

#: Every module of ``git ls-files lit_edit`` before the layout change: each must still import.
OLD_MODULES = """
lit_edit lit_edit.__main__ lit_edit.activation_checkpointing lit_edit.api lit_edit.atomic_files lit_edit.callbacks
lit_edit.cli lit_edit.config_files lit_edit.data lit_edit.data.batch lit_edit.data.builtin lit_edit.data.builtin.facts
lit_edit.data.datamodule lit_edit.data.readers lit_edit.data.records lit_edit.data.sampling lit_edit.edit_command
lit_edit.editor_specs lit_edit.editors lit_edit.editors.base lit_edit.editors.cache lit_edit.editors.counterfactual
lit_edit.editors.edit_result lit_edit.editors.edited_model lit_edit.editors.enn lit_edit.editors.finetune
lit_edit.editors.ke lit_edit.editors.key_value lit_edit.editors.knowledge_neurons lit_edit.editors.lower_blocks
lit_edit.editors.memit lit_edit.editors.memory lit_edit.editors.mend lit_edit.editors.objective
lit_edit.editors.parameters lit_edit.editors.prefix_cache lit_edit.editors.registry lit_edit.editors.rome
lit_edit.editors.routed lit_edit.editors.schedule lit_edit.editors.scope_classifier lit_edit.editors.serac
lit_edit.editors.settings lit_edit.editors.target_cache lit_edit.errors lit_edit.evaluation lit_edit.evaluation.metrics
lit_edit.evaluation.paper_scores lit_edit.evaluation.report lit_edit.evaluation.results lit_edit.evaluation.scores
lit_edit.evaluation.scoring lit_edit.evaluation.suite lit_edit.export_command lit_edit.generation lit_edit.json_ready
lit_edit.key_statistics lit_edit.metrics lit_edit.model_layout lit_edit.model_names lit_edit.models
lit_edit.paper_scores lit_edit.partial_forward lit_edit.preemption lit_edit.pretrained lit_edit.profiling
lit_edit.protocol lit_edit.provenance lit_edit.report lit_edit.run_lock lit_edit.safe_files lit_edit.slurm
lit_edit.statistics_command lit_edit.strategies lit_edit.subject_tokens lit_edit.suite lit_edit.trace_command
lit_edit.tracing
""".split()

#: What the old modules that are packages now defined: the packages export it.
OLD_NAMES = {
    "lit_edit.editors.mend": "ActivationCapture MEND MENDNetwork RunningNorm",
    "lit_edit.editors.enn": "ENN",
    "lit_edit.editors.ke": "ConditionEncoder GatedUpdate KE greedy_answer per_example_nll split_edit",
    "lit_edit.editors.rome": "ContextPrefixes LocatingEditor ROME validate_statistics",
    "lit_edit.editors.memit": "MEMIT",
    "lit_edit.editors.cache": "CACHED_MARGIN CacheRouter EditCache",
    "lit_edit.editors.serac": "SERAC SeracRouter",
}

#: The folder of each registered editor's class.
FOLDER_OF = {"noedit": "ft", "ft": "ft", "ft_kl": "ft"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every dotted name ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: the package imports by absolute paths, which these checks read"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def shim_target(path: Path) -> str | None:
    """The module an old-path alias stands for (``sys.modules[__name__] = _moved``), or None for a real module."""
    tree = ast.parse(path.read_text())
    if "sys.modules[__name__] = _moved" not in path.read_text():
        return None
    (found,) = [f"{node.module}.{alias.name}" for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names if alias.asname == "_moved"]
    return found


SOURCES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
SHIMS = {name: target for name, path in SOURCES.items() if (target := shim_target(path)) is not None}


def through_shims(name: str) -> str:
    """``name`` with an old path that is now an alias replaced by the module it stands for."""
    for old, target in SHIMS.items():
        if name == old or name.startswith(old + "."):
            return target + name[len(old):]
    return name


def method_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["lit_edit", "editors"] and parts[2] in METHODS else None


def test_every_method_has_its_folder_and_the_mechanics_theirs():
    for method in METHODS:
        assert (PACKAGE / "editors" / method / "__init__.py").is_file(), method
    assert (PACKAGE / "mechanics" / "__init__.py").is_file()
    assert not [name for name in SOURCES if name.startswith("lit_edit.editors.mechanics")]


@pytest.mark.parametrize("method", METHODS)
def test_no_method_imports_another(method):
    wrong = {}
    for name, path in SOURCES.items():
        if method_of(name) != method:
            continue
        others = {target for found in imported(path) if (target := through_shims(found)) == "lit_edit.editors"
                  or method_of(target) not in (None, method)}
        if others:
            wrong[name] = sorted(others)
    assert not wrong, f"a method folder imports another method (or lit_edit.editors, which imports them all): {wrong}"


def test_the_mechanics_import_no_editor():
    wrong = {name: sorted(found for found in imported(path) if through_shims(found).startswith("lit_edit.editors"))
             for name, path in SOURCES.items() if name.startswith("lit_edit.mechanics")}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_the_package_imports_its_modules_by_their_new_paths():
    """Old paths are for users: a module of the package importing one would hide where its code now lives."""
    wrong = {name: sorted(found for found in imported(path) if through_shims(found) != found)
             for name, path in SOURCES.items() if name not in SHIMS}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_every_old_module_path_still_imports_and_an_alias_is_the_moved_module():
    assert set(SHIMS) <= set(OLD_MODULES), sorted(set(SHIMS) - set(OLD_MODULES))
    for name in OLD_MODULES:
        module = importlib.import_module(name)
        if name in SHIMS:
            assert SHIMS[name] not in SHIMS, f"{name} aliases an alias"
            assert module is importlib.import_module(SHIMS[name]) is sys.modules[name], name


@pytest.mark.parametrize("package", sorted(OLD_NAMES))
def test_a_method_package_exports_the_names_of_the_module_it_replaces(package):
    module = importlib.import_module(package)
    assert set(OLD_NAMES[package].split()) <= set(module.__all__)
    for name in OLD_NAMES[package].split():
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_every_registered_name_resolves_to_its_method_folder():
    from lit_edit import editors
    from lit_edit.editors.registry import editor_class, editor_names, registered

    for name in editor_names():
        cls = editor_class(name)
        assert registered(name).class_path.startswith("lit_edit.editors.") and getattr(editors, cls.__name__) is cls
        folder = FOLDER_OF.get(name, name)
        assert cls.__module__.startswith(f"lit_edit.editors.{folder}."), (name, cls.__module__)
