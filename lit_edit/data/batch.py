"""Tokenized examples and the typed edit batch: what every editor's ``edit`` and metrics consume.

Loss and metrics only see target tokens: prompt and padding positions carry the label -100.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt
from lit_edit.errors import ConfigurationError
from lit_edit.evaluation.metrics import IGNORE_INDEX


@dataclass(frozen=True)
class TokenizedExamples:
    """Prompts with their targets, padded on the right.

    Causal LMs: ``input_ids`` = prompt + target, ``labels`` aligned with ``input_ids``.
    Seq2seq LMs: ``input_ids`` = prompt, ``labels`` = target (the decoder's input is derived from it).
    Classifiers: ``input_ids`` = prompt, ``labels`` = ``[batch, 1]``, the target's class index.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> TokenizedExamples:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: Tensor) -> TokenizedExamples:
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


@dataclass(frozen=True)
class EditBatch:
    """n edits with the inputs that measure them.

    ``edit``: the edit descriptors (prompt -> new target); ``in_scope``: each edit's prompt and
    paraphrases (-> new target), ``in_scope_is_paraphrase`` marks the paraphrase rows;
    ``out_of_scope``: prompts about other facts with their answers, none about a subject edited in
    this batch; ``out_of_scope_kind`` says of each row whether it is unrelated (:data:`UNRELATED`) or a
    look-alike with the same subject (:data:`SAME_SUBJECT`) or the same relation (:data:`SAME_RELATION`);
    ``portability``: the records' portability questions (-> the answer after the edit), None when they have none.
    """

    edit: TokenizedExamples
    in_scope: TokenizedExamples
    in_scope_is_paraphrase: Tensor
    out_of_scope: TokenizedExamples
    records: tuple[EditRecord, ...] = ()
    out_of_scope_kind: Tensor | None = None
    portability: TokenizedExamples | None = None

    def __len__(self) -> int:
        return len(self.edit)

    def to(self, device: torch.device | str) -> EditBatch:
        return replace(
            self,
            edit=self.edit.to(device),
            in_scope=self.in_scope.to(device),
            in_scope_is_paraphrase=self.in_scope_is_paraphrase.to(device),
            out_of_scope=self.out_of_scope.to(device),
            out_of_scope_kind=None if self.out_of_scope_kind is None else self.out_of_scope_kind.to(device),
            portability=None if self.portability is None else self.portability.to(device),
        )


def context_length(config: Any) -> int | None:
    """The positions a model can attend over (``max_position_embeddings`` or ``n_positions`` of its config), or None
    for a model with relative positions and no fixed limit (T5)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class PromptTokenizer:
    """Turns (prompt, target) pairs into :class:`TokenizedExamples` for a causal or seq2seq LM or a classifier.

    A classifier's targets are class names (``labels``, in class-index order), each one label of its class index.

    A row is at most ``max_length`` tokens, and ``max_length`` at most the model's ``context_length`` (a longer
    row would index past a learned position table, or be cut silently by the model): a causal prompt that does
    not fit loses its start, a seq2seq prompt its end, and each such prompt is warned about once, with how many
    tokens it lost, since an edit of a truncated prompt is not the edit asked for.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, kind: str = "causal", max_length: int = 128,
                 target_separator: str = " ", context_length: int | None = None,
                 labels: Sequence[str] | None = None) -> None:
        if max_length < 2:
            raise ConfigurationError(f"max_length must be at least 2 (a prompt token and a target token), got "
                                     f"{max_length} (--model.init_args.max_length)")
        self.tokenizer = tokenizer
        self.kind = kind
        self.requested_max_length = max_length
        self.context_length = context_length
        self.max_length = min(max_length, context_length) if context_length else max_length
        self.target_separator = target_separator
        if kind == "classifier" and not labels:
            raise ConfigurationError("a classifier's PromptTokenizer needs its class names (model.labels)")
        self.class_index = {name: i for i, name in enumerate(labels or ())}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        self.pad_id = int(pad)
        self._warned: set[str] = set()

    @classmethod
    def for_model(cls, tokenizer: PreTrainedTokenizerBase, kind: str, max_length: int, model: Any,
                  labels: Sequence[str] | None = None) -> PromptTokenizer:
        """The tokenizer for ``model``: ``max_length`` capped at its context (its config's position count)."""
        return cls(tokenizer, kind, max_length, context_length=context_length(getattr(model, "config", None)),
                   labels=labels)

    def target_ids(self, target: str) -> list[int]:
        if self.kind == "classifier":
            if target not in self.class_index:
                raise EditDataError(f"target {target!r}", None, None,
                                    f"is not one of the classifier's classes {list(self.class_index)} (model.labels)")
            return [self.class_index[target]]
        text = self.target_separator + target if self.kind == "causal" else target
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise EditDataError(f"target {target!r}", None, None, "tokenizes to nothing; give a target with words")
        if self.kind == "causal" and len(ids) >= self.max_length:
            raise ConfigurationError(f"target {target[:40]!r} is {len(ids)} tokens, which leaves no room for its "
                                     f"prompt in max_length {self._limit_text()}; raise max_length "
                                     "(--model.init_args.max_length) or shorten the target")
        return ids

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def __call__(self, pairs: Sequence[LabeledPrompt]) -> TokenizedExamples:
        rows_in: list[list[int]] = []
        rows_lab: list[list[int]] = []
        cut: list[tuple[str, int, int]] = []  # (prompt, tokens dropped, tokens it had)
        for pair in pairs:
            prompt, target = self.prompt_ids(pair.prompt), self.target_ids(pair.target)
            if self.kind == "causal":
                room = self.max_length - len(target)
                if len(prompt) > room:
                    cut.append((pair.prompt, len(prompt) - room, len(prompt)))
                    prompt = prompt[-room:]
                rows_in.append(prompt + target)
                rows_lab.append([IGNORE_INDEX] * len(prompt) + target)
            elif self.kind == "classifier":
                if len(prompt) > self.max_length:
                    cut.append((pair.prompt, len(prompt) - self.max_length, len(prompt)))
                rows_in.append(prompt[: self.max_length])
                rows_lab.append(target)
            else:
                if len(prompt) > self.max_length:
                    cut.append((pair.prompt, len(prompt) - self.max_length, len(prompt)))
                if len(target) > self.max_length:
                    cut.append((f"target {pair.target}", len(target) - self.max_length, len(target)))
                rows_in.append(prompt[: self.max_length])
                rows_lab.append(target[: self.max_length])
        self._warn_truncated(cut)
        input_ids, attention_mask = _pad(rows_in, self.pad_id)
        labels, _ = _pad(rows_lab, IGNORE_INDEX)
        return TokenizedExamples(input_ids, attention_mask, labels)

    def check_classes(self, records: Sequence[EditRecord]) -> None:
        """Every target of ``records`` names one of the classifier's classes; the error names the record and field."""
        for record in records:
            named = [("target_new", record.target_new), ("target_true", record.target_true)]
            named += [(f"{field}[{i}].target", pair.target) for field in ("out_of_scope", "hard_out_of_scope")
                      for i, pair in enumerate(getattr(record, field))]
            for field, target in named:
                if target is not None and target not in self.class_index:
                    raise EditDataError(f"edit {record.case_id!r}", None, field, f"{target!r} is not one of the "
                                        f"classifier's classes {list(self.class_index)} (model.labels)")

    def _limit_text(self) -> str:
        if self.max_length < self.requested_max_length:
            return f"{self.max_length} (the model's context; {self.requested_max_length} was asked)"
        return str(self.max_length)

    def _warn_truncated(self, cut: list[tuple[str, int, int]]) -> None:
        """One warning per call for the prompts truncated for the first time (each prompt is named once)."""
        new = [(text, dropped, total) for text, dropped, total in cut if text not in self._warned]
        if not new:
            return
        self._warned.update(text for text, _, _ in new)
        lost = "start" if self.kind == "causal" else "end"
        shown = ", ".join(f"{text[:40]!r}{'...' if len(text) > 40 else ''} ({dropped} of {total} tokens dropped)"
                          for text, dropped, total in new[:3])
        more = f" and {len(new) - 3} more" if len(new) > 3 else ""
        warnings.warn(f"{len(new)} prompt(s) longer than max_length {self._limit_text()} lost their {lost}: "
                      f"{shown}{more}; raise max_length (--model.init_args.max_length) or shorten them",
                      UserWarning, stacklevel=3)

    def batch(self, records: Sequence[EditRecord], max_out_of_scope: int | None = None) -> EditBatch:
        """Build the edit batch for ``records``; out-of-scope prompts about any edited subject are dropped."""
        if self.kind == "classifier":
            self.check_classes(records)
        edit = self([LabeledPrompt(r.prompt, r.target_new) for r in records])
        in_scope_pairs = [pair for r in records for pair in r.in_scope]
        is_paraphrase = torch.tensor([i > 0 for r in records for i in range(1 + len(r.paraphrases))])
        out_of_scope = select_out_of_scope(records, max_out_of_scope)
        kinds = torch.tensor([out_of_scope_kind(pair, records) for pair in out_of_scope], dtype=torch.long)
        if not out_of_scope:
            raise EditDataError(
                f"edits {[r.case_id for r in records]}", None, None,
                "have no out-of-scope prompt that avoids the batch's subjects, so drawdown cannot be measured; give "
                "the records out_of_scope or hard_out_of_scope prompts (a prompt_target file: 'neighbours')")
        portability = [pair for r in records for pair in r.portability]
        return EditBatch(edit, self(in_scope_pairs), is_paraphrase, self(out_of_scope), tuple(records), kinds,
                         self(portability) if portability else None)


#: Kinds of out-of-scope prompt (:attr:`EditBatch.out_of_scope_kind`).
UNRELATED, SAME_SUBJECT, SAME_RELATION = 0, 1, 2


def out_of_scope_kind(pair: LabeledPrompt, records: Sequence[EditRecord]) -> int:
    """A record's hard out-of-scope prompt naming its subject is SAME_SUBJECT, any other hard one SAME_RELATION."""
    for record in records:
        if pair in record.hard_out_of_scope:
            return SAME_SUBJECT if record.subject and record.subject in pair.prompt else SAME_RELATION
    return UNRELATED


def select_out_of_scope(records: Sequence[EditRecord], limit: int | None = None) -> list[LabeledPrompt]:
    """The batch's out-of-scope and hard out-of-scope prompts, minus any that another edit of the batch touches."""
    edited_prompts = {p.prompt for r in records for p in r.in_scope}
    chosen: list[LabeledPrompt] = []
    seen: set[str] = set()
    for record in records:
        # A record's own same-subject prompts are its hard out-of-scope test; other edits' subjects are not.
        others = [r.subject for r in records if r.subject and r.subject != record.subject]
        for pair in (*record.out_of_scope, *record.hard_out_of_scope):
            if pair.prompt in edited_prompts or pair.prompt in seen or any(s in pair.prompt for s in others):
                continue
            seen.add(pair.prompt)
            chosen.append(pair)
    return chosen[:limit] if limit else chosen


def _pad(rows: list[list[int]], value: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class MovesEditBatches:
    """For a LightningModule (listed before it among the bases) that trains or evaluates on :class:`EditBatch`:
    Lightning moves tensors and collections of them to the device itself, but not a dataclass of our own."""

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, EditBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)  # type: ignore[misc]
