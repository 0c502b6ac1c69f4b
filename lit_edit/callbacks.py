"""Callbacks: before/after edit examples as TensorBoard text."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_edit.data.datamodule import group_batches
from lit_edit.editors.base import Editor
from lit_edit.editors.edited_model import EditFailedError
from lit_edit.generation import before_and_after


class EditExamples(Callback):
    """Edit a few facts and log greedy completions before and after as TensorBoard text: after each validation
    (training an editor, under ``edit_examples``), and after a test run of ``evaluate.py`` (every editor of the
    suite, under ``edit_examples/<editor>``)."""

    def __init__(self, count: int = 3, max_new_tokens: int = 6) -> None:
        self.count = count
        self.max_new_tokens = max_new_tokens

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and isinstance(pl_module, Editor):
            self.log_examples(trainer, {"": pl_module}, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        editors = getattr(pl_module, "editors", None)  # an EditorSuite
        if editors is not None and not getattr(pl_module, "stopping", False):  # a stopped run makes no more edits
            self.log_examples(trainer, {f"/{key}": editor for key, editor in editors.items()}, "test")

    def log_examples(self, trainer: Trainer, editors: dict[str, Editor], split: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not loggers or datamodule is None:
            return
        for suffix, editor in editors.items():
            text = self.examples(editor, datamodule.records(split)[: self.count], datamodule.collate)
            for logger in loggers:
                logger.experiment.add_text(f"edit_examples{suffix}", text, global_step=trainer.global_step)

    def examples(self, editor: Editor, records: list, collate: Any) -> str:
        """A markdown table: each record's prompt, a paraphrase and a look-alike, before and after its edit; a chain
        of edits (records of one ``group``) is made at once, and its first portability question is asked too."""
        lines = ["| prompt | new target | before | after |", "|---|---|---|---|"]
        for indices in group_batches(records, 1):
            chain = [records[i] for i in indices]
            batch = collate(chain).to(editor.device)
            try:
                edited = editor.checked_edit(batch)
            except EditFailedError as error:  # a refused edit; anything else is a bug and is raised
                lines += [f"| {record.prompt} | {record.target_new} | edit failed: {error} | |" for record in chain]
                continue
            asked = [(prompt, record.target_new) for record in chain for prompt in
                     (record.prompt, *record.paraphrases[:1], *(p.prompt for p in record.hard_out_of_scope[:1]))]
            asked += [(p.prompt, p.target) for record in chain for p in record.portability[:1]]
            prompts = [prompt for prompt, _ in asked]
            for (prompt, target), (before, after) in zip(
                    asked, before_and_after(editor, edited, prompts, self.max_new_tokens), strict=True):
                before, after = before.replace("|", "/"), after.replace("|", "/")  # keep the table's cells
                lines.append(f"| {prompt} | {target} | {before} | {after} |")
        return "\n".join(lines)
