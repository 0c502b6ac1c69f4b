"""Every editor by a short name (``"rome"`` -> :class:`lit_edit.editors.ROME`), for the Python API, the CLI and the
contract tests.

Entries name their class by import path and are imported only when asked for, so that ``lit-edit --help`` needs no
torch. A method outside this package joins with :func:`register_editor`; a name is taken once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from lit_edit.errors import ConfigurationError


@dataclass(frozen=True)
class RegisteredEditor:
    """A short name's class and the settings it stands for (``ft_kl`` is FT with a KL term)."""

    name: str
    class_path: str
    defaults: dict[str, Any] = field(default_factory=dict)
    #: The shipped trained editor (``pretrained:NAME``) used when none is given and the base model is the one it was
    #: trained for; None for editors that need no training.
    pretrained: str | None = None
    #: The editor learns its weights in ``python train.py`` before it can edit.
    trained: bool = False
    summary: str = ""

    def load_class(self) -> type:
        module, _, name = self.class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, RegisteredEditor] = {}


def register_editor(name: str, class_path: str, *, defaults: dict[str, Any] | None = None,
                    pretrained: str | None = None, trained: bool = False, summary: str = "") -> RegisteredEditor:
    """Add ``name`` -> ``class_path``; refused if ``name`` is taken by another class or settings."""
    entry = RegisteredEditor(name, class_path, dict(defaults or {}), pretrained, trained, summary)
    if name in _REGISTRY and _REGISTRY[name] != entry:
        raise ConfigurationError(f"an editor named {name!r} is already registered ({_REGISTRY[name].class_path})")
    _REGISTRY[name] = entry
    return entry


def registered(name: str) -> RegisteredEditor:
    """The entry of ``name``; an unknown name is a user's mistake naming every known one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(f"no editor named {name!r}; the editors are: {', '.join(editor_names())}") from None


def editor_names() -> list[str]:
    return list(_REGISTRY)


def editor_class(name: str) -> type:
    """The class of ``name`` (imported now)."""
    return registered(name).load_class()


register_editor("noedit", "lit_edit.editors.NoEdit", summary="the unedited model, for comparison")
register_editor("ft", "lit_edit.editors.FineTune", summary="fine-tuning of the editable weights on the edit")
register_editor("ft_kl", "lit_edit.editors.FineTune", defaults={"kl_weight": 1.0},
                summary="fine-tuning with a KL term keeping out-of-scope outputs")
register_editor("cache", "lit_edit.editors.EditCache",
                summary="an edit cache: answers within epsilon of a stored edit's hidden state")
register_editor("mend", "lit_edit.editors.MEND", defaults={"rank": 64, "n_blocks": 2},
                pretrained="pretrained:mend-smollm2", trained=True,
                summary="MEND: a trained network maps the edit's rank-1 gradient to a weight update")
register_editor("enn", "lit_edit.editors.ENN", trained=True,
                summary="ENN: meta-learned weights and inner learning rates for a few fine-tuning steps")
register_editor("ke", "lit_edit.editors.KE", trained=True,
                summary="KnowledgeEditor: a hypernetwork conditioned on the edit predicts the weight update")
register_editor("serac", "lit_edit.editors.SERAC", trained=True,
                summary="SERAC: edit memory, scope classifier and counterfactual model; weights untouched")
register_editor("kn", "lit_edit.editors.KnowledgeNeurons",
                summary="Knowledge Neurons: attribution finds the MLP neurons of a fact, which are rewritten")
register_editor("rome", "lit_edit.editors.ROME",
                defaults={"layer": 5, "statistics": {"samples": 1000, "tokens": 64},
                          "prefixes": {"lengths": [5, 10], "per_length": 5}},
                summary="ROME: a rank-1 key-value update of one MLP at the subject's last token")
register_editor("memit", "lit_edit.editors.MEMIT",
                defaults={"layers": [3, 4, 5, 6, 7], "prefixes": {"lengths": [10], "per_length": 5}},
                summary="MEMIT: ROME's update spread over several MLPs, for many edits at once")
