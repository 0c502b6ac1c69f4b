"""Readers that turn published edit-benchmark files into :class:`EditRecord` lists.

Every format goes through one parser (:func:`iter_json_records`), so each reader is only a field
mapping, and every malformed record is reported with file, record index, line and field.
A file ending in ``.jsonl`` holds one record per line; any other file holds a JSON array.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from lit_edit.data.records import (
    DataFileNotFoundError,
    EditDataError,
    EditRecord,
    LabeledPrompt,
    chained_groups,
    record_from_dict,
)
from lit_edit.data.wikitext import read_wikitext_edits
from lit_edit.errors import ConfigurationError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NQ_PREFIX = "nq question: "


def _missing_file(path: Path) -> DataFileNotFoundError:
    """The error for a data path that names no file, pointing at the shared data folder when it is meant to be in it."""
    message = f"edit data file not found: {path}"
    parts = path.absolute().parts
    if any(parts[i:i + 2] == ("shared", "data") for i in range(len(parts) - 1)):
        message += (" (the benchmark data lives in ../shared/data beside the project, not inside it;"
                    " set LIT_EDIT_DATA_DIR or pass another path if it is elsewhere)")
    return DataFileNotFoundError(message)


def read_data_text(path: str | Path) -> str:
    """A data file's text (UTF-8, an optional BOM dropped); a missing file, a folder or bytes that are not UTF-8 are
    an :class:`EditDataError` naming the file and line, not a bare ``UnicodeDecodeError``."""
    path = Path(path)
    if not path.exists():
        raise _missing_file(path)
    if path.is_dir():
        raise EditDataError(str(path), None, None, "is a folder, not a data file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise EditDataError(str(path), None, None,
                            f"byte 0x{data[err.start]:02x} at column {err.start - line_start + 1} is not UTF-8 "
                            "(save the file as UTF-8)", data.count(b"\n", 0, err.start) + 1) from None


_TOO_DEEP = "nested too deeply to read (an edit record nests objects and lists a few levels deep at most)"


def iter_json_records(path: str | Path) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, obj)`` for each record of a JSON array or JSONL file.

    ``line`` is the 1-based line where the record starts, so errors can point into the file.
    Array elements are decoded one at a time with ``raw_decode`` to learn their offsets.
    """
    path = Path(path)
    source = str(path)
    text = read_data_text(path)

    if path.suffix == ".jsonl":
        index = 0
        for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON may hold U+2028
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise EditDataError(source, index, "<json>", f"invalid JSON: {err.msg} (column {err.colno})",
                                        lineno) from None
                except RecursionError:
                    raise EditDataError(source, index, "<json>", _TOO_DEEP, lineno) from None
                yield index, lineno, obj
                index += 1
        return

    def invalid(index: int, problem: str, pos: int) -> EditDataError:
        return EditDataError(source, index, "<json>", f"invalid JSON: {problem}", text.count("\n", 0, pos) + 1)

    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text).end()
    if not text.startswith("[", pos):
        raise invalid(0, "expected a JSON array of records (use the .jsonl suffix for one object per line)", pos)
    pos, line, counted, index = pos + 1, 1, 0, 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if index == 0 and text.startswith("]", pos):
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise EditDataError(source, index, "<json>", f"invalid JSON: {err.msg} (column {err.colno})",
                                err.lineno) from None
        except RecursionError:
            raise EditDataError(source, index, "<json>", _TOO_DEEP, text.count("\n", 0, pos) + 1) from None
        line += text.count("\n", counted, pos)
        counted = pos
        yield index, line, obj
        index += 1
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            break
        else:
            raise invalid(index, "expected ',' or ']' after a record", pos)
    if _WHITESPACE.match(text, pos + 1).end() != len(text):
        raise invalid(index, "extra data after the closing ']'", pos + 1)


@dataclass(frozen=True)
class _Fields:
    """One raw record and where it came from: typed field access whose errors name the field."""

    obj: dict[str, Any]
    source: str
    index: int
    line: int
    prefix: str = ""  # for an object nested in the record: its path, e.g. "neighbours[2]."

    def error(self, name: str, problem: str) -> EditDataError:
        return EditDataError(self.source, self.index, f"{self.prefix}{name}", problem, self.line)

    def get(self, name: str, required: bool = True) -> Any:
        """The value at a dotted path such as ``requested_rewrite.target_new.str``."""
        value: Any = self.obj
        for part in name.split("."):
            if not isinstance(value, dict):
                raise self.error(name, f"expected an object holding '{part}', got {value!r}")
            value = value.get(part)
            if value is None:
                if required:
                    raise self.error(name, "missing")
                return None
        return value

    def text(self, name: str, target: bool = False) -> str:
        """A required non-empty string; targets lose surrounding spaces (records store bare targets)."""
        value = self.get(name)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        return value.strip() if target else value

    def texts(self, name: str) -> tuple[str, ...]:
        """A required list of non-empty strings."""
        value = self.get(name)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list of strings, got {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{name}[{i}]", f"expected a non-empty string, got {item!r}")
        return tuple(value)

    def answer(self, name: str) -> str:
        """A ground truth written as a string, a list of aliases or a list of alias lists (KnowEdit, MQuAKE):
        the first alias, the one teacher forcing scores."""
        value = self.get(name)
        while isinstance(value, list) and value:
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected an answer (a string or a list of aliases), got {self.get(name)!r}")
        return value.strip()

    def labelled_prompts(self, name: str) -> tuple[LabeledPrompt, ...]:
        """A list of ``{prompt, ground_truth}`` objects (KnowEdit's portability and locality questions)."""
        value = self.get(name)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list of {{prompt, ground_truth}} objects, got {value!r}")
        pairs = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{name}[{i}]", f"expected an object with prompt and ground_truth, got {item!r}")
            question = _Fields(item, self.source, self.index, self.line, prefix=f"{self.prefix}{name}[{i}].")
            pairs.append(LabeledPrompt(question.text("prompt"), question.answer("ground_truth")))
        return tuple(pairs)

    def case_id(self) -> str:
        """The record's own ``case_id``, else its position in the file."""
        value = self.obj.get("case_id", self.index)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error("case_id", f"expected an integer or string, got {value!r}")
        return str(value)


def _read(path: str | Path, convert: Callable[[_Fields], EditRecord | list[EditRecord]],
          skip_invalid: bool) -> list[EditRecord]:
    """Convert every record of ``path`` (one file record may hold several edits, e.g. MQuAKE's chains); with
    ``skip_invalid`` a malformed record is warned about and dropped."""
    records: list[EditRecord] = []
    for index, line, obj in iter_json_records(path):
        record = _Fields(obj, str(path), index, line)
        try:
            if not isinstance(obj, dict):
                raise record.error("<record>", f"expected an object, got {type(obj).__name__}")
            converted = convert(record)
            records.extend(converted if isinstance(converted, list) else [converted])
        except EditDataError as err:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping malformed record: {err}", stacklevel=3)
    return records


def _plain_question(loc: str) -> str:
    """An NQ locality question as a model should see it: no ``nq question:`` tag, capitalised."""
    question = loc.removeprefix(_NQ_PREFIX).strip()
    return question[:1].upper() + question[1:]


def _zsre_mend(r: _Fields) -> EditRecord:
    target_true = None
    if r.obj.get("answers") is not None:  # only the full MEND variant has the true answers
        answers = r.texts("answers")
        if not answers:
            raise r.error("answers", "expected at least one answer")
        target_true = answers[0].strip()
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("src"),
        target_new=r.text("alt", target=True),
        subject=r.text("subject"),
        target_true=target_true,
        paraphrases=(r.text("rephrase"),),
        out_of_scope=(LabeledPrompt(_plain_question(r.text("loc")), r.text("loc_ans", target=True)),),
    )


def read_zsre_mend(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """zsRE as prepared by MEND (both the ``train_10000`` and the full ``{pred, answers, cond}`` variant).

    ``src`` -> prompt, ``alt`` -> target_new, ``answers[0]`` -> target_true (when present),
    ``rephrase`` -> paraphrase, and the NQ question ``loc`` (tag stripped) with ``loc_ans`` -> out_of_scope.
    zsRE has no relation ids; a record without ``case_id`` is numbered by its position.
    """
    return _read(path, _zsre_mend, skip_invalid)


def _counterfact_easyedit(r: _Fields) -> EditRecord:
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("prompt"),
        target_new=r.text("target_new", target=True),
        subject=r.text("subject"),
        target_true=r.text("ground_truth", target=True),
        paraphrases=(r.text("rephrase_prompt"),),
        hard_out_of_scope=(LabeledPrompt(r.text("locality_prompt"), r.text("locality_ground_truth", target=True)),),
    )


def read_counterfact_easyedit(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """CounterFact as split by EasyEdit (one rephrase and one locality prompt per case).

    The locality prompt is one of CounterFact's neighbourhood prompts (same relation, another subject
    sharing the true object), the look-alike most easily damaged by the edit, so it goes to
    ``hard_out_of_scope``; ``out_of_scope`` stays empty because this split has no unrelated facts.
    """
    return _read(path, _counterfact_easyedit, skip_invalid)


def _rome_counterfact(r: _Fields) -> EditRecord:
    template, subject = r.text("requested_rewrite.prompt"), r.text("requested_rewrite.subject")
    if template.count("{}") != 1:
        raise r.error("requested_rewrite.prompt", f"expected one '{{}}' where the subject goes, got {template!r}")
    target_new = r.text("requested_rewrite.target_new.str", target=True)
    target_true = r.text("requested_rewrite.target_true.str", target=True)
    return EditRecord(
        case_id=r.case_id(),
        prompt=template.replace("{}", subject),
        target_new=target_new,
        subject=subject,
        target_true=target_true,
        relation=r.text("requested_rewrite.relation_id"),
        paraphrases=r.texts("paraphrase_prompts"),
        out_of_scope=tuple(LabeledPrompt(p, target_new) for p in r.texts("attribute_prompts")),
        hard_out_of_scope=tuple(LabeledPrompt(p, target_true) for p in r.texts("neighborhood_prompts")),
    )


def read_rome_counterfact(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """CounterFact in ROME's original ``counterfact.json`` layout (``requested_rewrite`` etc.).

    ``neighborhood_prompts`` (same relation, other subjects whose true answer is ``target_true``) are the
    look-alikes an edit tends to bleed into -> ``hard_out_of_scope`` labelled ``target_true``;
    ``attribute_prompts`` (other subjects that truly have ``target_new``) -> ``out_of_scope`` labelled
    ``target_new``. ``generation_prompts`` carry no labels and are not read.
    """
    return _read(path, _rome_counterfact, skip_invalid)


def _prompt_target(r: _Fields) -> EditRecord:
    neighbours = r.get("neighbours", required=False) or []
    if not isinstance(neighbours, list):
        raise r.error("neighbours", f"expected a list of {{prompt, target}} objects, got {neighbours!r}")
    kept = []
    for i, item in enumerate(neighbours):
        if not isinstance(item, dict):
            raise r.error(f"neighbours[{i}]", f"expected an object with prompt and target, got {item!r}")
        neighbour = _Fields(item, r.source, r.index, r.line, prefix=f"neighbours[{i}].")
        kept.append(LabeledPrompt(neighbour.text("prompt"), neighbour.text("target", target=True)))
    return EditRecord(
        case_id=r.case_id(),
        prompt=r.text("prompt"),
        target_new=r.text("target", target=True),
        subject=r.text("subject") if r.get("subject", required=False) is not None else None,
        target_true=r.text("target_true", target=True) if r.get("target_true", required=False) is not None else None,
        paraphrases=r.texts("paraphrases") if r.get("paraphrases", required=False) is not None else (),
        out_of_scope=tuple(kept),
    )


def read_prompt_target(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """Users' own edits: JSON lines (or an array) of ``{"prompt": ..., "target": ...}``, optionally with
    ``paraphrases`` (strings), ``neighbours`` (``{"prompt", "target"}`` objects that the edit should leave
    alone), ``subject`` and ``target_true``. Evaluation needs at least one neighbour per batch to measure DD."""
    return _read(path, _prompt_target, skip_invalid)


def _knowedit(r: _Fields) -> EditRecord:
    if r.get("concept", required=False) is not None:  # WikiBio: continue a passage about a concept
        prompt, target_new, subject = r.text("text"), r.text("labels", target=True), r.text("concept")
        target_true, paraphrases = None, ()
    else:
        prompt, target_new, subject = r.text("prompt"), r.answer("target_new"), r.text("subject")
        target_true = r.answer("ground_truth") if r.get("ground_truth", required=False) is not None else None
        rephrase = next((name for name in ("rephrase_prompt", "rephrase") if r.get(name, required=False)), None)
        paraphrases = () if rephrase is None else (
            (r.text(rephrase),) if isinstance(r.get(rephrase), str) else r.texts(rephrase))

    def categories(name: str) -> tuple[LabeledPrompt, ...]:
        groups = r.get(name, required=False) or {}
        if not isinstance(groups, dict):
            raise r.error(name, f"expected an object of categories (e.g. Reasoning, Relation_Specificity), got {groups!r}")
        return tuple(pair for category in groups for pair in r.labelled_prompts(f"{name}.{category}"))

    return EditRecord(
        case_id=r.case_id(),
        prompt=prompt,
        target_new=target_new,
        subject=subject,
        target_true=target_true,
        paraphrases=paraphrases,
        hard_out_of_scope=categories("locality"),
        portability=categories("portability"),
    )


def read_knowedit(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """KnowEdit (Zhang et al. 2024; ZsRE, WikiData recent and counterfact, WikiBio files).

    ``prompt`` -> prompt, ``target_new`` -> target_new, ``ground_truth`` -> target_true, ``rephrase_prompt`` (or
    ``rephrase``) -> paraphrases; every ``portability`` category (Reasoning, Logical_Generalization,
    Subject_Aliasing) -> portability; every ``locality`` category (Relation_Specificity: same subject, other
    relation; Forgetfulness) -> hard_out_of_scope. A ground truth given as alias lists is scored on its first
    alias. WikiBio's ``text``, ``labels`` and ``concept`` -> prompt, target_new and subject.
    """
    return _read(path, _knowedit, skip_invalid)


def _mquake(r: _Fields) -> list[EditRecord]:
    rewrites = r.get("requested_rewrite")
    if not isinstance(rewrites, list) or not rewrites:
        raise r.error("requested_rewrite", f"expected a non-empty list of rewrites, got {rewrites!r}")
    group = r.case_id()
    new_answer = r.answer("new_answer")
    questions = tuple(LabeledPrompt(q, new_answer) for q in r.texts("questions"))
    edits = []
    for i, raw in enumerate(rewrites):
        if not isinstance(raw, dict):
            raise r.error(f"requested_rewrite[{i}]", f"expected an object, got {raw!r}")
        rewrite = _Fields(raw, r.source, r.index, r.line, prefix=f"requested_rewrite[{i}].")
        template, subject = rewrite.text("prompt"), rewrite.text("subject")
        if template.count("{}") != 1:
            raise rewrite.error("prompt", f"expected one '{{}}' where the subject goes, got {template!r}")
        question = rewrite.get("question", required=False)
        edits.append((template.replace("{}", subject), subject, rewrite, (rewrite.text("question"),) if question else ()))
    edited_clozes = {prompt for prompt, *_ in edits}
    # The chain's hops that no rewrite touches keep their answers: the edit must leave them alone.
    hops = r.get("new_single_hops", required=False) or []
    triples, edited_triples = r.get("orig.new_triples", required=False), r.get("orig.edit_triples", required=False)
    kept = []
    for j, hop in enumerate(hops if isinstance(hops, list) else []):
        if not isinstance(hop, dict):
            raise r.error(f"new_single_hops[{j}]", f"expected an object with cloze and answer, got {hop!r}")
        fields = _Fields(hop, r.source, r.index, r.line, prefix=f"new_single_hops[{j}].")
        untouched = (triples[j] not in edited_triples if isinstance(triples, list) and isinstance(edited_triples, list)
                     and j < len(triples) else fields.text("cloze") not in edited_clozes)
        if untouched:
            kept.append(LabeledPrompt(fields.text("cloze"), fields.answer("answer")))
    return [EditRecord(case_id=f"{group}:{i}", prompt=prompt, subject=subject,
                       target_new=rewrite.text("target_new.str", target=True),
                       target_true=rewrite.text("target_true.str", target=True),
                       relation=rewrite.text("relation_id") if rewrite.get("relation_id", required=False) else None,
                       paraphrases=question, out_of_scope=tuple(kept) if i == 0 else (),
                       portability=questions if i == 0 else (), group=group)
            for i, (prompt, subject, rewrite, question) in enumerate(edits)]


def read_mquake(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """MQuAKE (Zhong et al. 2023; the CF, CF-3k, T and hard files): each case is a chain of 1-4 edits, one record
    each (``<case_id>:<i>``, all in group ``<case_id>``), applied together by the evaluation.

    A rewrite's ``prompt`` with its ``subject`` -> prompt, ``target_new.str``/``target_true.str`` -> targets, its
    ``question`` -> paraphrase. The case's multi-hop ``questions`` (-> ``new_answer``) are the portability questions,
    and the hops of ``new_single_hops`` that no rewrite changed (-> their ``answer``) are out of scope; both sit
    on the case's first record. A case whose every hop is edited (every case of MQuAKE-hard) borrows an
    out-of-scope prompt from another case, so every chain is measured for drawdown: see :func:`borrow_out_of_scope`.
    """
    return borrow_out_of_scope(_read(path, _mquake, skip_invalid))


def borrow_out_of_scope(records: list[EditRecord]) -> list[EditRecord]:
    """Give each chain (records of one ``group``) that has no out-of-scope prompt one fact from another chain: an
    untouched hop where any chain has one, else (a file where every hop is edited) another chain's edited fact as
    it stood before the edit (its prompt with ``target_true``). Never a prompt naming one of the chain's subjects
    or one of its own in-scope prompts, which the batch would drop; where no fact qualifies the chain is left as is.

    The choice is deterministic, seeded by the chain's group: a scan of the candidates from a start drawn by
    ``random.Random(group)``, so a chain borrows the same fact whatever the run, and chains spread over the file.
    """
    chains = chained_groups(records)
    hops = [(records[c[0]].group, pair) for c in chains for pair in records[c[0]].out_of_scope]
    facts = [(r.group, LabeledPrompt(r.prompt, r.target_true)) for r in records if r.target_true]
    for chain in chains:
        first = records[chain[0]]
        if first.out_of_scope:
            continue
        subjects = [records[i].subject for i in chain if records[i].subject]
        own = {pair.prompt for i in chain for pair in records[i].in_scope}

        def fits(candidate: tuple[str | None, LabeledPrompt], group: str | None = first.group,
                 subjects: list[str] = subjects, own: set[str] = own) -> bool:
            owner, pair = candidate
            return owner != group and pair.prompt not in own and not any(s in pair.prompt for s in subjects)

        for pool in (hops, facts):
            if not pool:
                continue
            begin = random.Random(f"mquake out of scope/{first.group}").randrange(len(pool))
            chosen = next((pool[k % len(pool)][1] for k in range(begin, begin + len(pool))
                           if fits(pool[k % len(pool)])), None)
            if chosen is not None:
                records[chain[0]] = replace(first, out_of_scope=(chosen,))
                break
    return records


#: FEVER's two classes, the class names a FEVER classifier's ``model.labels`` lists.
FEVER_LABELS = ("SUPPORTS", "REFUTES")
#: The paraphrases lit_edit ships for a subset of FEVER Lite's claims (``scripts/build_fever_paraphrases.py``).
FEVER_PARAPHRASES = Path(__file__).parent / "fever_paraphrases.jsonl"
#: Other claims (with their gold labels) each FEVER edit carries as its out-of-scope inputs.
FEVER_OUT_OF_SCOPE = 4


def read_fever_paraphrases(path: str | Path = FEVER_PARAPHRASES) -> dict[str, tuple[str, ...]]:
    """Claim text -> its paraphrases, from JSON lines ``{"claim", "paraphrases"}``; errors name file, line, field."""
    paraphrases: dict[str, tuple[str, ...]] = {}
    for index, line, obj in iter_json_records(path):
        row = _Fields(obj, str(path), index, line)
        if not isinstance(obj, dict):
            raise row.error("<record>", f"expected an object, got {type(obj).__name__}")
        paraphrases[row.text("claim")] = row.texts("paraphrases")
    return paraphrases


def _fever(r: _Fields) -> EditRecord:
    label = r.text("label", target=True)
    if label not in FEVER_LABELS:
        raise r.error("label", f"expected one of {list(FEVER_LABELS)}, got {label!r}")
    return EditRecord(case_id=r.case_id(), prompt=r.text("claim"), target_true=label,
                      target_new=next(other for other in FEVER_LABELS if other != label))


def read_fever(path: str | Path, *, skip_invalid: bool = False,
               paraphrases: str | Path | None = FEVER_PARAPHRASES) -> list[EditRecord]:
    """FEVER Lite (``{claim, label, evidence}`` lines, label SUPPORTS or REFUTES) as classifier edits.

    An edit flips a claim's label: ``claim`` -> prompt, ``label`` -> target_true, the other class -> target_new.
    In scope: the claim and its paraphrases, joined by the claim's text from ``paraphrases`` (the shipped file
    covers a documented subset of the claims; a claim outside it has none). Out of scope: FEVER_OUT_OF_SCOPE other
    claims of the file with their gold labels, drawn by ``random.Random`` seeded with the record's index, so a
    record gets the same ones whichever slice of the file is read. ``evidence`` is not read.
    """
    records = _read(path, _fever, skip_invalid)
    rephrased = read_fever_paraphrases(paraphrases) if paraphrases is not None else {}
    facts = [LabeledPrompt(r.prompt, r.target_true) for r in records if r.target_true]
    done = []
    for record in records:
        draw = random.Random(f"fever out of scope/{record.case_id}")
        others = [fact for fact in draw.sample(facts, min(len(facts), 2 * FEVER_OUT_OF_SCOPE + 1))
                  if fact.prompt != record.prompt][:FEVER_OUT_OF_SCOPE]
        done.append(replace(record, paraphrases=rephrased.get(record.prompt, ()), out_of_scope=tuple(others)))
    return done


def read_edit_records(path: str | Path, *, skip_invalid: bool = False) -> list[EditRecord]:
    """The project's own format: objects in :func:`record_from_dict`'s layout (JSON array or JSONL)."""
    return _read(path, lambda r: record_from_dict(r.obj, r.source, r.index, r.line), skip_invalid)


def write_edit_records(records: Iterable[EditRecord], path: str | Path) -> Path:
    """Write records in the project's format (JSONL for a ``.jsonl`` path, else an indented JSON array)."""
    path = Path(path)
    rows = [record.to_dict() for record in records]
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_references(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Reference texts for consistency: a JSON object from a target (``"Paris"``) to texts about it
    (e.g. ROME's Wikipedia snippets of subjects that truly have that attribute). Keys compare case-insensitively."""
    path = Path(path)
    try:
        data = json.loads(read_data_text(path))
    except json.JSONDecodeError as err:
        raise EditDataError(str(path), "<file>", "<json>", f"invalid JSON: {err.msg}", err.lineno) from None
    except RecursionError:
        raise EditDataError(str(path), "<file>", "<json>", _TOO_DEEP) from None
    if not isinstance(data, dict):
        raise EditDataError(str(path), "<file>", "<json>", "expected an object from targets to lists of texts")
    references = {}
    for target, texts in data.items():
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise EditDataError(str(path), repr(target), target, f"expected a non-empty list of texts, got {texts!r}")
        references[target.strip().casefold()] = tuple(texts)
    return references


def with_references(records: list[EditRecord], references: dict[str, tuple[str, ...]]) -> list[EditRecord]:
    """Each record with the reference texts of its new target (records whose target has none are unchanged)."""
    return [replace(r, references=references.get(r.target_new.strip().casefold(), r.references)) for r in records]


READERS: dict[str, Callable[..., list[EditRecord]]] = {
    "zsre_mend": read_zsre_mend,
    "counterfact_easyedit": read_counterfact_easyedit,
    "rome_counterfact": read_rome_counterfact,
    "lit_edit": read_edit_records,
    "prompt_target": read_prompt_target,
    "knowedit": read_knowedit,
    "mquake": read_mquake,
    "wikitext_edits": read_wikitext_edits,
    "fever": read_fever,
}

_LIT_EDIT_KEYS = frozenset(f.name for f in dataclass_fields(EditRecord))


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from the keys of its first record."""
    first = next((obj for _, _, obj in iter_json_records(path)), None)
    keys = set(first) if isinstance(first, dict) else set()
    if {"requested_rewrite", "questions", "new_answer"} <= keys:
        return "mquake"
    if isinstance(first, dict) and (isinstance(first.get("portability"), dict) or isinstance(first.get("locality"), dict)):
        return "knowedit"
    if "requested_rewrite" in keys:
        return "rome_counterfact"
    if {"claim", "label"} <= keys:
        return "fever"
    if {"src", "alt"} <= keys:
        return "zsre_mend"
    if "rephrase_prompt" in keys:
        return "counterfact_easyedit"
    if {"prompt", "target"} <= keys and "target_new" not in keys:
        return "prompt_target"
    if {"prompt", "target_new"} <= keys <= _LIT_EDIT_KEYS and isinstance(first["prompt"], str):  # type: ignore[index]
        return "lit_edit"
    if first is None:
        raise EditDataError(str(path), None, None, "holds no records (an empty array or file)")
    seen = f"first record keys {sorted(keys)}" if keys else f"first record {first!r}"
    raise EditDataError(str(path), None, None, f"cannot tell the edit data format ({seen}); "
                        f"pass format= (--data.format) one of {sorted(READERS)}")


def load_edit_records(path: str | Path, format: str = "auto", *, skip_invalid: bool = False) -> list[EditRecord]:
    """Read any supported file; ``format="auto"`` sniffs it with :func:`detect_format`."""
    if format != "auto" and format not in READERS:
        raise ConfigurationError(f"unknown edit data format {format!r} (--data.format); "
                                 f"expected 'auto' or one of {sorted(READERS)}")
    name = detect_format(path) if format == "auto" else format
    return READERS[name](path, skip_invalid=skip_invalid)
