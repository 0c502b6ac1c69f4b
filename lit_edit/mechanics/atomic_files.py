"""Files and directories written whole or not at all: a crash or a failed write never leaves a reader half of one.

Every writer of the package that replaces a file a reader may hold (saved edits, edit memories, key statistics,
searched targets, evaluation logs and states) goes through :func:`save_file_atomically`; shipped editors and saved
models, which are directories, through :func:`save_directory_atomically`. Nothing here imports torch:
``lit-edit edit --help`` imports this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def save_file_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write`` the file into a temporary name beside ``path``, flush it to disk, then rename it over ``path``:
    readers see the old file (or none) or the new one, and a failed ``write`` leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    staged = Path(temporary)
    try:
        write(staged)
        with open(staged, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return path


def save_directory_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` into a sibling directory, then rename it to ``target`` (an old ``target`` is renamed aside first and
    removed last): ``target`` is the old model or the new one, never a mix. Call with ``target``'s lock held."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.saving-{os.getpid()}")
    old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    for leftover in (staged, old):  # of an earlier run that died here (the lock is ours now)
        shutil.rmtree(leftover, ignore_errors=True)
    staged.mkdir()
    try:
        write(staged)
        if target.exists():
            target.rename(old)
        staged.rename(target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
