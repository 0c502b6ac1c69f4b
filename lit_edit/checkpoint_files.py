"""Reading the checkpoints ``train.py`` writes: a Lightning ``.ckpt`` file or a DeepSpeed checkpoint directory.

Nothing in them runs: a ``.ckpt`` is read with ``weights_only=True``, and so is every file DeepSpeed's loader reads
of a DeepSpeed directory (:mod:`lit_edit.safe_files`). Shipped editors (safetensors + manifest) are read by
:mod:`lit_edit.pretrained`, which uses this module for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from lit_edit.errors import CheckpointError
from lit_edit.safe_files import (
    check_deepspeed_directory,
    deepspeed_globals,
    deepspeed_reads_weights_only,
    load_tensors_file,
)

#: The key under which an editor's training checkpoint records what it was made for (:meth:`Editor.made_for`).
MADE_FOR_KEY = "lit_edit_made_for"


def read_training_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(weights, what the checkpoint records it was made for, or ``None`` for one written before that was recorded)
    of a ``.ckpt`` file or a DeepSpeed directory (its ZeRO shards merged into full float32 tensors); otherwise
    :class:`~lit_edit.errors.UnsafeFileError` or :class:`~lit_edit.errors.CheckpointError` names the file."""
    if not path.is_dir():
        saved = load_tensors_file(path, "editor checkpoint (a train.py .ckpt)")
        if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
            raise CheckpointError(f"{path}: not a training checkpoint (it has no state_dict)")
        return saved["state_dict"], saved.get(MADE_FOR_KEY)
    check_deepspeed_directory(path)
    shards = sorted((path / "checkpoint").glob("*model_states.pt"))
    if not shards:
        raise CheckpointError(f"{path}: not a DeepSpeed checkpoint of train.py (no checkpoint/*model_states.pt)")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    client_state = load_tensors_file(shards[0], "DeepSpeed checkpoint file", allow=deepspeed_globals(), mmap=True)
    with deepspeed_reads_weights_only():
        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag="checkpoint")
    made_for = client_state.get(MADE_FOR_KEY) if isinstance(client_state, dict) else None
    return {key.removeprefix("_forward_module."): value for key, value in state.items()}, made_for
