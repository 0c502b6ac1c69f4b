"""Forward hooks, each behind a context manager: what a pass reads or changes at a module ends with the block.

One place for what editors and tracing do at a module during a forward pass: read its inputs and outputs
(:func:`captured`, :func:`captured_inputs`, :class:`ActivationCapture`, which also keeps the gradient of the
output), shift its output (:func:`output_shifted`), or end the pass once it has run (:func:`stopping_after`).
Every hook is removed when its block is left, whatever happens; nothing is stored on modules or parameters.

:func:`stopping_after` exists because ROME's and MEMIT's keys and states, and the key statistics C, are read at
early blocks (3–7 of SmolLM2's 30): the blocks above and the 49,152-way output head would be most of each pass's
work, for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


@contextmanager
def removed_after(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """Inside the block the hooks behind ``handles`` act; leaving it, however it is left, removes them."""
    handles = list(handles)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Reached(Exception):
    """Raised by :func:`stopping_after`'s hook: everything that is read has been computed."""


@contextmanager
def stopping_after(module: nn.Module) -> Iterator[None]:
    """Inside the block, a forward pass that reaches the end of ``module`` ends there, and so does the block.

    Hooks registered on ``module`` before entering still see its output; the model's own output is never made.
    """

    def stop(_module: nn.Module, _args: tuple, _output: Tensor) -> None:
        raise _Reached

    try:
        with removed_after([module.register_forward_hook(stop)]):
            yield
    except _Reached:
        pass


@contextmanager
def captured(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """The input and output of ``module`` in the last forward pass inside the block (``"input"``, ``"output"``)."""
    seen: dict[str, Tensor] = {}

    def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
        seen["input"], seen["output"] = args[0], output

    with removed_after([module.register_forward_hook(hook)]):
        yield seen


@contextmanager
def captured_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """The input of each named module in the last forward pass inside the block, by name."""
    seen: dict[str, Tensor] = {}

    def hook_of(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            seen[name] = args[0]
        return hook

    with removed_after([module.register_forward_pre_hook(hook_of(name)) for name, module in modules.items()]):
        yield seen


@contextmanager
def output_shifted(module: nn.Module, rows: Tensor, positions: Tensor, shift: Tensor) -> Iterator[None]:
    """Adds ``shift[i]`` to ``module``'s output at (``rows[i]``, ``positions[i]``) during the block."""

    def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        output = output.clone()
        output[rows, positions] = output[rows, positions] + shift.to(output.dtype)
        return output

    with removed_after([module.register_forward_hook(hook)]):
        yield


class ActivationCapture:
    """Context that records, for watched modules, their input and the gradient of their output (MEND, KE: a linear
    layer's gradient on one token is that input times that gradient)."""

    def __init__(self, model: nn.Module, module_names: list[str]) -> None:
        self.modules = {name: model.get_submodule(name) for name in module_names}
        self.inputs: dict[str, Tensor] = {}
        self.output_grads: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> ActivationCapture:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Any:
        def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            self.inputs[name] = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.output_grads.__setitem__(name, grad.detach()))
        return record

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
