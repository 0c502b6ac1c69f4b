"""Files a user hands the project are read as data, never as code.

A ``torch.save`` file is a pickle, and a pickle can call anything while it loads (``os.system`` included). Every
file the project reads back (editor checkpoints, DeepSpeed checkpoint directories, key-statistics and target
caches, edit memories, sequential-editing states) therefore goes through :func:`load_tensors_file`:
``torch.load(weights_only=True)``, which builds only tensors, plain Python values and the few classes named in
:data:`ALLOWED_GLOBALS` (and, for DeepSpeed's own shards, :func:`deepspeed_globals`). A file that names anything
else is refused with :class:`~lit_edit.errors.UnsafeFileError` naming it. DeepSpeed's own loader asks torch for a
full unpickling; :func:`deepspeed_reads_weights_only` makes every ``torch.load`` it makes go through
:func:`load_tensors_file` instead, so a DeepSpeed checkpoint directory is read as data too, and
:class:`SafeCheckpointIO` does the same for Lightning's resume of a ``.ckpt`` file.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_edit.errors import CheckpointError, UnsafeFileError, UserInputError
from lit_edit.models import ModelSpec

#: Classes besides tensors and plain values that the project's own files hold: ``save_hyperparameters`` puts an
#: editor's :class:`ModelSpec` in its Lightning checkpoint when the editor was built in Python.
ALLOWED_GLOBALS: tuple[Any, ...] = (ModelSpec,)

#: Suffixes of the files in a DeepSpeed checkpoint directory that DeepSpeed unpickles (every other file is also
#: checked when it starts like a pickle or a ``torch.save`` zip archive).
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"})

#: Files DeepSpeed writes into its checkpoint directory that are text: the tag files and its conversion scripts.
DEEPSPEED_TAG_FILES = ("latest", "latest_universal")


#: torch's own loader, kept before :func:`deepspeed_reads_weights_only` stands in for it.
_TORCH_LOAD = torch.load


def deepspeed_globals() -> tuple[Any, ...]:
    """The DeepSpeed classes its optimizer shards hold (found by writing ZeRO-2/3 checkpoints, fp32 and bf16)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address


def load_tensors_file(path: str | Path, what: str = "file", *, allow: Iterable[Any] = (),
                      unreadable: type[UserInputError] = CheckpointError, map_location: Any = "cpu",
                      mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`ALLOWED_GLOBALS` (and ``allow``) allowed.

    Raises :class:`UnsafeFileError` for a file that names a global outside them (it could run code), and
    ``unreadable`` (an error kind naming the file) for a missing, truncated or foreign one. ``what`` says in the
    message what the file should have been.
    """
    path = Path(path)
    if not path.is_file():
        raise unreadable(f"{path}: no {what} there")
    try:
        with torch.serialization.safe_globals([*ALLOWED_GLOBALS, *allow]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a raw pickle: refused below
            return _TORCH_LOAD(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        names = _refused_globals(str(error))
        if names:
            raise UnsafeFileError(
                f"{path}: refused to load this {what}: it names {', '.join(names)}, which is not a tensor or plain "
                "value, and loading it could run code. Use only files this project wrote (or recreate this one); "
                "it was not loaded") from None
        raise unreadable(f"{path}: not a readable {what} (not a torch.save file of tensors and plain values: "
                         f"{_reason(str(error))})") from None
    except Exception as error:  # truncated zip, wrong magic number, ...
        raise unreadable(f"{path}: not a readable {what} ({type(error).__name__}: {_reason(str(error))})") from None


def _refused_globals(message: str) -> list[str]:
    """The globals torch's weights-only unpickler refused, from its message (empty: refused for another reason)."""
    return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", message)))


def _reason(message: str) -> str:
    """torch's own reason, without its advice to turn the weights-only check off (which would run the file)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("Weights only load failed", "Please file an issue",
                                                           "Check the documentation", "WeightsUnpickler error"))]
    return " ".join(kept or lines[-1:])[:300]


def check_deepspeed_directory(directory: str | Path) -> None:
    """Refuse, before DeepSpeed reads ``directory``, one that is not a checkpoint directory or whose ``latest`` tag names
    a folder outside it (:class:`CheckpointError`); its files are then read by :func:`deepspeed_reads_weights_only`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no DeepSpeed checkpoint directory there")
    for name in DEEPSPEED_TAG_FILES:
        tag_file = directory / name
        if tag_file.is_file():
            tag = tag_file.read_text(errors="replace").strip()
            if not tag or Path(tag).name != tag or tag in (".", "..") or not (directory / tag).is_dir():
                raise CheckpointError(f"{tag_file}: names the checkpoint tag {tag!r}, which is not a folder directly "
                                      f"inside {directory}; not a DeepSpeed checkpoint this project wrote")
    if not any(path.suffix in PICKLE_SUFFIXES for path in _files_under(directory)):
        raise CheckpointError(f"{directory}: holds no DeepSpeed checkpoint files (*.pt)")


@contextmanager
def deepspeed_reads_weights_only() -> Iterator[None]:
    """Within it, every ``torch.load`` (DeepSpeed's loader asks torch for a full unpickling) is a
    :func:`load_tensors_file` with DeepSpeed's own classes allowed: nothing a shard names outside them is built, and a
    shard that names something else is refused with :class:`UnsafeFileError` naming it."""
    allow = deepspeed_globals()

    def load(f: Any, map_location: Any = None, *args: Any, weights_only: bool | None = None, mmap: bool | None = None,
             **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)):
            return load_tensors_file(f, "DeepSpeed checkpoint file", allow=allow, map_location=map_location,
                                     mmap=bool(mmap))
        with torch.serialization.safe_globals([*ALLOWED_GLOBALS, *allow]):  # an open file: no path to name
            return _TORCH_LOAD(f, map_location, *args, weights_only=True, mmap=mmap, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = _TORCH_LOAD


def _files_under(directory: Path) -> Iterator[Path]:
    """Every file below ``directory``, following links to folders (DeepSpeed's loader does) but never twice."""
    seen: set[str] = set()
    for root, folders, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders.sort()
        yield from (Path(root) / name for name in sorted(files))



class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but a resumed ``.ckpt`` is read by :func:`load_tensors_file` (``trainer.fit(
    ckpt_path=...)`` otherwise leaves ``weights_only`` to torch's default, which an environment variable flips)."""

    def load_checkpoint(self, path: Any, map_location: Callable | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):  # a remote file (fsspec): Lightning's reader, told weights_only
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not Path(path).exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_tensors_file(path, "training checkpoint (ckpt_path)", map_location=map_location)


def use_safe_checkpoint_io(strategy: Any) -> None:
    """Make ``strategy`` (a Lightning strategy) resume through :class:`SafeCheckpointIO` when it would use Lightning's
    plain :class:`TorchCheckpointIO` (a checkpoint IO the user configured is left alone)."""
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()
