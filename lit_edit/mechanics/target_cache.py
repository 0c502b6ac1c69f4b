"""Target values (ROME's v*, MEMIT's z*) kept on disk, one file per fact, and reused.

The search for a fact's target is most of what a locating edit costs, and on the unedited model its result depends
only on the model, the searched module, the search settings, the context prefixes and the fact. So an evaluation
that writes facts one at a time leaves behind the targets a later edit of 1,000 facts at once needs, and an edit of
thousands of facts that is interrupted resumes at the facts it had not reached (MEMIT's released code keeps z* per
case for the same reason). Files live under
``checkpoints/targets/<model hash>/<module>/<settings hash>/<fact hash>.pt``; a file from another format, an
unreadable one or one that would run code when loaded (every file is read with ``weights_only=True``) is
recomputed with a warning, never misread.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedModel

from lit_edit.errors import CheckpointError, UserInputError
from lit_edit.mechanics.key_statistics import atomic_save, json_digest, model_fingerprint
from lit_edit.mechanics.key_value import FactRequest, TargetOptimisation
from lit_edit.models import checkpoints_dir
from lit_edit.safe_files import load_tensors_file

#: Part of every settings hash: a change to how targets are searched for must bump it, so old files are not reused.
FORMAT_VERSION = 1


def default_root() -> Path:
    return checkpoints_dir() / "targets"


class TargetCache:
    """The targets of one module's search under fixed settings; counts what it found and what it did not."""

    def __init__(self, model: PreTrainedModel, module_name: str, settings: TargetOptimisation,
                 prefixes: Sequence[str], max_length: int, root: Path | None = None) -> None:
        tag = json_digest({"version": FORMAT_VERSION, "settings": asdict(settings), "prefixes": list(prefixes),
                       "max_length": max_length}, 12)
        self.directory = (root or default_root()) / model_fingerprint(model) / module_name / tag
        self.hits = 0
        self.misses = 0

    def path(self, request: FactRequest) -> Path:
        return self.directory / f"{json_digest(asdict(request), 16)}.pt"

    def load(self, request: FactRequest) -> Tensor | None:
        """The stored target of ``request``, or ``None`` (counted as a miss) when there is none to trust."""
        path = self.path(request)
        saved = None
        if path.exists():
            try:
                saved = load_tensors_file(path, "target cache file")
            except UserInputError as error:  # a truncated, foreign or code-running file: say so, then search again
                warnings.warn(f"target cache {path} is unreadable ({error}); searching again", stacklevel=2)
            if saved is not None and not _is_target_file(saved, asdict(request)):
                warnings.warn(f"target cache {path} holds another fact or format; searching again", stacklevel=2)
                saved = None
        if saved is None:
            self.misses += 1
            return None
        self.hits += 1
        return saved["value"]

    def save(self, request: FactRequest, value: Tensor) -> None:
        # A clone: the value is a row of its batch's tensor, and saving a view would write the whole batch's storage.
        atomic_save({"version": FORMAT_VERSION, "request": asdict(request),
                     "value": value.detach().float().cpu().clone()}, self.path(request))


def _is_target_file(saved: object, request: dict | None = None) -> bool:
    """Whether ``saved`` is a target file of this format (for ``request``, when given)."""
    return (isinstance(saved, dict) and saved.get("version") == FORMAT_VERSION
            and isinstance(saved.get("value"), Tensor) and (request is None or saved.get("request") == request))


#: Version of the single-file archive that :func:`export_targets` writes.
ARCHIVE_VERSION = 1


def export_targets(archive: Path, root: Path | None = None) -> int:
    """Every target file under ``root`` in one file (their paths below ``root`` and contents); returns how many.

    Targets searched on one machine (a GPU, the tasks of a SLURM array) can then be carried to another and imported
    there, where an edit reuses them instead of searching again.
    """
    root = root or default_root()
    entries = {}
    for path in sorted(root.rglob("*.pt")):
        try:
            saved = load_tensors_file(path, "target cache file")
        except UserInputError as error:  # as a lookup would: never exported, searched again where it is needed
            warnings.warn(f"target cache {path} is left out of the archive ({error})", stacklevel=2)
            continue
        if not _is_target_file(saved):
            warnings.warn(f"target cache {path} is left out of the archive (another format)", stacklevel=2)
            continue
        entries[path.relative_to(root).as_posix()] = {**saved, "value": saved["value"].clone()}  # its own storage
    atomic_save({"version": ARCHIVE_VERSION, "entries": entries}, Path(archive))
    return len(entries)


def import_targets(archive: Path, root: Path | None = None) -> int:
    """Writes an :func:`export_targets` archive's files under ``root``, leaving files already there as they are;
    returns how many it wrote. A foreign archive, or one whose paths would leave ``root``, is refused whole."""
    root = root or default_root()
    saved = load_tensors_file(archive, "target archive (lit-edit targets export)")
    if not isinstance(saved, dict) or saved.get("version") != ARCHIVE_VERSION or not isinstance(saved.get("entries"), dict):
        raise CheckpointError(f"{archive}: not a target archive of version {ARCHIVE_VERSION} (lit-edit targets export)")
    for relative, content in saved["entries"].items():
        parts = Path(str(relative)).parts
        if not isinstance(relative, str) or Path(relative).is_absolute() or ".." in parts or len(parts) != 4 \
                or not relative.endswith(".pt"):
            raise CheckpointError(f"{archive}: entry {relative!r} is not <model>/<module>/<settings>/<fact>.pt")
        if not _is_target_file(content):
            raise CheckpointError(f"{archive}: entry {relative!r} is not a target file of format {FORMAT_VERSION}")
    written = 0
    for relative, content in saved["entries"].items():
        path = root / relative
        if not path.exists():
            atomic_save(content, path)
            written += 1
    return written
