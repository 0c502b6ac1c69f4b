"""LightningCLI entry points: ``train.py`` (fit an editor) and ``evaluate.py`` (compare editors).

Both read ``class_path``/``init_args`` YAML from ``configs/train/`` and ``configs/evaluate/`` (omegaconf
interpolation enabled; a config's ``base:`` names the files it is merged over, :mod:`lit_edit.config_files`) and take
``args`` so tests can call them in-process. Run as scripts (and as ``lit-edit``), they go through
:func:`user_errors`: a user's mistake (:class:`~lit_edit.errors.UserInputError`, a missing file) is one line on
stderr and exit status 2; a programming error keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ActionYesNo
from omegaconf.errors import OmegaConfBaseException

try:  # a path argument (--config) naming no file; private, so looked for rather than relied on
    from jsonargparse._paths import PathError
except ImportError:  # pragma: no cover - another jsonargparse layout: such errors keep jsonargparse's report
    PathError = None
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, Timer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lit_edit.callbacks import ProgressLines, StepTimer, ValidateAtLastStep, is_terminal
from lit_edit.config_files import PARSER_MODE, unreadable
from lit_edit.config_files import register as register_config_files
from lit_edit.data.datamodule import EditDataModule
from lit_edit.errors import UserInputError
from lit_edit.evaluation.suite import EditorSuite, only_editors
from lit_edit.preemption import CheckpointOnPreemption
from lit_edit.slurm import JOB_CONFIG, JOB_SCRIPT, SlurmError, SlurmJob, Submission, submit_training

# EditDataModule's training order resumes mid-epoch through its sampler (lit_edit.data.sampling), which
# Lightning's check for a stateful DataLoader does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_config_files()

#: Exceptions that jsonargparse raises in place of the one a class raised while it was built or checked (the
#: class's own is their ``__context__``): looked through for the user's mistake.
_WRAPPERS = (ValueError, TypeError, argparse.ArgumentError)


def user_error_in(error: BaseException | None) -> BaseException | None:
    """The user's mistake behind ``error``: itself if it is a :class:`UserInputError` or a missing file, else the
    first such error it was raised from or while handling, through jsonargparse's wrappers; None for a bug."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (UserInputError, FileNotFoundError)):
            return error
        if not isinstance(error, _WRAPPERS):
            return None
        seen.add(id(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def one_line(error: BaseException) -> str:
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """A user's mistake raised inside becomes ``prog: error: <message>`` on stderr and ``SystemExit(2)``."""
    try:
        yield
    except Exception as error:
        mistake = user_error_in(error)
        if mistake is None:
            raise
        print(f"{prog}: error: {one_line(mistake)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class UserErrorParser(LightningArgumentParser):
    """Raises the user's own error (e.g. a ConfigurationError a class raised while its arguments were checked)
    instead of jsonargparse's usage and nested "Problem with given class_path" report of it; a missing file given
    as an argument (``--config``) is raised as a FileNotFoundError naming the argument. :func:`user_errors` prints
    either as one line."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        mistake = user_error_in(ex)
        if mistake is not None:
            raise mistake
        if PathError is not None and _caused_by(ex, PathError):
            raise FileNotFoundError(one_line(Exception(message))) from ex
        super().error(message, ex)

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        """An interpolation that cannot be resolved once every source is merged is the user's one-line error."""
        try:
            return super().parse_args(*args, **kwargs)
        except OmegaConfBaseException as error:
            raise unreadable(error, "the config") from None

    def parse_object(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_object(*args, **kwargs)
        except OmegaConfBaseException as error:
            raise unreadable(error, "the config") from None


def _caused_by(error: BaseException | None, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class TrainCLI(LightningCLI):
    """Fit an editor; resumes from the run's ``last.ckpt`` when one exists (``--ckpt_path last``).

    Every run checkpoints at the step boundary after SIGTERM or SIGUSR1 (:mod:`lit_edit.preemption`), and prints
    progress lines when its output is not a terminal, writing ``last.ckpt`` when ``max_time`` stops it
    (:class:`~lit_edit.callbacks.ProgressLines`; a config that lists one sets its own interval). With
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
        # `data:` without a class_path is an EditDataModule; a base-model run (configs/train/fever_classifier.yaml)
        # names its own datamodule and LightningModule.
        parser.set_defaults({"data": {"class_path": "lit_edit.data.datamodule.EditDataModule"}})

    def instantiate_classes(self) -> None:
        if self.config.get("submit") or self.config.get("dry_run"):
            self.submission = self.submit()
            return
        super().instantiate_classes()
        callbacks = self.trainer.callbacks
        if not any(isinstance(callback, CheckpointOnPreemption) for callback in callbacks):
            # A submitted job listens for the signal its script asks SLURM to send before the time limit.
            callbacks.append(CheckpointOnPreemption(requeue_signal=self.config.get("slurm.requeue_signal")))
        if not any(isinstance(callback, ValidateAtLastStep) for callback in callbacks):
            callbacks.append(ValidateAtLastStep())
        # Last, after the ModelCheckpoints: the last.ckpt it writes when max_time runs out then holds their state.
        for lines in [callback for callback in callbacks if isinstance(callback, ProgressLines)] or [ProgressLines()]:
            if lines in callbacks:
                callbacks.remove(lines)
            callbacks.append(lines)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """``max_time`` stops training at an optimizer step (:class:`~lit_edit.callbacks.StepTimer`). Without a
        terminal, no progress bar unless the config asks for one: Lightning's (rich) bar then draws nothing but its
        last frame, wrapped over several lines, at the end; :class:`~lit_edit.callbacks.ProgressLines` prints the
        progress instead."""
        configured = self.config_init.get("trainer.callbacks") or []
        configured = list(configured) if isinstance(configured, list) else [configured]
        max_time = self.config_init.get("trainer.max_time")
        if max_time is not None and not any(isinstance(callback, Timer) for callback in configured):
            kwargs.update(max_time=None, callbacks=[*configured, StepTimer(duration=max_time, interval="step")])
        if (self.config_init.get("trainer.enable_progress_bar") is None and not is_terminal(sys.stdout)
                and not any(isinstance(callback, ProgressBar) for callback in configured)):
            kwargs.setdefault("enable_progress_bar", False)
        return super().instantiate_trainer(**kwargs)

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


def default_config_files(args: ArgsType, default_config: Path | None) -> list[str]:
    """The default config applies only to a run given no ``--config``: merged under a user's config, its settings
    (e.g. the default MEND run's ``accumulate_grad_batches`` and ``max_time``) would leak into every other run."""
    given = sys.argv[1:] if args is None else args
    if default_config is None or (isinstance(given, list | tuple)
                                  and any(str(a) == "--config" or str(a).startswith("--config=") for a in given)):
        return []
    return [str(default_config)]


def train_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "train" / "mend.yaml") -> TrainCLI:
    cli = TrainCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args,
        parser_class=UserErrorParser, parser_kwargs={"parser_mode": PARSER_MODE,
                                                     "default_config_files": default_config_files(args, default_config)},
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


def evaluate_main(args: ArgsType = None, default_config: Path | None = CONFIG_DIR / "evaluate" / "default.yaml") -> Any:
    cli = EvaluateCLI(
        EditorSuite, EditDataModule, run=False, args=args, parser_class=UserErrorParser,
        parser_kwargs={"parser_mode": PARSER_MODE,
                       "default_config_files": default_config_files(args, default_config)},
        save_config_callback=None,
    )
    cli.model.resolved_config = cli.parser.dump(cli.config, skip_validation=True, skip_unset=False)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # the suite prints its own table
    return cli
