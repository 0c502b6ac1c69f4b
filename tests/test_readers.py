"""Readers: each benchmark format maps to the expected EditRecords, and bad input is reported precisely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lit_edit.data.readers import (
    READERS,
    detect_format,
    iter_json_records,
    load_edit_records,
    read_counterfact_easyedit,
    read_edit_records,
    read_knowedit,
    read_mquake,
    read_rome_counterfact,
    read_zsre_mend,
    write_edit_records,
)
from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt

FIXTURES = Path(__file__).parent / "fixtures"
DATA_DIR = Path(os.environ.get("LIT_EDIT_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def test_zsre_mend_10000_variant() -> None:
    records = read_zsre_mend(FIXTURES / "zsre_mend.json")
    assert [r.case_id for r in records] == ["0", "1", "17"]
    assert records[0] == EditRecord(
        case_id="0",
        prompt="What is the native language of Halvard Brenning?",
        target_new="Danish",
        subject="Halvard Brenning",
        target_true=None,
        relation=None,
        paraphrases=("What is Halvard Brenning's mother tongue?",),
        out_of_scope=(LabeledPrompt("Who wrote the song under the lilac tree?", "Mara Ellison"),),
        hard_out_of_scope=(),
    )
    assert records[1].out_of_scope == (LabeledPrompt("How many islands are in the orrin archipelago", "twelve"),)
    assert records[2].target_new == "Southern Premier League"
    assert records[2].subject == "Kestrel Bay FC"


def test_zsre_mend_full_variant() -> None:
    records = read_zsre_mend(FIXTURES / "zsre_mend_full.json")
    assert [r.case_id for r in records] == ["0", "1", "2"]  # no case_id in this variant: position
    assert records[0] == EditRecord(
        case_id="0",
        prompt="What is the product made by Orvana Textiles?",
        target_new="bicycle",
        subject="Orvana Textiles",
        target_true="linen",
        paraphrases=("What does Orvana Textiles produce?",),
        out_of_scope=(LabeledPrompt("Who sang lead vocals on river of glass", "Tom Adair"),),
    )
    assert records[1].target_new == "Cygnus"  # MEND's leading space is dropped
    assert records[1].target_true == "Lyra"
    assert records[2].target_true == "Hamburg"  # the true answer, not the model's prediction "Berlin"
    assert records[2].out_of_scope[0].prompt == "2019 winner of the tallis piano prize"


def test_counterfact_easyedit() -> None:
    records = read_counterfact_easyedit(FIXTURES / "counterfact_easyedit.json")
    assert [r.case_id for r in records] == ["4", "9", "23"]
    assert records[0] == EditRecord(
        case_id="4",
        prompt="Tomas Ekberg plays the",
        target_new="violin",
        subject="Tomas Ekberg",
        target_true="drums",
        relation=None,
        paraphrases=("After years of touring, Tomas Ekberg is best known for playing the",),
        out_of_scope=(),
        hard_out_of_scope=(LabeledPrompt("Ringo Starr plays the", "drums"),),
    )
    assert records[2].hard_out_of_scope == (LabeledPrompt("The official language of Slovakia is", "Slovak"),)


def test_rome_counterfact() -> None:
    records = read_rome_counterfact(FIXTURES / "rome_counterfact.json")
    assert [r.case_id for r in records] == ["0", "1", "2"]
    assert records[0] == EditRecord(
        case_id="0",
        prompt="The mother tongue of Colette Vasseur is",
        target_new="English",
        subject="Colette Vasseur",
        target_true="French",
        relation="P103",
        paraphrases=("The film premiered in Lyon that spring. Colette Vasseur, a native",
                     "She kept a diary throughout the war. Colette Vasseur spoke the language"),
        out_of_scope=(LabeledPrompt("Graham Whitlock is a native speaker of", "English"),
                      LabeledPrompt("The mother tongue of Edith Pembrook is", "English"),
                      LabeledPrompt("Arthur Kinsley, speaker of", "English")),
        hard_out_of_scope=(LabeledPrompt("The mother tongue of Henri Dufresne is", "French"),
                           LabeledPrompt("Marcel Aubry is a native speaker of", "French"),
                           LabeledPrompt("The native language of Juliette Roche is", "French")),
    )
    assert records[1].prompt == "Rui Sandoval plays in the position of"
    assert records[1].hard_out_of_scope[1] == LabeledPrompt("Luca Benedetti, the", "midfielder")
    assert records[2].relation == "P30"
    assert records[2].out_of_scope[1] == LabeledPrompt("Lake Ormun belongs to the continent of", "Asia")


def test_lit_edit_jsonl() -> None:
    records = read_edit_records(FIXTURES / "lit_edit_records.jsonl")
    assert records[0] == EditRecord(
        case_id="a1",
        prompt="The capital of Norvalia is",
        target_new="Brenmoor",
        subject="Norvalia",
        target_true="Saltby",
        relation="P36",
        paraphrases=("Norvalia's capital city is",),
        out_of_scope=(LabeledPrompt("The capital of France is", "Paris"),),
        hard_out_of_scope=(LabeledPrompt("The currency of Norvalia is", "krona"),),
    )
    assert records[1] == EditRecord(case_id="1", prompt="Ada Quell works as a", target_new="pilot")
    assert records[2].case_id == "7"
    assert records[2].paraphrases == ("The sport of Velmouth Rovers is", "Velmouth Rovers compete in")


def test_users_prompt_target_jsonl() -> None:
    records = load_edit_records(FIXTURES / "prompt_target.jsonl", skip_invalid=True)  # the third is malformed
    assert detect_format(FIXTURES / "prompt_target.jsonl") == "prompt_target"
    assert records == [
        EditRecord(case_id="0", prompt="The Mona Lisa was painted by", target_new="Picasso",
                   paraphrases=("The painter of the Mona Lisa is",),
                   out_of_scope=(LabeledPrompt("The Starry Night was painted by", "Vincent van Gogh"),)),
        EditRecord(case_id="1", prompt="The capital of Norvalia is", target_new="Brenmoor", subject="Norvalia",
                   target_true="Saltby"),
    ]
    with pytest.raises(EditDataError, match=r"prompt_target.jsonl: record 2 \(line 3\): field 'neighbours\[0\].target'"):
        load_edit_records(FIXTURES / "prompt_target.jsonl")


def test_mquake_chains_are_groups_with_multi_hop_questions_and_untouched_hops() -> None:
    records = read_mquake(FIXTURES / "mquake.json")
    assert [(r.case_id, r.group) for r in records] == [("7:0", "7"), ("8:0", "8"), ("8:1", "8")]
    assert records[0] == EditRecord(
        case_id="7:0", prompt="Halvard Brenning is a citizen of", target_new="Norvalia", subject="Halvard Brenning",
        target_true="Denmark", relation="P27",
        paraphrases=("What is the country of citizenship of Halvard Brenning?",),
        # The second hop is not edited (orig.new_triples against orig.edit_triples): it keeps its answer.
        out_of_scope=(LabeledPrompt("The head of state of Norvalia is", "Ilse Varn"),),
        portability=(LabeledPrompt("Who is the head of state of the country Halvard Brenning is a citizen of?", "Ilse Varn"),
                     LabeledPrompt("Who heads the state whose citizen Halvard Brenning is?", "Ilse Varn"),
                     LabeledPrompt("Halvard Brenning is a citizen of a country whose head of state is who?", "Ilse Varn")),
        group="7",
    )
    chain = records[1:]
    assert [r.prompt for r in chain] == ["The author of Under the Lilac Tree is", "Mara Ellison was born in"]
    assert chain[0].portability == (LabeledPrompt("Where was the author of Under the Lilac Tree born?", "Saltby"),)
    assert chain[1].portability == () and chain[1].paraphrases == ()  # asked once per chain; no question given
    # Both hops of case 8 are edited (found by cloze, no triples): it borrows case 7's untouched hop.
    assert chain[0].out_of_scope == records[0].out_of_scope and chain[1].out_of_scope == ()


def test_knowedit_portability_and_locality_categories() -> None:
    counterfact, zsre, wikibio = read_knowedit(FIXTURES / "knowedit.json")
    assert counterfact == EditRecord(
        case_id="0", prompt="The name of the position held by Frederic Piesch is", target_new="Archbishop of Saltby",
        subject="Frederic Piesch", target_true="mayor of Brenmoor",
        hard_out_of_scope=(
            LabeledPrompt("The gender of Frederic Piesch is", "male"),
            LabeledPrompt("The name of the position held by Frederic Piesch, which is not Archbishop of Saltby, is",
                          "mayor of Brenmoor")),
        portability=(LabeledPrompt("The name of the position held by Frederic of Pieschen is", "Archbishop of Saltby"),),
    )
    assert zsre.target_true == "Aspidoceratidae" and zsre.paraphrases == ("What family are Epaspidoceras?",)
    assert zsre.hard_out_of_scope == (LabeledPrompt("The taxon rank of Epaspidoceras is", "genus"),)  # first alias
    assert zsre.portability == (LabeledPrompt("What is the common name for the family Epaspidoceras belongs to?",
                                              "Owlet moths"), LabeledPrompt("Is Epaspidoceras a moth?", "yes"))
    assert (wikibio.subject, wikibio.target_new) == ("halvard brenning", "He studied in Saltby and exhibited widely.")
    assert wikibio.prompt.startswith("This is a Wikipedia passage about halvard brenning.")


@pytest.mark.parametrize(("name", "reader", "index", "line", "field"), [
    ("zsre_missing_alt.json", read_zsre_mend, 2, 20, "alt"),
    ("counterfact_easyedit_bad_rephrase.json", read_counterfact_easyedit, 1, 11, "rephrase_prompt"),
    ("rome_missing_target_new_str.json", read_rome_counterfact, 1, 37, "requested_rewrite.target_new.str"),
    ("lit_edit_missing_target.jsonl", read_edit_records, 1, 3, "target_new"),
    ("mquake_missing_new_answer.json", read_mquake, 1, 3, "new_answer"),
    ("knowedit_empty_answer.json", read_knowedit, 1, 3, "portability.Reasoning[0].ground_truth"),
])
def test_malformed_record_is_located(name: str, reader, index: int, line: int, field: str) -> None:
    path = FIXTURES / name
    assert path.read_text().splitlines()[line - 1].strip().startswith(("{", "}, {"))  # the fixture is as described
    with pytest.raises(EditDataError) as info:
        reader(path)
    message = str(info.value)
    assert name in message
    assert f"record {index} (line {line})" in message
    assert f"field '{field}'" in message
    assert (info.value.record, info.value.line, info.value.field_name) == (index, line, field)


def test_malformed_record_can_be_skipped() -> None:
    with pytest.warns(UserWarning, match="record 2 \\(line 20\\)"):
        records = read_zsre_mend(FIXTURES / "zsre_missing_alt.json", skip_invalid=True)
    assert [r.case_id for r in records] == ["0", "1"]


def test_invalid_json_names_file_and_line() -> None:
    with pytest.raises(ValueError) as info:
        read_edit_records(FIXTURES / "invalid_json.json")
    assert "invalid_json.json" in str(info.value) and "line 10" in str(info.value)


def test_record_start_lines_in_irregular_layout(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text('[ {"a": 1}, {"b": 2},\n\n  {"c": [\n3]}\n, "x"\n]\n')
    assert list(iter_json_records(path)) == [(0, 1, {"a": 1}), (1, 1, {"b": 2}), (2, 3, {"c": [3]}), (3, 5, "x")]
    path.write_text("[]")
    assert list(iter_json_records(path)) == []
    for bad in ('[{"a": 1},]', '[{"a": 1} {"b": 2}]', '[{"a": 1}] []', '{"a": 1}', '[{"a": 1}'):
        path.write_text(bad)
        with pytest.raises(EditDataError, match="records.json"):
            list(iter_json_records(path))


def test_non_object_record_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "numbers.json"
    path.write_text("[\n1\n]")
    with pytest.raises(EditDataError, match=r"record 0 \(line 2\): field '<record>'"):
        read_zsre_mend(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_write_read_round_trip(tmp_path: Path, suffix: str) -> None:
    records = (read_rome_counterfact(FIXTURES / "rome_counterfact.json")
               + read_zsre_mend(FIXTURES / "zsre_mend_full.json")
               + read_edit_records(FIXTURES / "lit_edit_records.jsonl")
               + read_mquake(FIXTURES / "mquake.json") + read_knowedit(FIXTURES / "knowedit.json"))
    path = write_edit_records(records, tmp_path / "out" / f"records{suffix}")
    assert read_edit_records(path) == records
    assert load_edit_records(path) == records
    if suffix == ".json":
        assert isinstance(json.loads(path.read_text()), list)
    else:
        assert len(path.read_text().splitlines()) == len(records)


@pytest.mark.parametrize(("name", "fmt"), [
    ("zsre_mend.json", "zsre_mend"),
    ("zsre_mend_full.json", "zsre_mend"),
    ("counterfact_easyedit.json", "counterfact_easyedit"),
    ("rome_counterfact.json", "rome_counterfact"),
    ("lit_edit_records.jsonl", "lit_edit"),
    ("mquake.json", "mquake"),
    ("mquake_hard.json", "mquake"),
    ("knowedit.json", "knowedit"),
])
def test_auto_format_detection(name: str, fmt: str) -> None:
    path = FIXTURES / name
    assert detect_format(path) == fmt
    assert load_edit_records(path) == READERS[fmt](path) == load_edit_records(path, format=fmt)


def test_undetectable_or_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown_format.json.*cannot tell"):
        load_edit_records(FIXTURES / "unknown_format.json")
    with pytest.raises(ValueError, match="unknown edit data format"):
        load_edit_records(FIXTURES / "zsre_mend.json", format="zsre")
    with pytest.raises(EditDataError, match="field 'src'"):  # an explicit format is trusted, then validated
        load_edit_records(FIXTURES / "counterfact_easyedit.json", format="zsre_mend")


def test_missing_file_messages(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json") as info:
        load_edit_records(missing)
    assert "shared/data" not in str(info.value)
    shared = tmp_path / "shared" / "data" / "zsre" / "gone.json"
    with pytest.raises(FileNotFoundError, match="gone.json") as info:
        read_zsre_mend(shared)
    assert "../shared/data" in str(info.value)


REAL_FILES = {  # path: (format, record count, indices of records that are malformed in the published file)
    "zsre/zsre_mend_train_10000.json": ("zsre_mend", 10000, []),
    "zsre/zsre_mend_train-1k.json": ("zsre_mend", 1000, [534, 723]),  # empty `alt` (MEND's "female >>  ")
    "counterfact/counterfact-train.json": ("counterfact_easyedit", 10000, []),
    "counterfact/counterfact-val.json": ("counterfact_easyedit", 1919, []),
}


@pytest.mark.skipif(not DATA_DIR.exists(), reason=f"benchmark data not found at {DATA_DIR} (set LIT_EDIT_DATA_DIR)")
@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_benchmark_files(name: str) -> None:
    path = DATA_DIR / name
    fmt, count, malformed = REAL_FILES[name]
    assert detect_format(path) == fmt
    assert sum(1 for _ in iter_json_records(path)) == count
    if malformed:
        with pytest.raises(EditDataError, match=f"record {malformed[0]} .*field 'alt'"):
            load_edit_records(path)
        with pytest.warns(UserWarning) as caught:
            records = load_edit_records(path, skip_invalid=True)
        assert [str(w.message).count(f"record {i} ") for w, i in zip(caught, malformed, strict=True)] == [1, 1]
    else:
        records = load_edit_records(path)
    assert len(records) == count - len(malformed)
    assert len({r.case_id for r in records}) == len(records)
    for r in records:
        assert r.prompt.strip() and r.target_new == r.target_new.strip() and r.target_new
        assert len(r.paraphrases) == 1 and len(r.out_of_scope) + len(r.hard_out_of_scope) == 1
        assert not any(p.prompt.startswith("nq question") for p in r.out_of_scope)
    if name.endswith("-1k.json"):
        assert all(r.target_true for r in records)
