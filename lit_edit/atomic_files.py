"""Directories written whole or not at all: a crash or a failed write never leaves a reader half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


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
