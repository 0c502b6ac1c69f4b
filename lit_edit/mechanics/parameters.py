"""Parameters an editor reads directly, outside any submodule's forward, made safe for ZeRO stage 3.

ZeRO-3 partitions every parameter and gathers a module's parameters only around that module's own
``forward``. Learned rates and MAML's meta-trained weights are used as tensors (``w - lr * g``), not as
layer weights inside a forward, so they are kept in a :class:`ParameterBank` and read by calling it: DeepSpeed's
hooks then gather them for the call and again for backward. Outside ZeRO-3 the call returns the
parameters themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn


def is_zero3_partitioned(parameter: Tensor) -> bool:
    """True for a parameter that DeepSpeed ZeRO-3 has partitioned (it carries a ``ds_id``)."""
    return hasattr(parameter, "ds_id")


class ParameterBank(nn.Module):
    """A list of parameters whose values are read through ``forward()``."""

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        super().__init__()
        self.values = nn.ParameterList([nn.Parameter(t.detach().clone()) for t in tensors])

    def forward(self) -> list[Tensor]:
        # Under ZeRO-3 a gathered parameter is released (its storage reused) right after this call, so the
        # caller gets copies; the copies stay on the autograd graph, so gradients still reach the parameters.
        return [p.clone() if is_zero3_partitioned(p) else p for p in self.values]

    def __getitem__(self, index: int) -> nn.Parameter:
        return self.values[index]
