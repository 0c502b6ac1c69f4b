"""An editor's spec (``{"class_path": ..., "init_args": {...}}``) and the one way it becomes an editor.

``lit-edit edit`` and :func:`lit_edit.api.load_editor` both read a config's entry with :func:`config_entry` and build
every spec with :func:`build_editor` (jsonargparse, as LightningCLI builds ``train.py``'s and ``evaluate.py``'s
editors), so an editor named in a config, on the command line or in Python is the same editor with the same errors.
Nothing here imports torch until an editor is built: ``lit-edit edit --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_edit.errors import CheckpointError, ConfigurationError, UserInputError

if TYPE_CHECKING:
    from lit_edit.editors.base import Editor


@dataclass(frozen=True)
class Naming:
    """How the user named the config, its entry and a checkpoint (command-line flags or Python arguments): errors
    say what to change in the words the user wrote."""

    config: str = "--config"
    entry: str = "--editor"
    settings: str = "--config, --editor"
    checkpoint: str = "--checkpoint PATH"


COMMAND_LINE = Naming()
PYTHON = Naming("config=", "load_editor's first argument", "load_editor's arguments", "checkpoint=PATH")


def read_config(config: Path, naming: Naming = COMMAND_LINE) -> Any:
    """A YAML config as plain data, read as ``train.py`` and ``evaluate.py`` read theirs
    (:func:`lit_edit.config_files.load_config`: its ``base:`` files merged under it, interpolations resolved)."""
    from lit_edit.config_files import load_config

    if not config.is_file():
        raise FileNotFoundError(f"no config file {config} ({naming.config})")
    try:
        return load_config(config)
    except (UserInputError, FileNotFoundError):  # a base: missing or a cycle, named in its own words
        raise
    except Exception as error:  # omegaconf's and YAML's own errors: the file's mistake, not ours
        raise ConfigurationError(f"{config} ({naming.config}) cannot be read: {error}") from None


def config_entry(config: Path, entry: str | None, naming: Naming = COMMAND_LINE) -> dict[str, Any]:
    """The spec of one editor: ``model.editors[entry]`` of an evaluation config, or the ``model`` of a training
    config."""
    loaded = read_config(config, naming)
    model = (loaded.get("model") if isinstance(loaded, dict) else None) or {}
    editors = model.get("editors") if isinstance(model, dict) else None
    if editors is None:
        if not isinstance(model, dict) or "class_path" not in model:
            raise ConfigurationError(f"{config} ({naming.config}) defines neither model.editors nor a model class_path")
        return model
    if entry not in editors:
        raise ConfigurationError(f"{config} ({naming.config}) has no editor {entry!r} ({naming.entry}); it has: "
                                 f"{', '.join(editors)}")
    return editors[entry]


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` on top, mappings merged key by key (as ``--model.init_args.a.b`` overrides only
    ``b``), anything else replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def build_editor(spec: Mapping[str, Any], model: str | Mapping[str, Any] | None = None,
                 checkpoint: str | None = None, editable: list[str] | None = None,
                 naming: Naming = COMMAND_LINE) -> Editor:
    """Instantiate an editor from its spec, with the caller's overrides: ``model`` a base model's name or
    :class:`~lit_edit.models.ModelSpec` fields (merged into the spec's), ``editable`` its patterns, ``checkpoint`` a
    trained editor's weights (which must exist)."""
    from jsonargparse import ArgumentParser

    from lit_edit.editors.base import Editor
    from lit_edit.pretrained import resolve_editor_path

    init_args = dict(spec.get("init_args") or {})
    model_args = dict(init_args.get("model") or {})
    if model is not None:
        model_args = merged(model_args, {"name": model} if isinstance(model, str) else model)
    if editable:
        model_args["editable"] = editable
    if model_args:
        init_args["model"] = model_args
    if checkpoint is not None:
        init_args["checkpoint"] = checkpoint
    if init_args.get("checkpoint") and not resolve_editor_path(init_args["checkpoint"]).exists():
        raise CheckpointError(f"no editor checkpoint at {init_args['checkpoint']}: train the editor first "
                              f"(python train.py --config configs/...) or pass {naming.checkpoint}")
    full = {"class_path": spec["class_path"], "init_args": init_args}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--editor", type=Editor)
    try:
        parsed = parser.parse_object({"editor": full})
    except argparse.ArgumentError as error:  # the entry does not fit its class: the config's mistake
        from lit_edit.cli import one_line, user_error_in

        raise user_error_in(error.__cause__) or ConfigurationError(
            f"the editor {full['class_path']} ({naming.settings}) cannot be built: "
            f"{one_line(error)}") from None
    return parser.instantiate_classes(parsed).editor


def resolve_device(device: str) -> str:
    """``auto`` is cuda where torch sees a GPU, else cpu (decided when an editor is built, so that ``--help`` needs
    no torch); any other value as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
