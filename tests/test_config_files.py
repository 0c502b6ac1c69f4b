"""Config files merged over their ``base:`` files (lit_edit.config_files), and the shipped configs built that way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_edit.cli import CONFIG_DIR, evaluate_main, train_main, user_errors
from lit_edit.config_files import load_config, load_value
from lit_edit.errors import ConfigurationError

#: The paths configs had before configs/train/ and configs/evaluate/ (docs, scripts and users' commands name them).
OLD_PATHS = sorted(set(CONFIG_DIR.glob("*.yaml")) - {CONFIG_DIR / "edit.yaml"})


def write(path: Path, settings: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


def printed_config(main, args: list[str], capsys) -> dict:
    """What ``--print_config`` prints for ``args``, read back."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_a_config_is_merged_over_its_bases_in_order_mappings_key_by_key_lists_whole(tmp_path):
    write(tmp_path / "shared" / "first.yaml", {"base": "deeper/zero.yaml", "a": 1, "nested": {"x": 1, "y": 1},
                                               "items": [1, 2]})
    write(tmp_path / "shared" / "deeper" / "zero.yaml", {"z": 0, "a": 0})  # relative to the base that names it
    write(tmp_path / "shared" / "second.yaml", {"nested": {"y": 2}, "b": 2})
    run = write(tmp_path / "runs" / "run.yaml", {"base": ["../shared/first.yaml", "../shared/second.yaml"],
                                                 "nested": {"x": 3}, "items": [3]})
    assert load_config(run) == {"z": 0, "a": 1, "b": 2, "nested": {"x": 3, "y": 2}, "items": [3]}


def test_interpolations_are_resolved_after_merging(tmp_path):
    write(tmp_path / "common.yaml", {"name": "???", "dirpath": "checkpoints/${name}"})
    assert load_config(write(tmp_path / "run.yaml", {"base": "common.yaml", "name": "mine"})) == {
        "name": "mine", "dirpath": "checkpoints/mine"}
    unnamed = write(tmp_path / "unnamed.yaml", {"base": "common.yaml"})  # the shared blocks leave the run's name to it
    with pytest.raises(ConfigurationError, match=f"{unnamed}: .* cannot be read: .*[Mm]issing mandatory value"):
        load_config(unnamed)


def test_a_cycle_or_a_missing_base_is_named_in_one_line(tmp_path, capsys):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigurationError, match=r"include each other \(base: .*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"):
        load_config(tmp_path / "a.yaml")
    run = write(tmp_path / "run.yaml", {"base": ["b.yaml", "missing.yaml"]})
    write(tmp_path / "b.yaml", {"x": 1})
    with pytest.raises(FileNotFoundError, match=f"no config file {tmp_path / 'missing.yaml'} \\(base: of {run}\\)"):
        load_config(run)
    with pytest.raises(ConfigurationError, match="must be a file or a list of files"):
        load_config(write(tmp_path / "bad.yaml", {"base": {"not": "a file"}}))
    with pytest.raises(SystemExit) as exit_info, user_errors("train.py"):
        train_main(["--config", str(run)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"train.py: error: no config file {tmp_path / 'missing.yaml'} (base: of {run})"


def test_a_base_files_interpolation_follows_a_command_line_override(capsys):
    """checkpoints/${trainer.logger.init_args.name} lives in configs/common/train.yaml; the name given on the command
    line, not the config file's, must reach it (resolving per file once sent a renamed run to another's checkpoints)."""
    printed = printed_config(train_main, ["--config", str(CONFIG_DIR / "train" / "mend_fever.yaml"),
                                          "--trainer.logger.init_args.name", "exp-renamed"], capsys)
    dirpaths = [c["init_args"]["dirpath"] for c in printed["trainer"]["callbacks"] if "dirpath" in c["init_args"]]
    assert dirpaths == ["checkpoints/exp-renamed"] * 2


def test_an_interpolation_that_cannot_be_resolved_is_one_line(tmp_path, capsys):
    run = write(tmp_path / "run.yaml", {"base": str(CONFIG_DIR / "train" / "mend.yaml"), "trainer": {"logger": False}})
    with pytest.raises(SystemExit) as exit_info, user_errors("train.py"):
        train_main(["--config", str(run)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("train.py: error: the config: trainer.callbacks[0].init_args.dirpath cannot be read")
    assert "\n" not in error


def test_only_a_config_file_has_bases_not_a_command_line_value(tmp_path, monkeypatch):
    """A class's own ``base`` argument (CounterfactualEditor has one) given on the command line stays a value."""
    monkeypatch.chdir(tmp_path)
    assert load_value("{base: {name: gpt2}, lr: 1.0e-3}") == {"base": {"name": "gpt2"}, "lr": 1.0e-3}
    write(tmp_path / "common.yaml", {"lr": 1.0e-3})
    assert load_value("{base: common.yaml, steps: 2}", path="run.yaml") == {"lr": 1.0e-3, "steps": 2}
    assert load_value("00:00:12:00") == "00:00:12:00" and load_value("[1, 2]") == [1, 2]


def test_train_py_reads_a_shipped_config_with_overrides_relative_to_the_including_file(tmp_path, monkeypatch, capsys):
    """"configs/train/mend.yaml, with these changes": the checkpoints follow the run's name."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # bases are found from the including file, not the working directory
    write(tmp_path / "mine" / "shared.yaml", {"base": str(CONFIG_DIR / "train" / "mend.yaml"),
                                              "trainer": {"max_steps": 7}})
    run = write(tmp_path / "mine" / "run.yaml", {"base": "shared.yaml",
                                                 "trainer": {"logger": {"init_args": {"name": "tiny"}}}})
    printed = printed_config(train_main, ["--config", str(run)], capsys)
    trainer = printed["trainer"]
    assert trainer["max_steps"] == 7 and trainer["accumulate_grad_batches"] == 4  # the rest is mend.yaml's
    assert trainer["logger"]["init_args"]["name"] == "tiny"
    assert [callback["init_args"]["dirpath"] for callback in trainer["callbacks"][:2]] == ["checkpoints/tiny"] * 2
    assert printed["model"]["class_path"] == "lit_edit.editors.MEND" and "base" not in printed


@pytest.mark.parametrize("old", OLD_PATHS, ids=lambda path: path.name)
def test_an_old_config_path_reads_its_new_file(old, capsys):
    """Each top-level config is a thin include of its file in configs/train/ or configs/evaluate/, parsed the same.
    (The move itself changed no parsed value: every old path's --print_config was compared with its output before.)"""
    include = yaml.safe_load(old.read_text())
    assert set(include) == {"base"}, f"{old.name} should only name its new file"
    new = CONFIG_DIR / include["base"]
    assert new.parent.name in ("train", "evaluate") and new.is_file()
    main = evaluate_main if new.parent.name == "evaluate" else train_main
    assert printed_config(main, ["--config", str(old)], capsys) == printed_config(main, ["--config", str(new)], capsys)


def test_every_checkpoint_an_evaluation_config_reads_is_one_a_training_config_writes():
    written = set()
    for config in (CONFIG_DIR / "train").glob("*.yaml"):
        for callback in load_config(config)["trainer"]["callbacks"]:
            settings = callback.get("init_args", {})
            if settings.get("filename"):
                written.add(f"{settings['dirpath']}/{settings['filename']}.ckpt")
    read = {(config.name, editor["init_args"]["checkpoint"])
            for config in (CONFIG_DIR / "evaluate").glob("*.yaml")
            for editor in load_config(config)["model"]["editors"].values()
            if str(editor.get("init_args", {}).get("checkpoint", "")).startswith("checkpoints/")}
    assert read and {path for _, path in read} <= written, sorted(read)
