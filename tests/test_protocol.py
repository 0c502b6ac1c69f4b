"""Evaluation protocols on a tiny model: batch versus single editing, sequential retention, resume, failed edits."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import synthetic_records
from lightning.pytorch import Trainer

from lit_edit.__main__ import main
from lit_edit.data.datamodule import EditDataModule
from lit_edit.data.readers import write_edit_records
from lit_edit.data.records import LabeledPrompt
from lit_edit.editors import EditCache, FineTune
from lit_edit.editors.edited_model import EditFailedError
from lit_edit.editors.memory import EditMemory
from lit_edit.protocol import read_log
from lit_edit.report import load_results
from lit_edit.suite import EditorSuite

PNG = b"\x89PNG\r\n\x1a\n"


class Crash(Exception):
    """Stands for the process dying halfway through an evaluation."""


class CountingFineTune(FineTune):
    """FT that records the case ids of every edit it makes, can fail one case, and can crash once."""

    unscored_hparams = frozenset({"workers"})
    calls: list[list[str]]

    def __init__(self, *args, workers: int = 1, **kwargs) -> None:
        """``workers`` stands for a setting that changes an editor's speed, not its edits."""
        super().__init__(*args, **kwargs)
    fail_case: str | None = None
    bug_case: str | None = None
    crash_at: int | None = None  # set after construction: not part of the run's settings (its fingerprint)

    def edit(self, batch, on=None):
        cases = [record.case_id for record in batch.records]
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise Crash(f"killed before edit {cases}")
        self.calls.append(cases)
        if self.fail_case in cases:
            raise EditFailedError("the edit produced non-finite values")
        if self.bug_case in cases:
            raise RuntimeError("an index out of range: a bug, not a refused edit")
        return super().edit(batch, on=on)


def evaluate(spec, records, output: Path, *, k: int = 1, sequential: bool = False, measure_every: int = 1,
             fail_case: str | None = None, crash_at: int | None = None, steps: int = 25, workers: int = 1,
             bug_case: str | None = None) -> tuple[list[dict], CountingFineTune]:
    data_file = write_edit_records(records, output.parent / "edits.json")
    editor = CountingFineTune(spec, steps=steps, lr=1.0e-2, workers=workers)
    editor.calls, editor.fail_case, editor.crash_at, editor.bug_case = [], fail_case, crash_at, bug_case
    suite = EditorSuite({"ft": editor}, output=str(output), sequential=sequential, measure_every=measure_every)
    data = EditDataModule(test=str(data_file), model=spec, eval_edits_per_batch=k)
    trainer = Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.test(suite, datamodule=data, verbose=False)
    return suite.results, editor


def test_batch_mode_makes_all_k_edits_before_measuring(knowing_gpt2, tmp_path):
    # Two edits of the same fact to different objects: alone, each succeeds; made together, they cannot both.
    first = synthetic_records()[0]
    second = replace(first, case_id="rival", target_new=next(o for o in ("c0", "c1", "c2")
                                                             if o not in (first.target_new, first.target_true)))
    single, editor = evaluate(knowing_gpt2, [first, second], tmp_path / "single" / "r.json", k=1)
    assert editor.calls == [[first.case_id], ["rival"]] and single[0]["metrics"]["es"] > 0.9
    batch, editor = evaluate(knowing_gpt2, [first, second], tmp_path / "batch" / "r.json", k=2)
    assert editor.calls == [[first.case_id, "rival"]]
    assert batch[0]["metrics"]["es"] <= 0.5  # one model, measured after both edits: at most one target wins
    assert batch[0]["protocol"] == {"mode": "batch", "edits_per_batch": 2}

    # Readable without JSON: each run's table and ES-DD plot, and a report across both batch sizes.
    assert (tmp_path / "batch" / "r.md").read_text().startswith("| editor | ES |")
    assert (tmp_path / "batch" / "r_es_dd.png").read_bytes()[:8] == PNG
    main(["report", str(tmp_path / "single" / "r.json"), str(tmp_path / "batch" / "r.json"),
          "--out", str(tmp_path / "report")])
    assert (tmp_path / "report" / "batch_sizes.png").read_bytes()[:8] == PNG
    assert len((tmp_path / "report" / "results.md").read_text().splitlines()) == 4  # header, rule, two runs


def test_a_chain_of_edits_is_made_at_once_and_its_portability_asked_after_all_of_them(knowing_gpt2, tmp_path):
    first, second, alone = synthetic_records()[:3]
    # MQuAKE-style: two chained edits; the chain's question is answerable only once the second edit is made too.
    question = LabeledPrompt(second.prompt, second.target_new)
    chain = [replace(first, group="chain", portability=(question,)), replace(second, group="chain")]
    results, editor = evaluate(knowing_gpt2, [*chain, alone], tmp_path / "r.json", k=1)
    assert editor.calls == [[first.case_id, second.case_id], [alone.case_id]]
    metrics = results[0]["metrics"]
    assert metrics["pre_portability"] == 0.0 and metrics["portability"] == 1.0
    assert "| portability | pre-edit port. |" in (tmp_path / "r.md").read_text()


def test_sequential_retention_is_measured_on_the_model_after_the_last_edit(knowing_gpt2, tmp_path):
    first = synthetic_records()[0]
    overwrite = replace(first, case_id="overwrite", target_new=next(o for o in ("c0", "c1", "c2")
                                                                     if o not in (first.target_new, first.target_true)))
    other = synthetic_records()[3]
    results, editor = evaluate(knowing_gpt2, [first, other, overwrite], tmp_path / "r.json", sequential=True)
    curve = results[0]["sequential"]
    assert [point["edits"] for point in curve] == [1, 2, 3]
    assert curve[0]["first_edit_es"] == 1.0 and curve[1]["first_edit_es"] == 1.0
    assert curve[2]["first_edit_es"] == 0.0  # the third edit overwrote the first: measured after it, not before
    assert curve[2]["dd"] >= 0.0 and results[0]["metrics"]["es"] > 0.9  # each edit worked when it was made
    assert results[0]["protocol"]["mode"] == "sequential"
    assert (tmp_path / "r_retention.png").read_bytes()[:8] == PNG


def test_an_interrupted_evaluation_resumes_without_redoing_or_double_counting(knowing_gpt2, tmp_path):
    records = synthetic_records()[:6]
    reference, _ = evaluate(knowing_gpt2, records, tmp_path / "reference" / "r.json")
    output = tmp_path / "resumed" / "r.json"
    with pytest.raises(Crash):
        evaluate(knowing_gpt2, records, output, crash_at=3)
    log = output.with_suffix(".jsonl")
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join([*lines, lines[-1]]))  # a second run, started before the first had stopped, logged it too
    # The edits made so far can be reported before the run is resumed (a batch logged twice counts once).
    (so_far,) = load_results([output.with_suffix(".jsonl")])
    assert so_far["edits"] == 3 and so_far["finished"] is False and 0.0 <= so_far["metrics"]["es"] <= 1.0
    results, editor = evaluate(knowing_gpt2, records, output)
    assert editor.calls == [["3"], ["4"], ["5"]]  # the three finished edits were not redone
    assert results[0]["edits"] == 6
    for key in ("es", "paraphrase_es", "dd", "retention", "edit_nll"):
        assert results[0]["metrics"][key] == pytest.approx(reference[0]["metrics"][key], rel=1e-6), key
    # A finished run's log reports what its results JSON holds.
    (logged,) = load_results([output.with_suffix(".jsonl")])
    assert logged["finished"] is True and logged["edits"] == 6
    assert logged["metrics"] == pytest.approx(results[0]["metrics"], nan_ok=True)
    # A finished run is not resumed: the next one starts afresh.
    _, editor = evaluate(knowing_gpt2, records, output)
    assert len(editor.calls) == 6


def test_a_run_resumes_across_speed_settings_but_not_across_scored_ones(knowing_gpt2, tmp_path):
    """Hyperparameters an editor declares unscored (a target cache, a worker count) are left out of the fingerprint;
    any other changed hyperparameter means other edits, so the old log is not resumed."""
    records = synthetic_records()[:4]
    output = tmp_path / "r.json"
    with pytest.raises(Crash):
        evaluate(knowing_gpt2, records, output, crash_at=2)  # edits 0 and 1 logged
    with pytest.raises(Crash):
        evaluate(knowing_gpt2, records, output, crash_at=1, steps=24)  # afresh: edit 0 logged
    _, editor = evaluate(knowing_gpt2, records, output, steps=24, workers=4)
    assert editor.calls == [["1"], ["2"], ["3"]]


def test_an_interrupted_sequential_run_resumes_from_its_last_curve_point(knowing_gpt2, tmp_path):
    records = synthetic_records()[:5]
    reference, _ = evaluate(knowing_gpt2, records, tmp_path / "reference" / "r.json", sequential=True, measure_every=2)
    output = tmp_path / "resumed" / "r.json"
    with pytest.raises(Crash):
        evaluate(knowing_gpt2, records, output, sequential=True, measure_every=2, crash_at=3)
    with pytest.raises(ValueError, match="sequential run"):  # its curve is not in the log: no half report
        load_results([output.with_suffix(".jsonl")])
    results, editor = evaluate(knowing_gpt2, records, output, sequential=True, measure_every=2)
    assert editor.calls == [["2"], ["3"], ["4"]]  # weights were saved after edit 2; edit 3 is made again
    assert results[0]["edits"] == 5
    got, expected = results[0]["sequential"], reference[0]["sequential"]
    assert [p["edits"] for p in got] == [p["edits"] for p in expected] == [2, 4, 5]
    for point, want in zip(got, expected, strict=True):
        for key in ("es", "first_edit_es", "dd", "retention"):
            assert point[key] == pytest.approx(want[key], abs=1e-6), (point, want)


def test_a_memory_based_editor_edits_sequentially_into_one_growing_memory(knowing_gpt2, tmp_path):
    records = synthetic_records()[:3]
    output = tmp_path / "r.json"
    suite = EditorSuite({"cache": EditCache(knowing_gpt2, epsilon=1.0)}, output=str(output), sequential=True,
                        measure_every=1)
    data = EditDataModule(test=str(write_edit_records(records, tmp_path / "edits.json")), model=knowing_gpt2)
    Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
            enable_model_summary=False).test(suite, datamodule=data, verbose=False)
    curve = suite.results[0]["sequential"]
    assert [point["edits"] for point in curve] == [1, 2, 3]
    # The first edit is still answered after the later ones: they were added to its memory, not to a new one.
    assert curve[0]["first_edit_es"] > 0 and curve[2]["first_edit_es"] == curve[0]["first_edit_es"]
    memory = EditMemory.load(tmp_path / "r_sequential" / "cache.edit-3.memory.pt")  # kept with the curve, to resume
    assert [d.case_id for d in memory.descriptors] == [r.case_id for r in records]


def test_a_failed_edit_is_recorded_with_its_reason_and_the_run_goes_on(knowing_gpt2, tmp_path, capsys):
    records = synthetic_records()[:4]
    results, editor = evaluate(knowing_gpt2, records, tmp_path / "r.json", fail_case="2")
    assert len(editor.calls) == 4 and results[0]["edits"] == 3 and results[0]["failed_edits"] == 1
    assert results[0]["failures"] == [{"cases": ["2"], "reason": "EditFailedError: the edit produced non-finite values"}]
    (logged,) = load_results([tmp_path / "r.jsonl"])
    assert (logged["edits"], logged["failed_edits"], logged["failures"]) == (3, 1, results[0]["failures"])
    table = capsys.readouterr().out
    assert re.search(r"\| ft \|.*\| 1 \|", table)  # the table's last column counts failed edits


def test_a_bug_in_an_edit_stops_the_run_instead_of_counting_as_a_failed_edit(knowing_gpt2, tmp_path):
    """Only a refused edit (EditFailedError) is a failed edit; any other error is a bug and must be seen."""
    records = synthetic_records()[:3]
    output = tmp_path / "r.json"
    with pytest.raises(RuntimeError, match="a bug, not a refused edit"):
        evaluate(knowing_gpt2, records, output, bug_case="1")
    _, entries, _ = read_log(output.with_suffix(".jsonl"))
    assert [(entry["cases"], entry["status"]) for entry in entries] == [(["0"], "done")]
    assert not Path(f"{output}.lock").exists()  # the failed run let go of its output: the rerun below may start
    results, editor = evaluate(knowing_gpt2, records, output)
    assert editor.calls == [["1"], ["2"]] and results[0]["edits"] == 3 and results[0]["failed_edits"] == 0


def test_results_carry_what_reproduces_them(knowing_gpt2, tmp_path):
    results, _ = evaluate(knowing_gpt2, synthetic_records()[:2], tmp_path / "r.json")
    provenance = json.loads((tmp_path / "r.json").read_text())[0]["provenance"]
    assert results[0]["provenance"] == provenance
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["model_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["data_sha256"])
    assert {"python", "torch", "lightning", "transformers", "lit-edit"} <= set(provenance["versions"])


def test_tensorboard_gets_the_scalars_the_retention_curve_and_before_after_text(knowing_gpt2, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_edit.callbacks import EditExamples

    data_file = write_edit_records(synthetic_records()[:3], tmp_path / "edits.json")
    editor = FineTune(knowing_gpt2, steps=25, lr=1.0e-2)
    suite = EditorSuite({"ft": editor}, output=str(tmp_path / "r.json"), sequential=True, measure_every=1)
    logger = TensorBoardLogger(tmp_path / "logs", name="evaluate")
    trainer = Trainer(accelerator="cpu", logger=logger, inference_mode=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[EditExamples(count=2, max_new_tokens=1)])
    trainer.test(suite, datamodule=EditDataModule(test=str(data_file), model=knowing_gpt2), verbose=False)
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "scalars": 0}).Reload()
    assert {"ft/es", "ft/efficacy", "ft/dd_same_subject"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("ft/sequential_first_edit_es")] == [1, 2, 3]
    text = events.Tensors("edit_examples/ft/text_summary")[0].tensor_proto.string_val[0].decode()
    record = synthetic_records()[0]
    assert f"| {record.prompt} | {record.target_new} | {record.target_true} | {record.target_new} |" in text


def test_before_after_examples_make_a_chain_at_once_and_ask_its_question(knowing_gpt2):
    from lit_edit.callbacks import EditExamples

    first, second = synthetic_records()[:2]
    question = LabeledPrompt(second.prompt, second.target_new)  # answerable only after the chain's second edit
    chain = [replace(first, group="chain", portability=(question,)), replace(second, group="chain")]
    editor = FineTune(knowing_gpt2, steps=25, lr=1.0e-2)
    text = EditExamples(max_new_tokens=1).examples(editor, chain, editor.prompts.batch)
    assert f"| {first.prompt} | {first.target_new} | {first.target_true} | {first.target_new} |" in text
    assert text.endswith(f"| {question.prompt} | {question.target} | {second.target_true} | {question.target} |")


def test_settings_that_change_speed_not_edits_are_declared_unscored():
    from lit_edit.editors import ENN, KE, MEMIT, MEND, ROME

    assert all("gradient_checkpointing" in editor.unscored_hparams for editor in (MEND, ENN, KE, ROME, MEMIT))
    assert "cache_targets" in ROME.unscored_hparams and "cache_targets" in MEMIT.unscored_hparams
    assert "steps" not in ROME.unscored_hparams


def test_before_after_examples_show_an_edit_with_non_finite_outputs_as_failed(tiny_models):
    from lit_edit.callbacks import EditExamples
    from lit_edit.editors.edited_model import EditedModel

    class Overflowing(FineTune):  # finite weights, non-finite logits
        def edit(self, batch):
            return EditedModel(self.model, self.kind, {name: self.base_params()[name] * 1.0e30
                                                       for name in self.editable_names})

    record = synthetic_records()[0]
    editor = Overflowing(tiny_models["gpt2"])
    text = EditExamples(max_new_tokens=1).examples(editor, [record], editor.prompts.batch)
    assert f"| {record.prompt} | {record.target_new} | edit failed: the edited model's logits" in text


def test_a_log_written_before_a_metric_existed_still_tallies():
    """docs/results carries logs from earlier versions: their entries lack token_retention, which stays unmeasured."""
    from lit_edit.protocol import tally

    entry = json.loads(Path("docs/results/evaluate_rome.jsonl").read_text().splitlines()[1])
    entry["states"].pop("token_retention", None)
    scores, failures = tally([entry], entry["editor"])
    assert not failures and scores.es.compute().item() >= 0
    assert scores.token_retention.compute().isnan()
