"""Forward passes that end once the module whose activations are read has run.

ROME's and MEMIT's keys and states, and the key statistics C, are read at early blocks (3–7 of SmolLM2's 30); the
blocks above and the 49,152-way output head would be most of each pass's work, for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn


class _Reached(Exception):
    """Raised by :func:`stopping_after`'s hook: everything that is read has been computed."""


@contextmanager
def stopping_after(module: nn.Module) -> Iterator[None]:
    """Inside the block, a forward pass that reaches the end of ``module`` ends there, and so does the block.

    Hooks registered on ``module`` before entering still see its output; the model's own output is never made.
    """

    def stop(_module: nn.Module, _args: tuple, _output: Tensor) -> None:
        raise _Reached

    handle = module.register_forward_hook(stop)
    try:
        yield
    except _Reached:
        pass
    finally:
        handle.remove()
