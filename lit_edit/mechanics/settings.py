"""Range checks of editors' settings, made when an editor is built (before its model is loaded, where they can be).

A setting out of its range (a negative learning rate, zero steps, a probability above one) would otherwise train in
the wrong direction, make no-op "edits" that are scored as real ones, or fail much later with a raw torch error. Each
check raises :class:`~lit_edit.errors.ConfigurationError` naming the class and the setting as configured
(``FineTune.steps must be >= 1, got 0``). Comparisons are written so that NaN fails every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lit_edit.errors import ConfigurationError


def _refuse(owner: str, name: str, rule: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{owner}.{name} must be {rule}, got {value!r} (init_args.{name} of the {owner} "
                              "config)")


def _number(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{owner}.{name} must be a number, got {value!r} (init_args.{name} of the {owner} "
                                 "config)")
    return float(value)


def require_positive(owner: str, name: str, value: float) -> None:
    """``0 < value < inf``: learning rates, scales, weights that must act."""
    if not 0 < _number(owner, name, value) < math.inf:
        raise _refuse(owner, name, "a finite number > 0", value)


def require_non_negative(owner: str, name: str, value: float) -> None:
    """``0 <= value < inf``: loss weights, penalties and rates that may be switched off."""
    if not 0 <= _number(owner, name, value) < math.inf:
        raise _refuse(owner, name, "a finite number >= 0", value)


def require_number_at_least(owner: str, name: str, value: float, minimum: float) -> None:
    """``minimum <= value``, infinity allowed: bounds such as a largest condition number."""
    if not _number(owner, name, value) >= minimum:
        raise _refuse(owner, name, f">= {minimum:g}", value)


def require_at_least(owner: str, name: str, value: int, minimum: int) -> None:
    """An integer count ``>= minimum``: steps, ranks, sizes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(owner, name, f"an integer >= {minimum}", value)
    if not value >= minimum:
        raise _refuse(owner, name, f">= {minimum}", value)


def require_between(owner: str, name: str, value: float, low: float, high: float, *, low_open: bool = False,
                    high_open: bool = False) -> None:
    """``low <= value <= high``, either end open: probabilities and fractions."""
    number = _number(owner, name, value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _refuse(owner, name, f"in {interval}", value)


def require_layers(owner: str, name: str, layers: Sequence[int], count: int | None = None) -> None:
    """A non-empty list of distinct block indices, each in ``[0, count)`` (only ``>= 0`` while ``count`` is unknown,
    i.e. before the model is loaded)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise _refuse(owner, name, "a non-empty list of layer indices", layers)
    if len(set(layers)) != len(layers):
        raise _refuse(owner, name, "a list of distinct layer indices", list(layers))
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (count is not None and layer >= count):
            rule = f"in [0, {count}): the model has {count} blocks" if count is not None else "an integer >= 0"
            raise ConfigurationError(f"{owner}.{name} names layer {layer!r}, but a layer index must be {rule} "
                                     f"(init_args.{name} of the {owner} config)")
