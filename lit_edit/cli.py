"""LightningCLI entry points: ``train.py`` (fit an editor) and ``evaluate.py`` (compare editors).

Both read ``class_path``/``init_args`` YAML from ``configs/`` (omegaconf interpolation enabled) and
take ``args`` so tests can call them in-process.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors.base import Editor
from lit_edit.suite import EditorSuite

# EditDataModule's training order resumes mid-epoch through its sampler (lit_edit.data.sampling), which
# Lightning's check for a stateful DataLoader does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class TrainCLI(LightningCLI):
    """Fit an editor; resumes from the run's ``last.ckpt`` when one exists (``--ckpt_path last``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default="last",
                            help="checkpoint to resume from; 'last' resumes an interrupted run, null starts afresh")


def train_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "mend.yaml") -> TrainCLI:
    cli = TrainCLI(
        Editor, EditDataModule, subclass_mode_model=True, run=False, args=args,
        parser_kwargs={"parser_mode": "omegaconf",
                       "default_config_files": [str(default_config)] if default_config else []},
        save_config_kwargs={"overwrite": True},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli


def evaluate_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "evaluate.yaml") -> Any:
    cli = LightningCLI(
        EditorSuite, EditDataModule, run=False, args=args,
        parser_kwargs={"parser_mode": "omegaconf",
                       "default_config_files": [str(default_config)] if default_config else []},
        save_config_callback=None,
    )
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # the suite prints its own table
    return cli
