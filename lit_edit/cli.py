"""LightningCLI entry points: ``train.py`` (fit an editor) and ``evaluate.py`` (compare editors).

Both read ``class_path``/``init_args`` YAML from ``configs/`` (omegaconf interpolation enabled) and
take ``args`` so tests can call them in-process.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from jsonargparse import ActionYesNo
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors.base import Editor
from lit_edit.preemption import CheckpointOnPreemption
from lit_edit.slurm import JOB_CONFIG, JOB_SCRIPT, SlurmError, SlurmJob, Submission, submit_training
from lit_edit.suite import EditorSuite, only_editors

# EditDataModule's training order resumes mid-epoch through its sampler (lit_edit.data.sampling), which
# Lightning's check for a stateful DataLoader does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class TrainCLI(LightningCLI):
    """Fit an editor; resumes from the run's ``last.ckpt`` when one exists (``--ckpt_path last``).

    Every run checkpoints at the step boundary after SIGTERM or SIGUSR1 (:mod:`lit_edit.preemption`). With
    ``--submit`` (or ``--dry_run``) the run goes to SLURM instead (:mod:`lit_edit.slurm`): nothing is
    instantiated here, so the model is loaded only by the job.
    """

    submission: Submission | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default="last",
                            help="checkpoint to resume from; 'last' resumes an interrupted run, null starts afresh")
        parser.add_class_arguments(SlurmJob, "slurm", help="the SLURM job that --submit writes and submits")
        parser.add_argument("--submit", action=ActionYesNo, default=False,
                            help="submit this run to SLURM as a job (see --slurm.*) instead of training here")
        parser.add_argument("--dry_run", action=ActionYesNo, default=False,
                            help="print the sbatch script that --submit would submit; write and submit nothing")

    def instantiate_classes(self) -> None:
        if self.config.get("submit") or self.config.get("dry_run"):
            self.submission = self.submit()
            return
        super().instantiate_classes()
        callbacks = self.trainer.callbacks
        if not any(isinstance(callback, CheckpointOnPreemption) for callback in callbacks):
            # A submitted job listens for the signal its script asks SLURM to send before the time limit.
            callbacks.append(CheckpointOnPreemption(requeue_signal=self.config.get("slurm.requeue_signal")))

    def submit(self) -> Submission:
        config = self.config.clone().as_dict()
        job = SlurmJob(**config["slurm"])
        dry_run = bool(config["dry_run"])
        config.update(submit=False, dry_run=False)  # the job trains; it does not submit itself again
        for key in ("config", "__default_config__"):  # the config files, merged into this config already
            config.pop(key, None)

        def dump(resolved: dict) -> str:  # the parser knows how to write every value it parsed
            return self.parser.dump(resolved, skip_validation=True, skip_unset=False)

        try:
            return submit_training(job, config, dump, dry_run=dry_run)
        except SlurmError as error:
            self.parser.error(f"cannot submit: {error}")  # exits with status 2; nothing written or submitted


def train_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "mend.yaml") -> TrainCLI:
    cli = TrainCLI(
        Editor, EditDataModule, subclass_mode_model=True, run=False, args=args,
        parser_kwargs={"parser_mode": "omegaconf",
                       "default_config_files": [str(default_config)] if default_config else []},
        save_config_kwargs={"overwrite": True},
    )
    if cli.submission is not None:
        print(describe(cli.submission))
        return cli
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli


def describe(submission: Submission) -> str:
    """What a user needs after submitting: the job id and where its script, logs and TensorBoard files are."""
    if submission.job_id is None:
        return f"{submission.script}\n# dry run: nothing written, nothing submitted (run directory would be {submission.run_dir})"
    where = submission.run_dir
    return (f"Submitted SLURM job {submission.job_id}\n"
            f"  script:      {where / JOB_SCRIPT}\n"
            f"  config:      {where / JOB_CONFIG}\n"
            f"  output:      {where / f'slurm-{submission.job_id}.out'} (and .err)\n"
            f"  TensorBoard: tensorboard --logdir {where}\n"
            f"  watch with:  squeue -j {submission.job_id}")


class EvaluateCLI(LightningCLI):
    """Compare editors; ``--model.only`` drops the other editors before anything is built (no checkpoint of theirs is
    read, no model of theirs loaded)."""

    def before_instantiate_classes(self) -> None:
        model = self.config["model"]
        only = model.get("only")
        if only is None:
            return
        model["editors"] = only_editors(model["editors"], only)


def evaluate_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "evaluate.yaml") -> Any:
    cli = EvaluateCLI(
        EditorSuite, EditDataModule, run=False, args=args,
        parser_kwargs={"parser_mode": "omegaconf",
                       "default_config_files": [str(default_config)] if default_config else []},
        save_config_callback=None,
    )
    cli.model.resolved_config = cli.parser.dump(cli.config, skip_validation=True, skip_unset=False)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # the suite prints its own table
    return cli
