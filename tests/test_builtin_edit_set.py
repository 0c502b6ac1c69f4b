"""The shipped built-in edit set (lit_edit/data/builtin/*.json) is well formed; no model needed."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lit_edit.data.builtin.facts import RELATIONS, all_facts, fill
from lit_edit.data.records import EditRecord, record_from_dict

BUILTIN = Path(__file__).resolve().parents[1] / "lit_edit" / "data" / "builtin"
SPLITS = ("train", "val", "test")
MIN_EDITS = 300


def _load(split: str) -> list[EditRecord]:
    path = BUILTIN / f"{split}.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows, f"{path} must hold a non-empty JSON list"
    return [record_from_dict(row, source=str(path), index=i) for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def splits() -> dict[str, list[EditRecord]]:
    return {split: _load(split) for split in SPLITS}


@pytest.fixture(scope="module")
def first_prompt_subject() -> dict[str, tuple[str, str, str]]:
    """First-template prompt -> (subject, relation, true object) over all candidate facts."""
    table = {}
    for fact in all_facts():
        prompt = fill(RELATIONS[fact.relation].templates[0], fact.subject)
        assert prompt not in table, f"two facts share the prompt {prompt!r}"
        table[prompt] = (fact.subject, fact.relation, fact.target)
    return table


def test_total_edit_count_and_readme(splits):
    total = sum(len(records) for records in splits.values())
    assert total >= MIN_EDITS
    readme = (BUILTIN / "README.md").read_text(encoding="utf-8")
    for split, records in splits.items():
        assert f"| {split} | {len(records)} |" in readme, f"README.md does not state {len(records)} {split} edits"
    assert re.search(rf"hold {total} counterfactual edits", readme), "README.md does not state the total"


def test_split_sizes_roughly_70_15_15(splits):
    total = sum(len(records) for records in splits.values())
    for split, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert abs(len(splits[split]) / total - share) < 0.05, (split, len(splits[split]), total)


def test_every_edit_is_complete(splits):
    for split, records in splits.items():
        for r in records:
            where = f"{split}/{r.case_id}"
            assert len(r.paraphrases) >= 2, where
            assert len(r.out_of_scope) >= 1, where
            assert len(r.hard_out_of_scope) >= 1, where
            assert r.subject and r.relation and r.target_true, where
            assert r.target_new != r.target_true, where
            assert r.target_new == r.target_new.strip() and r.target_true == r.target_true.strip(), where
            assert r.prompt not in r.paraphrases and len(set(r.paraphrases)) == len(r.paraphrases), where


def test_edits_match_the_facts_table(splits):
    for split, records in splits.items():
        for r in records:
            relation = RELATIONS[r.relation]
            assert relation.facts[r.subject] == r.target_true, f"{split}/{r.case_id}: wrong target_true"
            assert r.target_new in set(relation.facts.values()), f"{split}/{r.case_id}: target_new not of the relation"
            assert r.prompt == fill(relation.templates[0], r.subject)
            assert r.paraphrases == tuple(fill(t, r.subject) for t in relation.templates[1:])


def test_case_ids_unique(splits):
    ids = [r.case_id for records in splits.values() for r in records]
    assert len(ids) == len(set(ids))


def test_one_edit_per_fact(splits):
    keys = [(r.subject, r.relation) for records in splits.values() for r in records]
    assert len(keys) == len(set(keys))


def test_subjects_disjoint_across_splits(splits):
    subjects = {split: {r.subject for r in records} for split, records in splits.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not subjects[a] & subjects[b], f"subjects in both {a} and {b}: {sorted(subjects[a] & subjects[b])[:5]}"


def test_every_relation_is_split_roughly_70_15_15(splits):
    total = Counter(r.relation for records in splits.values() for r in records)
    for relation, n in total.items():
        if n >= 20:
            in_train = sum(r.relation == relation for r in splits["train"])
            assert 0.55 <= in_train / n <= 0.85, (relation, in_train, n)


def test_neighbours_stay_in_their_split_and_are_labelled_truly(splits, first_prompt_subject):
    subjects = {split: {r.subject for r in records} for split, records in splits.items()}
    for split, records in splits.items():
        edit_prompts = {r.prompt for r in records}
        for r in records:
            for kind, neighbours in (("out_of_scope", r.out_of_scope), ("hard_out_of_scope", r.hard_out_of_scope)):
                for n in neighbours:
                    where = f"{split}/{r.case_id} {kind} {n.prompt!r}"
                    assert n.prompt in first_prompt_subject, f"{where}: not a first-template prompt of a fact"
                    assert n.prompt in edit_prompts, f"{where}: not the prompt of an edit in split {split}"
                    subject, relation, target = first_prompt_subject[n.prompt]
                    assert n.target == target, f"{where}: labelled {n.target!r}, true answer is {target!r}"
                    assert subject in subjects[split], f"{where}: subject {subject!r} is not in split {split}"
                    if kind == "out_of_scope":
                        assert subject != r.subject and relation != r.relation, where
                    else:
                        assert (subject == r.subject) != (relation == r.relation), where


def test_facts_table_is_well_formed():
    facts = all_facts()
    assert len(facts) >= 600
    for name, relation in RELATIONS.items():
        assert relation.name == name
        assert len(relation.templates) >= 3, name
        assert len(set(relation.templates)) == len(relation.templates), name
        for template in relation.templates:
            assert template.count("{}") == 1 and template == template.strip(), (name, template)
        for subject, target in relation.facts.items():
            assert subject == subject.strip() and target == target.strip() and target, (name, subject)
        assert len(set(relation.facts.values())) >= 2, f"{name}: needs two objects for a counterfactual"
