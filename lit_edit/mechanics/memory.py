"""An edit memory: stored edit descriptors with one key vector each, searched in one batched operation.

Keys live in a single ``[edits, dim]`` tensor: the nearest stored edit of every query comes from one matrix
product (cosine similarity) or one ``cdist`` (L2 distance), never from a Python loop over edits. Adding and
removing edits are tensor operations that build the new state completely before swapping it in, so a failed
add leaves the memory exactly as it was. Files are written to a temporary name and renamed over the old one
(:mod:`lit_edit.mechanics.atomic_files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lit_edit.errors import UserInputError
from lit_edit.mechanics.atomic_files import save_file_atomically
from lit_edit.safe_files import load_tensors_file

Metric = Literal["cosine", "l2"]
FORMAT_VERSION = 1


class MemoryFileError(UserInputError, ValueError):
    """An edit memory file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class EditDescriptor:
    """What one stored edit says: ``prompt`` should now complete with ``target``."""

    case_id: str
    prompt: str
    target: str


class EditMemory:
    """Edit descriptors and their keys; ``nearest`` answers scope queries against all of them at once."""

    def __init__(self, dim: int, metric: Metric = "cosine", device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if metric not in ("cosine", "l2"):
            raise ValueError(f"EditMemory metric must be 'cosine' or 'l2', got {metric!r}")
        self.metric: Metric = metric
        self.keys = torch.empty((0, dim), device=device, dtype=dtype)
        self.descriptors: list[EditDescriptor] = []

    def __len__(self) -> int:
        return len(self.descriptors)

    @property
    def dim(self) -> int:
        return int(self.keys.shape[1])

    def to(self, device: torch.device | str) -> EditMemory:
        self.keys = self.keys.to(device)
        return self

    def add(self, descriptors: Sequence[EditDescriptor], keys: Tensor) -> None:
        """Store edits with their keys (cosine keys are normalised here). All or nothing."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be [edits, {self.dim}], got {tuple(keys.shape)}")
        if keys.shape[0] != len(descriptors):
            raise ValueError(f"{len(descriptors)} descriptors but {keys.shape[0]} keys")
        if not torch.isfinite(keys).all():
            raise ValueError("edit keys must be finite; nothing was added")
        keys = keys.detach().to(self.keys.device, self.keys.dtype)
        if self.metric == "cosine":
            keys = torch.nn.functional.normalize(keys, dim=-1)
        new_keys = torch.cat([self.keys, keys])  # built fully before anything is replaced
        self.keys, self.descriptors = new_keys, [*self.descriptors, *descriptors]

    def joined(self, later: EditMemory) -> EditMemory:
        """A new memory: this one's edits, then ``later``'s (neither memory changes). How edits made on top of a
        memory edit compose with it."""
        if later.metric != self.metric or later.dim != self.dim:
            raise ValueError(f"cannot join a {later.metric} memory of {later.dim}-dim keys to a {self.metric} memory of "
                             f"{self.dim}-dim keys: they were made by different editors")
        memory = EditMemory(self.dim, self.metric, self.keys.device, self.keys.dtype)
        memory.keys = torch.cat([self.keys, later.keys.to(self.keys.device, self.keys.dtype)])
        memory.descriptors = [*self.descriptors, *later.descriptors]
        return memory

    def remove(self, case_id: str) -> EditDescriptor:
        """Forget every stored edit with ``case_id``; returns the (last) removed descriptor."""
        drop = [i for i, d in enumerate(self.descriptors) if d.case_id == case_id]
        if not drop:
            raise KeyError(f"no stored edit has case_id {case_id!r}")
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[drop] = False
        removed = self.descriptors[drop[-1]]
        self.keys = self.keys[keep.to(self.keys.device)]
        self.descriptors = [d for d, k in zip(self.descriptors, keep.tolist(), strict=True) if k]
        return removed

    def nearest(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        """For each query key: (score, index) of its nearest stored edit, by one batched operation.

        Scores are cosine similarities (higher is nearer) or L2 distances (lower is nearer). With nothing
        stored, indices are -1 and scores -inf (cosine) or +inf (L2): nothing is near.
        """
        queries = queries.to(self.keys.device, self.keys.dtype)
        if len(self) == 0:
            fill = float("-inf") if self.metric == "cosine" else float("inf")
            return (torch.full((queries.shape[0],), fill, device=queries.device),
                    torch.full((queries.shape[0],), -1, dtype=torch.long, device=queries.device))
        if self.metric == "cosine":
            return (torch.nn.functional.normalize(queries, dim=-1) @ self.keys.T).max(dim=1)
        # Exact differences, not the faster |q|² + |k|² - 2q·k: an edit's own input must be at distance 0, not 0.02.
        return torch.cdist(queries, self.keys, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash mid-write leaves the previous file intact."""
        state = {"format": FORMAT_VERSION, "metric": self.metric, "keys": self.keys.cpu(),
                 "descriptors": [asdict(d) for d in self.descriptors]}
        return save_file_atomically(path, lambda staged: torch.save(state, staged))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> EditMemory:
        """Read a file written by :meth:`save`; a missing, corrupt or inconsistent one raises
        :class:`MemoryFileError` naming it, one that would run code :class:`~lit_edit.errors.UnsafeFileError`."""
        path = Path(path)
        state = load_tensors_file(path, "edit memory file", unreadable=MemoryFileError)
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
            raise MemoryFileError(f"{path}: not an edit memory file of format {FORMAT_VERSION}")
        keys, rows = state.get("keys"), state.get("descriptors")
        if not isinstance(keys, Tensor) or keys.ndim != 2 or not isinstance(rows, list) or len(rows) != keys.shape[0]:
            raise MemoryFileError(f"{path}: keys and descriptors disagree (a damaged edit memory file)")
        try:
            descriptors = [EditDescriptor(**row) for row in rows]
        except TypeError as error:
            raise MemoryFileError(f"{path}: a malformed edit descriptor ({error})") from None
        memory = cls(int(keys.shape[1]), state["metric"], device, keys.dtype)
        memory.keys, memory.descriptors = keys.to(device), descriptors
        return memory
