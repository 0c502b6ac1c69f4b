"""Which tokens of a tokenized prompt spell its subject: ROME's key sits at the subject's last token,
causal tracing corrupts the subject's tokens.

Found by character offsets, so a subject that tokenizes differently inside the prompt than alone
(" Paris" against "Paris") is still found; the span covers every token that overlaps the subject.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lit_edit.mechanics.edited_model import EditRefusedError


class SubjectNotFoundError(EditRefusedError):
    """The prompt does not contain the subject (or it was truncated away): the record's mistake. An edit of it is
    refused (an evaluation records it as failed and goes on); causal tracing reports it. A ValueError."""


def subject_token_span(tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str,
                       add_special_tokens: bool = True) -> tuple[int, int]:
    """Token positions ``[start, end)`` of the last occurrence of ``subject`` in ``prompt``, as
    ``tokenizer(prompt, add_special_tokens=...)`` tokenizes it."""
    if not subject:
        raise SubjectNotFoundError(f"no subject given for prompt {prompt!r}")
    begin = prompt.rfind(subject)
    if begin < 0:
        raise SubjectNotFoundError(f"subject {subject!r} does not occur in prompt {prompt!r}; locating editors "
                                   "(ROME, MEMIT) and causal tracing need the subject spelled as in the prompt")
    stop = begin + len(subject)
    if not tokenizer.is_fast:
        raise TypeError(f"{type(tokenizer).__name__} gives no character offsets; use a fast tokenizer")
    encoded = tokenizer(prompt, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    tokens = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > a and a < stop and b > begin]
    if not tokens:
        raise SubjectNotFoundError(f"subject {subject!r} covers no token of prompt {prompt!r}")
    return tokens[0], tokens[-1] + 1


def subject_last_token(tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str) -> int:
    """Position of the subject's last token in the tokenized prompt (special tokens included)."""
    return subject_token_span(tokenizer, prompt, subject)[1] - 1
