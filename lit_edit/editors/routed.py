"""Memory-based edits: each query is answered either by the untouched base model or by the editor.

SERAC and the edit cache never change a weight. Their edit is a memory plus a router that, per query row,
names the stored edit it falls in the scope of (or none); :class:`RoutedModel` then assembles logits aligned
with the query's labels from the base model's rows and the editor's rows, so the shared scoring in
:meth:`lit_edit.editors.base.Editor.score` needs nothing special. A :class:`RoutedModel` keeps the
:class:`~lit_edit.mechanics.edit_result.EditResult` contract as a weight edit does: edits made on top of it join its
memory (``then``), and it is saved as its memory's file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput

from lit_edit.data.batch import IGNORE_INDEX, TokenizedExamples
from lit_edit.editors.base import Editor
from lit_edit.mechanics.edit_result import EditResult
from lit_edit.mechanics.edited_model import EditFailedError, aligned_labels, aligned_logits
from lit_edit.mechanics.memory import EditMemory

#: Edit index of a row that no stored edit covers: the base model answers it.
NO_EDIT = -1


@dataclass(frozen=True)
class Routing:
    """Per query row, the index of the stored edit that answers it (:data:`NO_EDIT` for the base model).

    ``base_logits``: aligned logits of the base model for every row, when routing had to compute them anyway
    (the cache routes by the base model's own hidden states); they are then reused, not recomputed.
    """

    edits: Tensor
    base_logits: Tensor | None = None


class Router(ABC):
    """Decides which stored edit covers each query (of those in its :attr:`memory`), and answers the covered ones."""

    memory: EditMemory

    @abstractmethod
    def over(self, memory: EditMemory) -> Router:
        """The same routing over another memory (how edits made on top of a memory edit join it)."""

    @abstractmethod
    def route(self, examples: TokenizedExamples) -> Routing:
        """The stored edit (or :data:`NO_EDIT`) for each row of ``examples``."""

    @abstractmethod
    def answer(self, examples: TokenizedExamples, edits: Tensor, base_logits: Tensor | None) -> Tensor:
        """Aligned causal logits ``[rows, seq - 1, vocab]`` for rows covered by ``edits`` (one index per row);
        ``base_logits`` are the base model's logits for those rows when routing computed them."""

    @property
    def empty(self) -> bool:
        """True when no edit is stored: every query goes to the base model."""
        return False


def prompt_positions(examples: TokenizedExamples, kind: str = "causal") -> Tensor:
    """BoolTensor ``[batch, seq]``: the prompt's tokens (unlabelled and not padding) of causal examples; every real
    token of a classifier's (its input is all prompt, its label a class)."""
    if kind == "classifier":
        return examples.attention_mask == 1
    return (examples.labels == IGNORE_INDEX) & (examples.attention_mask == 1)


def prompt_texts(examples: TokenizedExamples, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Each row's prompt as text (a query's scope is decided on its prompt, never on the answer it is scored on)."""
    mask = prompt_positions(examples).cpu()
    ids = examples.input_ids.cpu()
    return [tokenizer.decode(row[keep], skip_special_tokens=True).strip() for row, keep in zip(ids, mask, strict=True)]


class RoutedModel(EditResult):
    """The base model plus a memory of edits: rows the router assigns to an edit are answered by the editor.

    Causal LMs and classifiers (whose one aligned position is the class). The base model's weights are never
    written.
    """

    file_suffix: ClassVar[str] = ".memory.pt"

    def __init__(self, base: PreTrainedModel, kind: str, router: Router) -> None:
        if kind not in ("causal", "classifier"):
            raise ValueError(f"memory-based editors answer causal LMs and classifiers only, got kind {kind!r}")
        self.base, self.kind, self.router = base, kind, router

    @property
    def params(self) -> dict[str, Tensor]:
        return {}  # no weight is replaced: the memory answers instead

    @property
    def changes_outputs(self) -> bool:
        return not self.router.empty

    def logits(self, examples: TokenizedExamples, labelled_only: bool = False) -> tuple[Tensor, Tensor]:
        logits, labels = self._routed_logits(examples)
        if labelled_only:  # as a weight edit's: only the positions where some row has a label
            keep = (labels != IGNORE_INDEX).any(0).nonzero().squeeze(1)
            return logits[:, keep], labels[:, keep]
        return logits, labels

    def _routed_logits(self, examples: TokenizedExamples) -> tuple[Tensor, Tensor]:
        labels = aligned_labels(examples, self.kind)
        if self.router.empty:
            return aligned_logits(self.base, examples, self.kind)
        routing = self.router.route(examples)
        edits = routing.edits.to(examples.input_ids.device)
        covered = edits != NO_EDIT
        if not covered.any():
            return (routing.base_logits if routing.base_logits is not None
                    else aligned_logits(self.base, examples, self.kind)[0]), labels
        rows, base_rows = covered.nonzero().squeeze(1), (~covered).nonzero().squeeze(1)
        base_logits = routing.base_logits
        answered = self.router.answer(examples.select(rows), edits[rows],
                                      None if base_logits is None else base_logits[rows])
        if base_logits is None:
            logits = answered.new_empty((len(examples), labels.shape[1], answered.shape[-1]))
            if base_rows.numel():
                logits[base_rows] = aligned_logits(self.base, examples.select(base_rows), self.kind)[0].to(logits.dtype)
        else:
            logits = base_logits.clone()
        logits[rows] = answered.to(logits.dtype)
        return logits, labels

    @contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """A module whose ``generate`` decodes greedily through the routed logits (a memory has no weights to
        write in), and that a classifier's caller calls for its class logits; the base model itself is untouched."""
        yield RoutedGenerator(self)

    def then(self, later: EditResult) -> RoutedModel:
        """A new memory: this edit's stored edits, then ``later``'s (neither edit changes)."""
        if not isinstance(later, RoutedModel) or type(later.router) is not type(self.router) \
                or later.base is not self.base:
            raise TypeError(f"a memory edit composes with a memory edit of the same editor and base model, not with "
                            f"{type(later).__name__}: make each edit with the same editor (edit(batch, on=...))")
        return RoutedModel(self.base, self.kind, later.router.over(self.router.memory.joined(later.router.memory)))

    def detached(self) -> RoutedModel:
        return self  # a memory's keys hold no graph

    def save(self, path: str | Path) -> Path:
        """The memory's file (:meth:`EditMemory.save`); the editor's :meth:`MemoryEditor.load_edit` reads it."""
        return self.router.memory.save(path)

    def materialize(self) -> PreTrainedModel:
        raise EditFailedError("a memory-based edit (SERAC, cache) lives in its memory, not in the weights: there is "
                              "no edited Hugging Face checkpoint to save; save the edit's memory instead "
                              "(edited.save(path))")


class MemoryEditor(Editor):
    """An editor whose edits are a memory the base model is routed through (SERAC, the cache)."""

    def routed(self, memory: EditMemory) -> RoutedModel:
        """The base model answering through ``memory`` (any size: e.g. one loaded with :meth:`EditMemory.load`)."""
        raise NotImplementedError

    def load_edit(self, path: str | Path) -> RoutedModel:
        """An edit saved with :meth:`RoutedModel.save`, routed by this editor."""
        return self.routed(EditMemory.load(path, self.device))

    def made_for(self) -> dict[str, Any]:
        """As any editor's, but for no editable weights: a memory editor's edits change none."""
        return {**super().made_for(), "editable": None}


class RoutedGenerator(nn.Module):
    """Greedy decoding through :meth:`RoutedModel.logits`: enough for ``generation.greedy_completion``."""

    def __init__(self, routed: RoutedModel) -> None:
        super().__init__()
        self.base = routed.base
        self.__dict__["routed"] = routed  # not a submodule: it is no module

    @property
    def config(self) -> Any:
        return self.base.config

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: object) -> SequenceClassifierOutput:
        """A classifier's class logits ``[batch, classes]`` through the routed model (the memory's class where a
        stored edit covers the input)."""
        routed = self.__dict__["routed"]
        if routed.kind != "classifier":
            raise TypeError("a routed causal LM is called through generate(), not forward()")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        placeholder = torch.zeros((len(input_ids), 1), dtype=torch.long, device=input_ids.device)
        logits, _ = routed.logits(TokenizedExamples(input_ids, mask, placeholder))
        return SequenceClassifierOutput(logits=logits[:, 0])

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, max_new_tokens: int = 12,
                 pad_token_id: int | None = None, **_: object) -> Tensor:
        """Append up to ``max_new_tokens`` greedy tokens to each (unpadded) prompt row; stops at EOS."""
        eos = self.base.config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        filler = pad_token_id if pad_token_id is not None else next(iter(eos_ids), 0)
        outputs = []
        for prompt in input_ids:
            generated: list[int] = []
            for _ in range(max_new_tokens):
                # The token to predict sits in a labelled slot, so the router sees only the prompt as the query.
                ids = torch.cat([prompt, prompt.new_tensor([*generated, filler])])
                labels = torch.cat([torch.full_like(prompt, IGNORE_INDEX), prompt.new_tensor([*generated, filler])])
                step = TokenizedExamples(ids[None], torch.ones_like(ids)[None], labels[None])
                logits, _ = self.__dict__["routed"].logits(step)
                token = int(logits[0, -1].argmax())
                generated.append(token)
                if token in eos_ids:
                    break
            outputs.append(torch.cat([prompt, prompt.new_tensor(generated)]))
        width = max(len(row) for row in outputs)
        return torch.stack([torch.cat([row, row.new_full((width - len(row),), filler)]) for row in outputs])
