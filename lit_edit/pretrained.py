"""Trained editors shipped with the project: weights-only safetensors beside a manifest saying how they were made
and what they score.

    lit-edit export-editor checkpoints/mend-zsre-smollm2-135m/best.ckpt mend-smollm2-zsre \\
        --made-by "python train.py --config configs/mend_zsre.yaml" --results results/evaluate_zsre.json

writes ``checkpoints/pretrained/mend-smollm2-zsre/`` (``editor.safetensors`` and ``manifest.json``); an editor config
then names it ``checkpoint: pretrained:mend-smollm2-zsre`` (or the directory itself). Loading reads no pickle at all,
checks the weights' SHA-256 against the manifest, and compares what the editor was trained for (base model,
editable weights, shape settings) as for any checkpoint. An export is at most 20 MB, so it can live in git.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from lit_edit.checkpoint_files import read_training_checkpoint
from lit_edit.errors import CheckpointError, ConfigurationError
from lit_edit.json_ready import json_ready
from lit_edit.mechanics.atomic_files import save_directory_atomically

PREFIX = "pretrained:"
WEIGHTS_FILE = "editor.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
#: The most an exported editor may weigh: what a repository can carry.
MAX_BYTES = 20 * 2**20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def pretrained_root() -> Path:
    """Where shipped editors live: ``$LIT_EDIT_PRETRAINED`` or the repository's ``checkpoints/pretrained``."""
    return Path(os.environ.get("LIT_EDIT_PRETRAINED", Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained"))


def available(root: Path | None = None) -> list[str]:
    root = root or pretrained_root()
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_FILE).is_file()) if root.is_dir() else []


def resolve_editor_path(path: str | Path) -> Path:
    """``pretrained:NAME`` as the shipped editor's directory (refused naming what is shipped when there is none);
    any other path as it is."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(path)
    name = text[len(PREFIX):]
    if not _NAME.match(name):
        raise CheckpointError(f"{text}: a shipped editor's name is letters, digits, '.', '_' and '-'")
    where = pretrained_root() / name
    if not (where / MANIFEST_FILE).is_file():
        shipped = ", ".join(PREFIX + n for n in available()) or "none"
        raise CheckpointError(f"{text}: no such shipped editor in {pretrained_root()} (shipped: {shipped})")
    return where


def is_exported(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{directory / MANIFEST_FILE}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory / MANIFEST_FILE}: not an exported editor's manifest of version "
                              f"{FORMAT_VERSION} (lit-edit export-editor writes them)")
    return manifest


def read_exported(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(weights, what they were trained for) of an exported editor; its weights must match the manifest's hash."""
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: the manifest's weights {WEIGHTS_FILE} are missing")
    if _sha256(weights) != manifest.get("sha256"):
        raise CheckpointError(f"{weights}: its SHA-256 is not the manifest's: the weights were changed or damaged "
                              "after export")
    try:
        state = load_file(str(weights))
    except Exception as error:  # a truncated or foreign file
        raise CheckpointError(f"{weights}: not readable safetensors ({error})") from None
    return state, manifest.get("made_for")


def export_editor(checkpoint: str | Path, name: str, *, command: str = "", results: dict[str, Any] | None = None,
                  notes: str = "", root: Path | None = None, max_bytes: int = MAX_BYTES,
                  overwrite: bool = False) -> Path:
    """Write a training checkpoint's editor weights as ``root/name/`` (safetensors and manifest) and return it.

    ``command``: how the checkpoint was made; ``results``: one editor's record of an ``evaluate.py`` results JSON
    (its figures, data and edit count go into the manifest). Refused (nothing written): a name that is not a plain
    name, an existing export without ``overwrite``, weights over ``max_bytes``.
    """
    from lit_edit.safe_files import load_tensors_file

    if not _NAME.match(name):
        raise ConfigurationError(f"export name {name!r}: use letters, digits, '.', '_' and '-'")
    target = (root or pretrained_root()) / name
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} exists; pass --overwrite to replace it")
    state, made_for = read_editor_checkpoint(checkpoint)
    if made_for is None:
        raise CheckpointError(f"{checkpoint} does not record what it was trained for (written before checkpoints "
                              "did): retrain or resume it once so that it does, then export")
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > max_bytes:
        raise CheckpointError(f"{checkpoint}: the editor's weights are {size / 2**20:.1f} MB, more than the "
                              f"{max_bytes / 2**20:.0f} MB an export may be; rebuild it with its training command")
    training: dict[str, Any] = {"checkpoint": str(checkpoint)}
    hparams: dict[str, Any] = {}
    if Path(checkpoint).is_file():
        saved = load_tensors_file(checkpoint, "editor checkpoint")
        training.update(global_step=saved.get("global_step"), epoch=saved.get("epoch"))
        hparams = json_ready(saved.get("hyper_parameters") or {})
    manifest = {"format_version": FORMAT_VERSION, "name": name, "editor": made_for.get("editor"),
                "init_args": hparams, "made_for": made_for, "training": training, "command": command,
                "results": _results_summary(results), "notes": notes, "bytes": size,
                "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def write(directory: Path) -> None:
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"lit_edit_editor": str(made_for.get("editor"))})
        manifest["sha256"] = _sha256(directory / WEIGHTS_FILE)
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    save_directory_atomically(target, write)
    return target


def _results_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {key: record.get(key) for key in ("editor", "edits", "failed_edits", "metrics", "data", "protocol")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_editor_state(path: str | Path) -> dict[str, Tensor]:
    """An editor's weights from any checkpoint :func:`read_editor_checkpoint` reads."""
    return read_editor_checkpoint(path)[0]


def read_editor_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(weights, what the checkpoint records it was made for, or ``None`` for one written before that was recorded).

    ``path``: a ``.ckpt`` file, a DeepSpeed checkpoint directory (:mod:`lit_edit.checkpoint_files`), or a shipped
    editor (``pretrained:NAME`` or its directory: safetensors and a manifest). Nothing in any of them runs.
    """
    path = resolve_editor_path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no editor checkpoint there (train the editor first: python train.py ...)")
    if is_exported(path):
        return read_exported(path)
    return read_training_checkpoint(path)

