"""Evaluation on several devices: every edit exactly once over the ranks, the single-process figures, one log, and a
resume that does not care how many devices the earlier run had.

The two-rank runs are ``python evaluate.py --trainer.devices 2 --trainer.strategy ddp`` in a subprocess on the CPU
(Lightning starts the second rank itself), as a user or a SLURM job runs them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_bounded

from lit_edit.cli import CONFIG_DIR
from lit_edit.config_files import load_config
from lit_edit.data.sampling import DealtBatches
from lit_edit.editors.base import EditScores
from lit_edit.protocol import metric_states, read_log
from lit_edit.report import load_results

EDITS = 5  # odd: the ranks get three and two batches, and nothing may be padded or counted twice
# Set by a distributed launcher; inherited, they would make evaluate.py wait for ranks that nobody starts.
LAUNCHER_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"}
COMPARED = ("es", "paraphrase_es", "dd", "retention", "edit_nll", "pre_es")


def test_dealt_batches_give_every_batch_to_exactly_one_rank():
    dealt = [list(DealtBatches(EDITS, 2, rank)) for rank in range(2)]
    assert dealt == [[0, 2, 4], [1, 3]]
    assert [len(DealtBatches(EDITS, 2, rank)) for rank in range(2)] == [3, 2]
    assert list(DealtBatches(EDITS)) == list(range(EDITS))
    with pytest.raises(ValueError, match="rank 2"):
        DealtBatches(EDITS, 2, 2)


@pytest.fixture(scope="module")
def run_evaluate(knowing_gpt2, synthetic_splits, tmp_path_factory):
    """``run(work, devices)`` -> the results JSON of evaluate.py (unedited and FT on five synthetic edits)."""
    config = load_config(CONFIG_DIR / "evaluate" / "default.yaml")
    model = {"name": knowing_gpt2.name, "editable": knowing_gpt2.editable}
    config["model"]["editors"] = {
        "unedited": {"class_path": "lit_edit.editors.NoEdit", "init_args": {"model": model}},
        "ft": {"class_path": "lit_edit.editors.FineTune", "init_args": {"model": model, "steps": 10, "lr": 1.0e-2}},
    }
    config["data"].update(test=str(synthetic_splits["test"]), limit_test=EDITS)
    config["trainer"].update(logger=False, callbacks=[], enable_progress_bar=False, enable_model_summary=False)
    path = tmp_path_factory.mktemp("evaluate_config") / "eval.yaml"
    path.write_text(yaml.safe_dump(config))

    def run(work: Path, devices: int) -> list[dict]:
        work.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(REPO / "evaluate.py"), "--config", str(path), "--trainer.devices", str(devices)]
        if devices > 1:
            args += ["--trainer.strategy", "ddp"]
        env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES}
        env["OMP_NUM_THREADS"] = "1"
        done = run_bounded(args, cwd=work, env=env)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return json.loads((work / "results" / "evaluate.json").read_text())

    return run


def by_editor(results: list[dict]) -> dict[str, dict]:
    return {record["editor"]: record for record in results}


@pytest.mark.slow
def test_two_ranks_evaluate_like_one_and_resume_whatever_the_device_count(run_evaluate, tmp_path):
    single = by_editor(run_evaluate(tmp_path / "single", 1))
    double = by_editor(run_evaluate(tmp_path / "double", 2))
    for editor in ("unedited", "ft"):
        assert double[editor]["edits"] == single[editor]["edits"] == EDITS  # none padded, none counted twice
        for key in COMPARED:
            assert double[editor]["metrics"][key] == pytest.approx(single[editor]["metrics"][key], abs=1e-5), key
    assert single["ft"]["metrics"]["es"] > single["unedited"]["metrics"]["es"]  # FT edited: not two idle runs

    # One log for the run, whatever the device count: the ranks' logs were gathered into it and removed.
    log = tmp_path / "double" / "results" / "evaluate.jsonl"
    _, entries, complete = read_log(log)
    assert complete and sorted((e["editor"], *e["cases"]) for e in entries) == sorted(
        (editor, str(case)) for editor in ("unedited", "ft") for case in range(EDITS))
    assert not list(log.parent.glob("evaluate.rank*.jsonl"))

    # A run stopped after two edits on one device resumes on two. A logged batch is taken from the log, not
    # redone: plant a changed score in one, and the resumed figures carry it.
    resumed = tmp_path / "resumed" / "results" / "evaluate.jsonl"
    resumed.parent.mkdir(parents=True)
    lines = (tmp_path / "single" / "results" / "evaluate.jsonl").read_text().splitlines()
    header, kept = lines[0], [json.loads(line) for line in lines[1:-1] if json.loads(line)["cases"][0] in ("0", "1")]
    planted = next(entry for entry in kept if entry["editor"] == "unedited" and entry["cases"] == ["0"])
    es = planted["states"]["es"]
    gained = es["total"] - es["correct"]
    es["correct"] = es["total"]  # as if the unedited model had answered all of case 0's prompts with the new target
    resumed.write_text("\n".join([header, *map(json.dumps, kept)]) + "\n")
    again = by_editor(run_evaluate(tmp_path / "resumed", 2))
    assert again["unedited"]["edits"] == again["ft"]["edits"] == EDITS
    reference = single["unedited"]["metrics"]["es"]
    total = sum(json.loads(line)["states"]["es"]["total"] for line in lines[1:-1]
                if json.loads(line)["editor"] == "unedited")
    assert gained > 0 and again["unedited"]["metrics"]["es"] == pytest.approx(reference + gained / total)
    assert again["ft"]["metrics"]["es"] == pytest.approx(single["ft"]["metrics"]["es"], abs=1e-5)


def test_a_report_of_an_unfinished_multi_device_run_reads_every_ranks_log(tmp_path):
    """Mid-run, the batches are spread over the run's log and its ranks' logs; a rank log of another run is not
    this run's."""
    header = {"fingerprint": json.dumps({"editors": {"ft": {}}, "data": {}, "protocol": {"mode": "single",
                                                                                        "edits_per_batch": 1}})}

    def entry(case: str, correct: int) -> dict:
        states = metric_states(EditScores(compare_targets=True))  # every metric, all zero ...
        states["es"] = {"correct": correct, "total": 2}  # ... but the edit's success and its being made
        states["edit_seconds"] = {"mean_value": 1.0, "weight": 1.0}
        return {"editor": "ft", "cases": [case], "status": "done", "states": states}

    def write(path: Path, lines: list[dict]) -> None:
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    write(tmp_path / "r.jsonl", [header, entry("0", 2)])
    write(tmp_path / "r.rank0.jsonl", [header, entry("1", 2)])
    write(tmp_path / "r.rank1.jsonl", [header, entry("2", 0), entry("0", 2)])  # case 0 again: counted once
    write(tmp_path / "r.rank2.jsonl", [{"fingerprint": "another run"}, entry("3", 0)])
    (record,) = load_results([tmp_path / "r.jsonl"])
    assert record["edits"] == 3 and record["finished"] is False
    assert record["metrics"]["es"] == pytest.approx(4 / 6)
