"""Callbacks: before/after edit examples as TensorBoard text."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_edit.editors.base import Editor
from lit_edit.generation import greedy_completion


class EditExamples(Callback):
    """After each validation, edit a few validation facts and log greedy completions before and after."""

    def __init__(self, count: int = 3, max_new_tokens: int = 6) -> None:
        self.count = count
        self.max_new_tokens = max_new_tokens

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(pl_module, Editor):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        datamodule = trainer.datamodule
        if not loggers or datamodule is None:
            return
        lines = ["| prompt | new target | before | after |", "|---|---|---|---|"]
        for record in datamodule.records("val")[: self.count]:
            batch = datamodule.collate([record]).to(pl_module.device)
            with torch.inference_mode(False), torch.enable_grad():
                edited = pl_module.edit(batch)
            prompts = [record.prompt, *record.paraphrases[:1], *(p.prompt for p in record.hard_out_of_scope[:1])]
            for prompt in prompts:
                before = self.complete(pl_module, prompt)
                with edited.applied():
                    after = self.complete(pl_module, prompt)
                lines.append(f"| {prompt} | {record.target_new} | {before} | {after} |")
        for logger in loggers:
            logger.experiment.add_text("edit_examples", "\n".join(lines), global_step=trainer.global_step)

    def complete(self, editor: Editor, prompt: str) -> str:
        text = greedy_completion(editor.model, editor.tokenizer, editor.kind, prompt, self.max_new_tokens)
        return text.replace("|", "/")
