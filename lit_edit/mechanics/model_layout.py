"""Where a causal LM keeps its blocks, MLPs and attentions: found by module structure and configurable names.

Locating editors (ROME, MEMIT, Knowledge Neurons) and causal tracing all need "the MLP of block 7" or "the
input of block 7's MLP output projection at token 5". Nothing here looks at a model's name: the block list is
the model's largest ``nn.ModuleList``, and the sub-module names default to the Llama family's, with GPT-2's
(``mlp.c_proj``, ``attn.c_proj``) tried next; both can be set in a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from lit_edit.errors import ConfigurationError
from lit_edit.models import owning_module

#: Tried in order when the config names no MLP output projection / attention module.
MLP_OUT_CANDIDATES = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h", "feed_forward.w2")
ATTENTION_CANDIDATES = ("self_attn", "attn", "attention", "self_attention")
MLP_CANDIDATES = ("mlp", "feed_forward", "ffn")


@dataclass
class LayoutSpec:
    """Names inside one transformer block (``None``: the first candidate that exists)."""

    blocks: str | None = None
    """Dotted path of the block list (``model.layers``, ``transformer.h``); default: the largest ModuleList."""
    mlp: str | None = None
    """The MLP sub-module of a block (``mlp``)."""
    mlp_out: str | None = None
    """The MLP's output projection: its input is ROME's key, its output the MLP's value (``mlp.down_proj``)."""
    attention: str | None = None
    """The attention sub-module of a block (``self_attn``)."""


def _largest_module_list(model: nn.Module) -> str:
    lists = [(len(module), name) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks; set LayoutSpec.blocks")
    return max(lists)[1]


def _first_present(block: nn.Module, configured: str | None, candidates: tuple[str, ...], what: str) -> str:
    names = (configured,) if configured else candidates
    for name in names:
        try:
            block.get_submodule(name)
            return name
        except AttributeError:
            continue
    children = ", ".join(n for n, _ in block.named_modules() if n)
    raise ValueError(f"no {what} named {' or '.join(names)} in {type(block).__name__} (it has: {children}); "
                     f"set LayoutSpec.{what}")


class ModelLayout:
    """Resolved module names of one model: ``layout.mlp_out(7)`` is the module, ``layout.mlp_out_name(7)`` its path."""

    def __init__(self, model: nn.Module, spec: LayoutSpec | None = None) -> None:
        spec = spec or LayoutSpec()
        self.model = model
        self.blocks_name = spec.blocks or _largest_module_list(model)
        self.blocks: nn.ModuleList = model.get_submodule(self.blocks_name)
        first = self.blocks[0]
        self.mlp_suffix = _first_present(first, spec.mlp, MLP_CANDIDATES, "mlp")
        self.mlp_out_suffix = _first_present(first, spec.mlp_out, MLP_OUT_CANDIDATES, "mlp_out")
        self.attention_suffix = _first_present(first, spec.attention, ATTENTION_CANDIDATES, "attention")

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def block_name(self, layer: int) -> str:
        return f"{self.blocks_name}.{layer}"

    def mlp_name(self, layer: int) -> str:
        return f"{self.block_name(layer)}.{self.mlp_suffix}"

    def mlp_out_name(self, layer: int) -> str:
        return f"{self.block_name(layer)}.{self.mlp_out_suffix}"

    def attention_name(self, layer: int) -> str:
        return f"{self.block_name(layer)}.{self.attention_suffix}"

    def mlp_out(self, layer: int) -> nn.Module:
        return self.model.get_submodule(self.mlp_out_name(layer))

    def mlp_out_weight_name(self, layer: int) -> str:
        return f"{self.mlp_out_name(layer)}.weight"

    def embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()


Orientation = Literal["out_in", "in_out"]


def weight_orientation(module: nn.Module) -> Orientation:
    """``nn.Linear`` stores (out, in); GPT-2's ``Conv1D`` stores (in, out). Editors write ``W @ k`` in (out, in).

    The one check of that orientation: transformers' ``Conv1D`` (or a subclass) is known by its class name, so that
    this module needs no transformers import."""
    if isinstance(module, nn.Linear):
        return "out_in"
    if any(cls.__name__ == "Conv1D" for cls in type(module).__mro__):
        return "in_out"
    raise ValueError(f"cannot edit {type(module).__name__}: expected nn.Linear or transformers' Conv1D")


def linear_weight_orientation(model: nn.Module, name: str, owner: str) -> Orientation:
    """:func:`weight_orientation` of parameter ``name``'s module, for an editor (``owner``) that edits linear layers'
    weight matrices only: another parameter (a bias, a norm's weight) is refused naming it."""
    module = owning_module(model, name)
    if name.rpartition(".")[2] == "weight":
        try:
            return weight_orientation(module)
        except ValueError:
            pass
    raise ConfigurationError(f"{owner} edits linear weights only; {name} belongs to {type(module).__name__} "
                             "(model.editable names it)")


def as_out_in(weight: Tensor, orientation: Orientation) -> Tensor:
    """The weight as an (out, in) matrix, whichever way the module stores it (a view, no copy)."""
    return weight if orientation == "out_in" else weight.T
