"""JSON-ready copies of settings: what results records, fingerprints and manifests store of hyperparameters."""

from __future__ import annotations

import dataclasses
from typing import Any


def json_ready(value: Any) -> Any:
    """A copy of ``value`` with dataclasses as dicts and anything that is not a plain value (a path) as a string."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: json_ready(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
