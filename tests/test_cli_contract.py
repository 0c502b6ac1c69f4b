"""What ``train.py``, ``evaluate.py`` and ``lit-edit`` promise a user (issue 21): a mistake is one line and status 2,
a bug keeps its traceback, one run per output (a second is refused, not mixed in), SIGTERM stops at an edit boundary
with the log kept for the same command to resume, and ``--save`` replaces nobody's directory unasked."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import REPO, synthetic_records

from lit_edit.__main__ import main as lit_edit_main
from lit_edit.cli import evaluate_main, user_error_in, user_errors
from lit_edit.data.readers import write_edit_records
from lit_edit.editors import FineTune
from lit_edit.errors import ConfigurationError, RunInUseError
from lit_edit.protocol import read_log
from lit_edit.run_lock import RunLock

LAUNCHER_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"}


class SlowFineTune(FineTune):
    """FT that takes ``seconds`` longer per edit (a long ROME edit, in a test's time); the delay changes no edit, so
    it is left out of the run's fingerprint. Records its edits' case ids in ``calls`` (in-process runs)."""

    unscored_hparams = frozenset({"seconds"})
    calls: list[list[str]] = []

    def __init__(self, *args, seconds: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = seconds

    def edit(self, batch):
        SlowFineTune.calls.append([record.case_id for record in batch.records])
        time.sleep(self.seconds)
        return super().edit(batch)


def script(name: str) -> ModuleType:
    """``train.py`` or ``evaluate.py`` as a module, to call its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_line(capsys) -> str:
    """The one line a refused command printed, after checking that it printed no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def evaluation(tiny_models, tmp_path):
    """``write(editors=..., records=4, **data)`` -> an evaluate.py config on the tiny GPT-2 writing tmp/r.json."""
    spec = tiny_models["gpt2"]
    model = {"name": spec.name, "editable": spec.editable}

    def write(editors: dict | None = None, records: int = 4, name: str = "eval.yaml", **data) -> Path:
        editors = editors or {"unedited": {"class_path": "lit_edit.editors.NoEdit"}}
        for editor in editors.values():
            editor.setdefault("init_args", {})["model"] = model
        config = {"seed_everything": 0,
                  "model": {"output": str(tmp_path / "r.json"), "editors": editors},
                  "data": {"test": str(write_edit_records(synthetic_records()[:records], tmp_path / "edits.json")),
                           **data},
                  "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": [],
                              "enable_progress_bar": False, "enable_model_summary": False, "inference_mode": False}}
        (tmp_path / name).write_text(yaml.safe_dump(config))
        return tmp_path / name

    return write


# -- item 13: a user's mistake is one line and status 2 ---------------------------------------------------------------
def test_user_errors_are_one_line_and_status_2_and_bugs_keep_their_traceback(capsys):
    with pytest.raises(SystemExit) as exit_, user_errors("evaluate.py"):
        raise ConfigurationError("MEND.lr must be > 0, got -0.001 (--model.init_args.lr)\n  set it in the config")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("evaluate.py: error: MEND.lr must be > 0, got -0.001 (--model.init_args.lr) "
                                       "set it in the config\n")
    with pytest.raises(KeyError), user_errors("evaluate.py"):
        raise KeyError("a bug")
    # jsonargparse raises its own error while handling the one a class raised as it was built: the class's is found.
    try:
        try:
            raise ConfigurationError("ModelSpec.dtype 'foo' is not a torch dtype name")
        except ConfigurationError:
            raise ValueError("Does not validate against any of the Union subtypes ...") from None
    except ValueError as wrapped:
        assert user_error_in(wrapped) is None  # from None: not the class's error any more
    try:
        try:
            raise ConfigurationError("ModelSpec.dtype 'foo' is not a torch dtype name")
        except ConfigurationError:
            raise ValueError("Does not validate against any of the Union subtypes ...")  # noqa: B904
    except ValueError as wrapped:
        assert str(user_error_in(wrapped)) == "ModelSpec.dtype 'foo' is not a torch dtype name"
    try:
        try:
            raise FileNotFoundError("no such file")
        except FileNotFoundError:
            raise KeyError("a bug while handling it")  # noqa: B904
    except KeyError as bug:
        assert user_error_in(bug) is None  # a bug stays a bug, whatever it happened during


@pytest.mark.parametrize("case", ["missing data", "malformed record", "missing checkpoint", "unknown editor"])
def test_evaluate_py_reports_bad_input_in_one_line(case, evaluation, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"case_id": "1", "prompt": "the colour of s1 is"}]))  # no target_new
    mend = {"mend": {"class_path": "lit_edit.editors.MEND",
                     "init_args": {"checkpoint": str(tmp_path / "missing.ckpt"), "rank": 8}}}
    editors, args, expected = {
        "missing data": (None, ["--data.test", str(tmp_path / "missing.json")], "missing.json"),
        "malformed record": (None, ["--data.test", str(bad), "--data.format", "lit_edit"], "bad.json"),
        "missing checkpoint": (mend, [], "missing.ckpt"),
        "unknown editor": (None, ["--model.only", "[mnd]"], "--model.only"),
    }[case]
    with pytest.raises(SystemExit) as exit_:
        script("evaluate").main(["--config", str(evaluation(editors)), *args])
    assert exit_.value.code == 2
    line = error_line(capsys)
    assert line.startswith("evaluate.py: error: ") and expected in line, line


def test_train_py_and_lit_edit_report_bad_input_in_one_line(tiny_models, synthetic_splits, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)  # configs/mend.yaml's checkpoints and logs are relative
    spec = tiny_models["gpt2"]
    with pytest.raises(SystemExit) as exit_:
        script("train").main([f"--model.init_args.model.name={spec.name}",
                              f"--model.init_args.model.editable={json.dumps(spec.editable)}",
                              f"--data.train={tmp_path / 'missing.json'}", f"--data.val={synthetic_splits['val']}",
                              "--trainer.fast_dev_run=1", "--model.init_args.rank=8"])
    assert exit_.value.code == 2
    line = error_line(capsys)
    assert line.startswith("train.py: error: ") and "missing.json" in line, line
    with pytest.raises(SystemExit) as exit_:
        script("evaluate").main(["--config", str(tmp_path / "missing.yaml")])
    assert exit_.value.code == 2
    assert error_line(capsys) == (f"evaluate.py: error: Parser key \"config\": File does not exist: "
                                  f"'{tmp_path / 'missing.yaml'}'")
    with pytest.raises(SystemExit) as exit_:
        lit_edit_main(["edit", '"the colour of s1 is" -> "c3"', "--config", str(tmp_path / "missing.yaml")])
    assert exit_.value.code == 2
    assert error_line(capsys) == f"lit-edit edit: error: no config file {tmp_path / 'missing.yaml'} (--config)"


# -- item 4: one writer per output ------------------------------------------------------------------------------------
def test_a_second_run_writing_the_same_output_is_refused(evaluation, tmp_path, capsys):
    output = tmp_path / "r.json"
    code = ("import sys, time; from lit_edit.run_lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exit_:
            script("evaluate").main(["--config", str(evaluation())])
        assert exit_.value.code == 2
        line = error_line(capsys)
        assert line == (f"evaluate.py: error: {output} is being written by another run (process {holder.pid}, which "
                        f"holds {output}.lock); wait for it to finish, or give this run another output "
                        "(--model.output)")
        assert not output.with_suffix(".jsonl").exists()  # refused before its log was touched
    finally:
        holder.kill()  # as a crash ends it: the operating system releases its lock
        holder.wait()
    evaluate_main(["--config", str(evaluation())], default_config=None)
    assert json.loads(output.read_text())[0]["edits"] == 4
    assert not Path(f"{output}.lock").exists()  # released (and removed) at the end of the run


def test_the_run_lock_is_taken_once_and_released_for_the_next(tmp_path):
    target = tmp_path / "out" / "r.json"
    with RunLock(target, hint="use another output") as held:
        assert held.held and held.path == tmp_path / "out" / "r.json.lock"
        assert held.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunInUseError, match=r"r.json is being written by another run .*or use another output$"):
            RunLock(target, hint="use another output").acquire()
    assert not held.held and not held.path.exists()
    held.path.write_text("12345\n")  # left by a run that was killed: no one holds it, so it is taken over
    with RunLock(target):
        pass


# -- item 5: SIGTERM stops at an edit boundary; the same command resumes ----------------------------------------------
def test_sigterm_stops_at_an_edit_boundary_and_the_same_command_resumes_to_the_same_results(evaluation, tmp_path):
    editors = lambda: {"unedited": {"class_path": "lit_edit.editors.NoEdit"},  # noqa: E731
                       "ft": {"class_path": "test_cli_contract.SlowFineTune",
                              "init_args": {"steps": 5, "lr": 1.0e-2, "seconds": 0.5}}}
    config = evaluation(editors())
    log = tmp_path / "r.jsonl"
    env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES}
    env.update(PYTHONPATH=str(REPO / "tests"), OMP_NUM_THREADS="1")
    run = subprocess.Popen([sys.executable, str(REPO / "evaluate.py"), "--config", str(config)], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 2) and run.poll() is None:
        assert time.monotonic() < deadline, "no batch was logged"
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)  # while FT's first (slow) edit is being made
    out, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
    fingerprint, entries, complete = read_log(log)
    done = len(entries)
    assert 1 <= done < 8 and not complete and fingerprint
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM after {done} of 8 batches (4 test batches x 2 editors); the log {log} is kept; "
        "run the same command again to resume")
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()  # no results claimed for a stopped run

    SlowFineTune.calls = []
    resumed = evaluate_main(["--config", str(config), "--model.editors.ft.init_args.seconds=0"],
                            default_config=None).model.results
    made = [entry["cases"] for entry in entries if entry["editor"] == "ft"]
    assert SlowFineTune.calls == [[str(case)] for case in range(4) if [str(case)] not in made]  # none redone
    reference = evaluate_main(["--config", str(config), "--model.editors.ft.init_args.seconds=0",
                               "--model.output", str(tmp_path / "reference" / "r.json")],
                              default_config=None).model.results
    for got, want in zip(resumed, reference, strict=True):
        assert got["editor"] == want["editor"] and got["edits"] == want["edits"] == 4
        got["metrics"].pop("edit_seconds"), want["metrics"].pop("edit_seconds")  # the one figure that is timed
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-6, nan_ok=True), got["editor"]


# -- item 9: --save replaces nobody's directory unasked ---------------------------------------------------------------
@pytest.fixture
def ft_config(tiny_models, tmp_path) -> str:
    model = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    path = tmp_path / "editors.yaml"
    path.write_text(yaml.safe_dump({"model": {"editors": {"ft": {
        "class_path": "lit_edit.editors.FineTune", "init_args": {"model": model, "steps": 5, "lr": 1.0e-2}}}}}))
    return str(path)


def test_save_refuses_a_non_empty_directory_unless_told_and_replaces_it_whole(ft_config, tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.json").write_text('{"mine": true}')
    edit = ["edit", '"the colour of s1 is" -> "c3"', "--config", ft_config, "--max_new_tokens", "1", "--save",
            str(target)]
    with pytest.raises(SystemExit) as exit_:
        lit_edit_main(edit)
    assert exit_.value.code == 2
    assert error_line(capsys) == (f"lit-edit edit: error: --save {target} is not empty (config.json); pass "
                                  "--overwrite to replace it, or choose another directory")
    assert (target / "config.json").read_text() == '{"mine": true}'

    with RunLock(target):  # another lit-edit edit saving there
        with pytest.raises(SystemExit) as exit_:
            lit_edit_main([*edit, "--overwrite"])
        assert exit_.value.code == 2 and "is being written by another run" in error_line(capsys)

    lit_edit_main([*edit, "--overwrite"])
    assert "model_type" in json.loads((target / "config.json").read_text())  # the edited model, whole
    assert (target / "model.safetensors").exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith((".mine", "mine"))) == ["mine"]
