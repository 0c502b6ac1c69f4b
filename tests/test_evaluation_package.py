"""lit_edit.evaluation: the free score function against hand computation, the typed results' JSON forms against
files earlier versions wrote, the old module paths, and no import cycle through the evaluation modules."""

from __future__ import annotations

import ast
import importlib
import json
import math

import pytest
import torch
from conftest import REPO

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import FineTune, NoEdit
from lit_edit.editors.edited_model import EditedModel
from lit_edit.evaluation.metrics import IGNORE_INDEX
from lit_edit.evaluation.results import EditorResult, LogEntry
from lit_edit.evaluation.scores import EditScores
from lit_edit.evaluation.scoring import TimedEdit, score, unedited_logits
from lit_edit.protocol import metric_states

RECORD = EditRecord(
    case_id="0", prompt="the colour of s1 is", target_new="c5", subject="s1",
    paraphrases=("s1 has the colour",),
    out_of_scope=(LabeledPrompt("the home of s9 is", "h2"), LabeledPrompt("where does s3 live ? in", "h1"),
                  LabeledPrompt("the colour of s4 is", "c2")),
)


def rows_all_match(predicted: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Per row with a labelled position: whether ``predicted == reference`` at every labelled position."""
    matches = []
    for row in range(labels.shape[0]):
        positions = [t for t in range(labels.shape[1]) if labels[row, t] != IGNORE_INDEX]
        if positions:
            matches.append(all(predicted[row, t] == reference[row, t] for t in positions))
    return matches


def hand_figures(editor, batch, edited) -> dict[str, float]:
    """ES, paraphrase ES, DD and retention of one batch, from the logits, row by row."""
    pre_in, in_labels = editor.logits(batch.in_scope)
    pre_out, out_labels = editor.logits(batch.out_of_scope)
    post_in, _ = editor.logits(batch.in_scope, edited)
    post_out, _ = editor.logits(batch.out_of_scope, edited)
    right = rows_all_match(post_in.argmax(-1), in_labels, in_labels)
    para = batch.in_scope_is_paraphrase.tolist()
    pre_right = rows_all_match(pre_out.argmax(-1), out_labels, out_labels)
    post_right = rows_all_match(post_out.argmax(-1), out_labels, out_labels)
    kept = rows_all_match(post_out.argmax(-1), pre_out.argmax(-1), out_labels)
    return {"es": sum(right) / len(right),
            "paraphrase_es": sum(r for r, p in zip(right, para, strict=True) if p) / sum(para),
            "dd": (sum(pre_right) - sum(post_right)) / len(pre_right),
            "retention": sum(kept) / len(kept)}


def computed(scores: EditScores) -> dict[str, float]:
    return {name: float(metric.compute()) for name, metric in scores.as_logged().items()
            if name in ("es", "paraphrase_es", "dd", "retention", "edit_seconds")}


def test_score_of_an_edit_it_makes_matches_hand_computation(tiny_models):
    editor = FineTune(tiny_models["gpt2"], steps=30, lr=1.0e-2)
    batch = editor.prompts.batch([RECORD])
    scores = EditScores()
    edited = score(editor, batch, scores)
    expected = hand_figures(editor, batch, edited)
    assert expected["es"] > 0  # the edit took: the figures below are not all trivially 0
    figures = computed(scores)
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value), key
    assert scores.edit_seconds.weight.item() == len(batch) and figures["edit_seconds"] > 0


def test_score_of_a_given_edit_matches_hand_computation_and_keeps_its_time(tiny_models):
    editor = NoEdit(tiny_models["gpt2"])
    batch = editor.prompts.batch([RECORD])
    generator = torch.Generator().manual_seed(0)
    weights = {name: param.detach() + 0.5 * torch.randn(param.shape, generator=generator)
               for name, param in editor.base_params().items()}
    edited = EditedModel(editor.model, editor.kind, weights)  # a planted edit that changes some answers
    scores = EditScores()
    assert score(editor, batch, scores, pre=unedited_logits(editor, batch), made=TimedEdit(edited, 0.25)) is edited
    figures, expected = computed(scores), hand_figures(editor, batch, edited)
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value), key
    assert figures["edit_seconds"] == pytest.approx(0.25)


def test_editor_score_delegates_to_the_free_function(tiny_models):
    editor = NoEdit(tiny_models["gpt2"])
    batch = editor.prompts.batch([RECORD])
    by_method, by_function = EditScores(compare_targets=True), EditScores(compare_targets=True)
    editor.score(batch, by_method)
    score(editor, batch, by_function)
    states = [metric_states(scores) for scores in (by_method, by_function)]
    for logged in states:
        logged.pop("edit_seconds")  # wall time
    assert states[0] == states[1]
    assert float(by_method.retention.compute()) == 1.0  # the unedited model keeps every answer


def test_log_entries_round_trip_and_write_an_earlier_log_byte_for_byte():
    done = LogEntry.done("ft", ["1", "2"], {"es": {"correct": 1, "total": 2}}, curve={"edits": 2, "es": 0.5})
    failed = LogEntry.failed("ft", ["3"], "EditFailedError: not finite")
    for entry in (done, failed):
        assert LogEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry
    assert list(failed.to_json()) == ["editor", "cases", "status", "reason"]
    lines = (REPO / "docs/results/evaluate_rome.jsonl").read_text().splitlines()[1:-1]  # header, complete mark
    for line in lines:
        assert json.dumps(LogEntry.from_json(json.loads(line)).to_json()) == line
    with pytest.raises(ValueError, match="states"):
        LogEntry.from_json({"editor": "ft", "cases": ["1"], "status": "done"})
    with pytest.raises(ValueError, match="status"):
        LogEntry.from_json({"editor": "ft", "cases": ["1"], "status": "maybe"})


def test_results_records_round_trip_and_write_an_earlier_results_json_byte_for_byte():
    text = (REPO / "docs/results/evaluate_counterfact_ft_mend.json").read_text()
    records = [EditorResult.from_json(record) for record in json.loads(text)]
    assert [r.editor for r in records] == ["unedited", "ft", "mend"]
    assert all(r.edits and r.provenance and r.sequential is None and not r.extra for r in records)
    assert json.dumps([record.to_json() for record in records], indent=1) == text
    newer = {"editor": "ft", "metrics": {"es": 1.0}, "a_later_key": [1, 2]}  # kept as read
    assert EditorResult.from_json(newer).to_json() == newer
    with pytest.raises(ValueError, match="metrics"):
        EditorResult.from_json({"editor": "ft"})


def test_a_results_record_is_tallied_from_log_entries():
    scores = EditScores(compare_targets=True)
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1], [0, 2]]), num_classes=3).float()
    scores.es.update(logits, torch.tensor([[IGNORE_INDEX, 1], [IGNORE_INDEX, 1]]))  # 1 of 2 right
    scores.edit_seconds.update(torch.tensor(0.5), weight=2)
    entries = [LogEntry.done("ft", ["0", "1"], metric_states(scores)), LogEntry.failed("ft", ["2"], "why"),
               LogEntry.failed("other", ["0"], "not ft's")]
    record = EditorResult.from_entries(entries, "ft", protocol={"mode": "batch", "edits_per_batch": 2})
    assert (record.edits, record.failed_edits, record.failures) == (2, 1, [{"cases": ["2"], "reason": "why"}])
    assert record.metrics["es"] == 0.5 and record.metrics["edit_seconds"] == 0.5
    assert math.isnan(record.metrics["dd"])  # nothing out of scope was measured
    nothing = EditorResult.from_entries(entries, "other")
    assert nothing.edits == 0 and all(math.isnan(value) for value in nothing.metrics.values())


@pytest.mark.parametrize(("old", "new"), [("lit_edit.metrics", "lit_edit.evaluation.metrics"),
                                          ("lit_edit.paper_scores", "lit_edit.evaluation.paper_scores"),
                                          ("lit_edit.suite", "lit_edit.evaluation.suite"),
                                          ("lit_edit.report", "lit_edit.evaluation.report")])
def test_old_module_paths_give_the_same_objects(old, new):
    moved, kept = importlib.import_module(new), importlib.import_module(old)
    assert kept.__all__
    for name in kept.__all__:
        assert getattr(kept, name) is getattr(moved, name), name
    if hasattr(moved, "__all__"):
        assert set(moved.__all__) <= set(kept.__all__)


def test_old_class_paths_and_editor_names_still_resolve():
    from lit_edit import editors, evaluation
    from lit_edit.editors import base
    from lit_edit.evaluation import scores

    for path in ("lit_edit.metrics.EditSuccess", "lit_edit.paper_scores.TargetPreference", "lit_edit.suite.EditorSuite"):
        module, name = path.rsplit(".", 1)  # as a config's class_path is resolved
        assert isinstance(getattr(importlib.import_module(module), name), type), path
    assert base.EditScores is editors.EditScores is scores.EditScores is evaluation.EditScores
    assert base.kept_score is scores.kept_score and base.unedited_predictions is scores.unedited_predictions
    assert evaluation.score is score


def module_imports(path, name: str, package: bool) -> set[str]:
    """The lit_edit modules ``name`` imports when it is imported: module level, not under ``TYPE_CHECKING``, with
    the packages that importing a submodule runs."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for part in getattr(node, block, []):
                        visit(part.body if isinstance(part, ast.ExceptHandler) else [part])
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: len(name.split(".")) - node.level + (1 if package else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return {m for m in with_parents if m.startswith("lit_edit")}


def test_no_import_cycle_runs_through_the_evaluation_modules():
    root = REPO / "lit_edit"
    modules = {}
    for path in root.rglob("*.py"):
        parts = ["lit_edit", *path.relative_to(root).with_suffix("").parts]
        package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if package else parts)
        modules[name] = (path, package)
    graph = {name: module_imports(path, name, package) & set(modules) - {name}
             for name, (path, package) in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    evaluation = sorted(name for name in modules if name.startswith("lit_edit.evaluation"))
    assert "lit_edit.evaluation.suite" in evaluation and "lit_edit.evaluation.report" in evaluation
    cycles = [(name, other) for name in evaluation for other in graph[name] if reaches(other, name)]
    assert not cycles, cycles
    assert not reaches("lit_edit.evaluation.report", "lit_edit.evaluation.suite")  # the suite uses the report
    assert graph["lit_edit.evaluation"] == set()  # names load on first use: `lit-edit report --help` stays light



def test_a_report_across_runs_names_the_run_only_where_one_editor_name_comes_from_two(tmp_path):
    import argparse

    from lit_edit.evaluation import report

    for run, editors in (("fever_editors", ("ft", "cache")), ("fever_cache_e32", ("cache",))):
        records = [{"editor": name, "metrics": {"es": 1.0, "dd": 0.1}} for name in editors]
        (tmp_path / f"{run}.json").write_text(json.dumps(records))
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    report.main(parser.parse_args([str(tmp_path / "fever_editors.json"), str(tmp_path / "fever_cache_e32.json"),
                                   "--out", str(tmp_path / "out"), "--title", "FEVER"]))
    rows = [row.split(" | ")[0].lstrip("| ") for row in (tmp_path / "out" / "results.md").read_text().splitlines()[2:]]
    assert rows == ["ft", "cache (fever_editors)", "cache (fever_cache_e32)"]
    assert (tmp_path / "out" / "es_dd.png").read_bytes()[:4] == b"\x89PNG"


def test_the_es_plot_can_read_locality_as_changed_predictions_where_every_dd_is_zero(tmp_path):
    """On zsRE every accuracy DD is 0 (the small model answers no NQ question right), so the ES plot's x axis is
    1 - retention there; a record's point sits at that value, and an unknown axis is refused."""
    import argparse

    import pytest

    from lit_edit.evaluation import report

    records = [{"editor": "mend", "metrics": {"es": 0.5, "dd": 0.0, "retention": 0.75}},
               {"editor": "cache", "metrics": {"es": 1.0, "dd": 0.0, "retention": 0.25}}]
    (tmp_path / "zsre.json").write_text(json.dumps(records))
    parsed = report.read_results([tmp_path / "zsre.json"])
    assert [report._locality(r, "changed") for r in parsed] == [0.25, 0.75]
    assert [report._locality(r, "dd") for r in parsed] == [0.0, 0.0]
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    report.main(parser.parse_args([str(tmp_path / "zsre.json"), "--out", str(tmp_path / "out"), "--against", "changed"]))
    assert (tmp_path / "out" / "es_dd.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="against must be one of"):
        report.plot_es_dd(parsed, tmp_path / "x.png", against="retention")
