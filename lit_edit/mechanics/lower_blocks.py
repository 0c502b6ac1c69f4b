"""The blocks below the first edited one compute the same before and after an edit: run them once per input.

A learned editor's training step reads its out-of-scope inputs twice, through the unedited model (the reference of
the locality KL) and through the edited one, and only the blocks from the first edited one up can differ between
the two. The first pass records what the block below the first edited one outputs; the second replays it, and the
blocks below return it without running. With MEND on SmolLM2's blocks 27-29, the second pass runs 3 of 30 blocks.

Replay is exact by construction (the skipped blocks' weights and inputs are the same), and :class:`LowerBlocks`
still checks it once against a full pass before it trusts it for a model: a model whose blocks are not called
one after the other on the previous block's output would fail that check, and then every pass runs in full.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lit_edit.mechanics.model_layout import ModelLayout


class Recording:
    """What :meth:`LowerBlocks.recorded` saw: the output of the last block below the edited ones."""

    output: Any = None

    def part(self, rows: slice, length: int) -> Recording:
        """The recording of some rows of a right-padded batch, cut to ``length`` positions: what a pass over those
        rows alone records (a causal model's real positions do not see the padding after them)."""
        if self.output is None:
            raise RuntimeError("nothing was recorded to take a part of")
        part = Recording()
        part.output = _sliced(self.output, rows, length)
        return part


class LowerBlocks:
    """Record the output of block ``first_edited - 1`` in one pass, and replay it in a later pass on the same inputs."""

    def __init__(self, blocks: nn.ModuleList, first_edited: int) -> None:
        if not 0 < first_edited <= len(blocks):
            raise ValueError(f"first_edited must be in 1..{len(blocks)}, got {first_edited}")
        self.blocks = blocks
        self.first_edited = first_edited
        self.checked: dict[str, bool] = {}  # per kind of pass: whether its replay matched a full pass

    @classmethod
    def below(cls, model: nn.Module, edited_names: list[str]) -> LowerBlocks | None:
        """For a model whose edited parameters all sit in its blocks, above block 0; ``None`` where nothing can be
        skipped (an edited embedding, a block 0, no block list)."""
        try:
            layout = ModelLayout(model)
        except ValueError:
            return None
        prefix = layout.blocks_name + "."
        indices = []
        for name in edited_names:
            if not name.startswith(prefix):
                return None
            indices.append(int(name[len(prefix):].split(".", 1)[0]))
        first = min(indices, default=0)
        return cls(layout.blocks, first) if first > 0 else None

    @property
    def last_skipped(self) -> nn.Module:
        return self.blocks[self.first_edited - 1]

    @contextmanager
    def recorded(self) -> Iterator[Recording]:
        """Inside the block, the last skippable block's output of the (one) pass made is kept in the recording."""
        recording = Recording()

        def keep(_module: nn.Module, _args: tuple, output: Any) -> None:
            recording.output = _detached(output)

        handle = self.last_skipped.register_forward_hook(keep)
        try:
            yield recording
        finally:
            handle.remove()

    @contextmanager
    def replayed(self, recording: Recording) -> Iterator[None]:
        """Inside the block, every block below the edited ones returns the recorded output instead of running."""
        if recording.output is None:
            raise RuntimeError("nothing was recorded to replay: the recorded pass did not reach the edited blocks")
        patched = self.blocks[: self.first_edited]
        saved = [module.__dict__.get("forward") for module in patched]
        for module in patched:
            module.forward = _returning(recording.output)
        try:
            yield
        finally:
            for module, forward in zip(patched, saved, strict=True):
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward

    def second_pass(self, recording: Recording, full_pass: Callable[[], tuple[Tensor, Tensor]],
                    kind: str = "pass") -> tuple[Tensor, Tensor]:
        """``full_pass()`` run with the lower blocks replayed from ``recording``; the first time for each ``kind``,
        also in full, and the two compared (a mismatch turns replay off for that kind, with a warning)."""
        if self.checked.get(kind) is False:
            return full_pass()
        with self.replayed(recording):
            replayed = full_pass()
        if kind not in self.checked:
            with torch.no_grad():
                full = full_pass()
            self.checked[kind] = bool(torch.allclose(replayed[0].detach(), full[0], rtol=1e-4, atol=1e-4))
            if not self.checked[kind]:
                warnings.warn(f"replaying the output of block {self.first_edited - 1} did not reproduce a full "
                              f"{kind} for this model; those passes run in full", stacklevel=2)
                return full_pass()
        return replayed


def _returning(output: Any) -> Callable[..., Any]:
    def forward(*_args: Any, **_kwargs: Any) -> Any:
        return output
    return forward


def _sliced(output: Any, rows: slice, length: int) -> Any:
    if isinstance(output, Tensor):
        return output[rows, :length]
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (output[0][rows, :length], *output[1:])
    raise TypeError(f"cannot cut a recorded block output of type {type(output).__name__} into rows")


def _detached(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, tuple):
        return tuple(_detached(item) for item in output)
    return output
