"""Target values (ROME's v*, MEMIT's z*) kept on disk, one file per fact, and reused.

The search for a fact's target is most of what a locating edit costs, and on the unedited model its result depends
only on the model, the searched module, the search settings, the context prefixes and the fact. So an evaluation
that writes facts one at a time leaves behind the targets a later edit of 1,000 facts at once needs, and an edit of
thousands of facts that is interrupted resumes at the facts it had not reached (MEMIT's released code keeps z* per
case for the same reason). Files live under
``checkpoints/targets/<model hash>/<module>/<settings hash>/<fact hash>.pt``; a file from another format or an
unreadable one is recomputed with a warning, never misread.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel

from lit_edit.editors.key_value import FactRequest, TargetOptimisation
from lit_edit.key_statistics import atomic_save, model_fingerprint
from lit_edit.models import checkpoints_dir

#: Part of every settings hash: a change to how targets are searched for must bump it, so old files are not reused.
FORMAT_VERSION = 1


def _digest(value: object, length: int) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


class TargetCache:
    """The targets of one module's search under fixed settings; counts what it found and what it did not."""

    def __init__(self, model: PreTrainedModel, module_name: str, settings: TargetOptimisation,
                 prefixes: Sequence[str], max_length: int, root: Path | None = None) -> None:
        tag = _digest({"version": FORMAT_VERSION, "settings": asdict(settings), "prefixes": list(prefixes),
                       "max_length": max_length}, 12)
        self.directory = (root or checkpoints_dir() / "targets") / model_fingerprint(model) / module_name / tag
        self.hits = 0
        self.misses = 0

    def path(self, request: FactRequest) -> Path:
        return self.directory / f"{_digest(asdict(request), 16)}.pt"

    def load(self, request: FactRequest) -> Tensor | None:
        """The stored target of ``request``, or ``None`` (counted as a miss) when there is none to trust."""
        path = self.path(request)
        saved = None
        if path.exists():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # a truncated or foreign file: say so, then search again
                warnings.warn(f"target cache {path} is unreadable ({error}); searching again", stacklevel=2)
            if saved is not None and (saved.get("version") != FORMAT_VERSION or saved.get("request") != asdict(request)):
                warnings.warn(f"target cache {path} holds another fact or format; searching again", stacklevel=2)
                saved = None
        if saved is None:
            self.misses += 1
            return None
        self.hits += 1
        return saved["value"]

    def save(self, request: FactRequest, value: Tensor) -> None:
        atomic_save({"version": FORMAT_VERSION, "request": asdict(request), "value": value.detach().float().cpu()},
                    self.path(request))
