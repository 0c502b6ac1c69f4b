"""One writer per output: an exclusive lock beside what a run writes (a results log, a saved model's directory).

Two ``evaluate.py`` runs with the same ``--model.output`` would append their edits to one log and each report a
mix of both settings; two ``lit-edit edit --save DIR`` would mix their files. Each run holds ``<output>.lock``
(``flock``, exclusive, non-blocking) for as long as it writes; a second is refused with
:class:`~lit_edit.errors.RunInUseError` instead of waiting or mixing. The operating system drops the lock when the
holder ends, however it ends (a crash, SIGKILL), so a dead run never blocks the next one; a lock file left behind
by one is simply taken over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from lit_edit.errors import RunInUseError


def lock_path(target: Path) -> Path:
    """Where the lock of ``target`` lives: ``<target>.lock`` beside it."""
    return target.with_name(target.name + ".lock")


class RunLock:
    """Held while a run writes ``target``; ``hint`` (e.g. which flag chooses another output) ends a refusal."""

    def __init__(self, target: Path | str, hint: str = "") -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.hint = hint
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock now, or raise :class:`RunInUseError` naming the output and the process holding it."""
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(self.path, "a+")  # kept open: the open file holds the lock
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                file.close()
                raise RunInUseError(
                    f"{self.target} is being written by another run (process {holder}, which holds {self.path}); "
                    f"wait for it to finish{', or ' + self.hint if self.hint else ''}") from None
            if self._still_named(file):
                break
            file.close()  # its last holder removed it between our open and our lock: lock the file there now
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def _still_named(self, file: IO[str]) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file while still holding it (no one else can hold that file meanwhile), then unlock."""
        if self._file is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._file.close()
        self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
