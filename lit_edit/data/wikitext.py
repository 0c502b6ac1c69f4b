"""The project's WikiText generation-editing set: its file format, reader and writer.

As in the MEND paper's WikiText task, an edit makes the model continue a passage prefix x_e with a continuation y_e
that the base model itself sampled; the generalisation input x'_e is the same prefix with its first words cut off
(MEND's reference code crops the start of x_e); other passages are the out-of-scope inputs, scored by perplexity.
``scripts/build_wikitext_edits.py`` builds the file from WikiText's raw text; docs/EVALUATION.md says how.

The file is a JSON array (or JSON lines for a ``.jsonl`` path), one object per line:

1. a header: ``{"wikitext_edits": 1, "passage_prompt_words": K, ...}`` plus how it was made (command, seed,
   base model and its SHA-256, source file and its SHA-256, ``n_tokens``);
2. passages, each ``{"passage": ID, "text": ...}``: the out-of-scope pool, shared by the edits that name it;
3. edits, each ``{"case_id", "prefix", "continuation", "rephrase", "out_of_scope": [ID, ...]}``, optionally
   ``"original"`` (the passage's own next words) and ``"source_line"``.

A passage becomes the out-of-scope pair (its first K words -> the rest), so perplexity covers all of it but its
first K words; K words, not one, so that two passages in a batch rarely share a prompt (the batch keeps one of each).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt

__all__ = ["FORMAT", "VERSION", "passage_prompt", "read_wikitext_edits", "write_wikitext_edits"]

FORMAT = "wikitext_edits"
"""The reader's name (``data.format``) and the header's version key."""
VERSION = 1


def passage_prompt(text: str, prompt_words: int) -> LabeledPrompt:
    """An out-of-scope passage as a scored pair: its first ``prompt_words`` words -> the rest (the scored tokens)."""
    words = text.split()
    if len(words) <= prompt_words:
        raise ValueError(f"a passage needs more than {prompt_words} words to be scored, got {len(words)}: {text!r}")
    return LabeledPrompt(" ".join(words[:prompt_words]), " ".join(words[prompt_words:]))


def read_wikitext_edits(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """The edits of a WikiText generation-editing file, each with its out-of-scope passages.

    prefix -> prompt, continuation -> target_new, rephrase -> the one paraphrase, original -> target_true,
    and the named passages -> out_of_scope. A malformed record is an :class:`EditDataError` naming file, record,
    line and field; with ``skip_invalid`` a malformed *edit* is warned about and dropped (a bad header or passage
    still stops the read, since every edit depends on them).
    """
    # Imported here: readers.py registers this reader, so it imports this module first.
    from lit_edit.data.readers import _Fields, iter_json_records

    source = str(path)
    rows = list(iter_json_records(path))
    if not rows:
        raise EditDataError(source, None, None, "holds no records (an empty array or file)")
    index, line, header = rows[0]
    if not isinstance(header, dict) or header.get(FORMAT) != VERSION:
        found = header.get(FORMAT) if isinstance(header, dict) else header
        raise EditDataError(source, index, FORMAT, f"the first record must be the header {{{FORMAT!r}: {VERSION}, ...}}"
                            f", got {found!r} (a file of scripts/build_wikitext_edits.py)", line)
    prompt_words = header.get("passage_prompt_words")
    if isinstance(prompt_words, bool) or not isinstance(prompt_words, int) or prompt_words < 1:
        raise EditDataError(source, index, "passage_prompt_words", f"expected a positive integer, got {prompt_words!r}",
                            line)

    passages: dict[str, LabeledPrompt] = {}
    edits: list[_Fields] = []
    for index, line, obj in rows[1:]:
        record = _Fields(obj, source, index, line)
        if not isinstance(obj, dict):
            raise record.error("<record>", f"expected an object, got {type(obj).__name__}")
        if "passage" in obj:
            name = record.text("passage")
            if name in passages:
                raise record.error("passage", f"passage {name!r} is defined twice")
            try:
                passages[name] = passage_prompt(record.text("text"), prompt_words)
            except ValueError as err:
                raise record.error("text", str(err)) from None
        elif "case_id" in obj:
            edits.append(record)
        else:
            raise record.error("<record>", "expected a passage ({passage, text}) or an edit ({case_id, prefix, "
                                           f"continuation, rephrase, out_of_scope}}), got keys {sorted(obj)}")

    records = []
    for record in edits:
        try:
            records.append(_edit(record, passages))
        except EditDataError as err:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping malformed record: {err}", stacklevel=2)
    return records


def _edit(r: Any, passages: Mapping[str, LabeledPrompt]) -> EditRecord:
    """One edit line -> an :class:`EditRecord` (``r``: the reader's typed field access)."""
    names = r.texts("out_of_scope")
    if not names:
        raise r.error("out_of_scope", "expected at least one passage id (perplexity drawdown needs a passage)")
    for i, name in enumerate(names):
        if name not in passages:
            raise r.error(f"out_of_scope[{i}]", f"names no passage of this file: {name!r}")
    original = r.get("original", required=False)
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("prefix"),
        target_new=r.text("continuation", target=True),
        target_true=r.text("original", target=True) if original is not None else None,
        paraphrases=(r.text("rephrase"),),
        out_of_scope=tuple(passages[name] for name in names),
    )


def write_wikitext_edits(path: str | Path, header: Mapping[str, Any], passages: Mapping[str, str],
                         edits: Iterable[Mapping[str, Any]]) -> Path:
    """Write a file :func:`read_wikitext_edits` reads: ``header`` (the version key is added), the passage pool by
    id, then the edits; one record per line, as a JSON array unless ``path`` ends in ``.jsonl``."""
    path = Path(path)
    rows = [{FORMAT: VERSION, **header}, *({"passage": name, "text": text} for name, text in passages.items()),
            *edits]
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    text = "".join(f"{line}\n" for line in lines) if path.suffix == ".jsonl" else "[\n" + ",\n".join(lines) + "\n]\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
