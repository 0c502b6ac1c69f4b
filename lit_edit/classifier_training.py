"""Fine-tune an encoder into the sequence classifier that classifier editing edits (the FEVER base model), by
``train.py`` (configs/train/fever_classifier.yaml), and export it where ``kind: classifier`` configs find it.

This trains a base model once, plainly: transformers' sequence-classification model and its own loss, Lightning's
Trainer and ModelCheckpoint. It is not an editor. Claims and gold labels come from the edit readers (a record's
prompt and ``target_true``), so data paths, slices and malformed-record errors are the ones editing uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BatchEncoding,
    get_linear_schedule_with_warmup,
)

from lit_edit.checkpoint_files import read_training_checkpoint
from lit_edit.data.datamodule import load_split
from lit_edit.editors.serac.scope_classifier import DEFAULT_ENCODER, resolve_encoder
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.atomic_files import save_directory_atomically, save_file_atomically
from lit_edit.models import checkpoints_dir
from lit_edit.run_lock import RunLock


class LabeledClaims(LightningDataModule):
    """(text, class index) batches from edit data files: each record's prompt with its gold label."""

    def __init__(self, train: str, val: str, test: str, labels: list[str], format: str = "fever",
                 encoder: str = DEFAULT_ENCODER, batch_size: int = 32, max_length: int = 64, seed: int = 0) -> None:
        """
        Args:
            train, val, test: data paths as in EditDataModule (``shared:fever/fever-lite-validation.jsonl#2000:6200``).
            labels: class names in class-index order; a record whose gold label is another is refused.
            format: the reader (``fever``: a claim's ``label`` is its gold class).
            encoder: whose tokenizer encodes the texts (the model's ``encoder``).
        """
        super().__init__()
        if batch_size < 1 or max_length < 2:
            raise ConfigurationError(f"LabeledClaims needs batch_size >= 1 and max_length >= 2, got {batch_size} and "
                                     f"{max_length} (--data.batch_size, --data.max_length)")
        self.paths = {"train": train, "val": val, "test": test}
        self.labels = list(labels)
        self.format, self.encoder = format, encoder
        self.batch_size, self.max_length, self.seed = batch_size, max_length, seed
        self.examples: dict[str, list[tuple[str, int]]] = {}
        self._tokenizer: Any = None

    def split(self, name: str) -> list[tuple[str, int]]:
        """The split's (text, class index) pairs, read once."""
        if name not in self.examples:
            option = f"--data.{name}"
            pairs = []
            for record in load_split(self.paths[name], self.format, option):
                if record.target_true not in self.labels:
                    raise ConfigurationError(f"{option} {self.paths[name]!r}: record {record.case_id} has label "
                                             f"{record.target_true!r}, not one of {self.labels} (--data.labels)")
                pairs.append((record.prompt, self.labels.index(record.target_true)))
            self.examples[name] = pairs
        return self.examples[name]

    def setup(self, stage: str | None = None) -> None:
        for name in {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}.get(stage or "", list(self.paths)):
            self.split(name)

    def collate(self, pairs: list[tuple[str, int]]) -> BatchEncoding:
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(self.encoder))
        batch = self._tokenizer([text for text, _ in pairs], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([label for _, label in pairs])
        return batch

    def train_dataloader(self) -> DataLoader:
        order = torch.Generator().manual_seed(self.seed + (self.trainer.current_epoch if self.trainer else 0))
        return DataLoader(self.split("train"), batch_size=self.batch_size, shuffle=True, generator=order,
                          collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.split("val"), batch_size=4 * self.batch_size, collate_fn=self.collate)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.split("test"), batch_size=4 * self.batch_size, collate_fn=self.collate)


class SequenceClassifierFineTune(LightningModule):
    """A pretrained encoder with a new ``len(labels)``-way head, fine-tuned with transformers' own loss.

    At the end of fit the best weights by ``val/score`` (validation accuracy; the last ones without a
    ModelCheckpoint) are written with ``save_pretrained`` to ``checkpoints/models/<name>`` (``$LIT_EDIT_CHECKPOINTS``)
    atomically, ``id2label`` in ``labels`` order, so ``model: {name: checkpoints/models/<name>, kind: classifier,
    labels: ...}`` loads it; then the test split is scored and, with ``results``, written there as JSON.
    """

    def __init__(self, labels: list[str], encoder: str = DEFAULT_ENCODER, name: str = "minilm-fever",
                 lr: float = 5.0e-5, weight_decay: float = 0.01, warmup_steps: int = 50,
                 results: str | None = None) -> None:
        """
        Args:
            labels: the class names in class-index order (``[SUPPORTS, REFUTES]``).
            encoder: a Hugging Face encoder directory, or ``all-minilm-l6-v2`` for the packaged all-MiniLM-L6-v2.
            name: the exported model's folder under ``checkpoints/models``.
            results: a JSON file for the test accuracy (``docs/results/fever_classifier.json``); None writes none.
        """
        super().__init__()
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ConfigurationError(f"SequenceClassifierFineTune.labels must name two or more distinct classes, got "
                                     f"{labels!r} (--model.init_args.labels)")
        if not name or Path(name).name != name:
            raise ConfigurationError(f"SequenceClassifierFineTune.name must be a plain folder name, got {name!r}")
        self.save_hyperparameters()
        self.labels = list(labels)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolve_encoder(encoder), num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
        self.model.train()  # from_pretrained returns it in eval mode: dropout on while fine-tuning
        self.val_accuracy = MulticlassAccuracy(num_classes=len(labels), average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=len(labels), average="micro")

    @property
    def output_dir(self) -> Path:
        return checkpoints_dir() / "models" / self.hparams.name

    def training_step(self, batch: BatchEncoding, batch_idx: int) -> Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: BatchEncoding, batch_idx: int) -> None:
        self.val_accuracy(self.model(**batch).logits.argmax(-1), batch["labels"])
        self.log("val/accuracy", self.val_accuracy, batch_size=len(batch["labels"]))
        self.log("val/score", self.val_accuracy, prog_bar=True, batch_size=len(batch["labels"]))

    def test_step(self, batch: BatchEncoding, batch_idx: int) -> None:
        self.test_accuracy(self.model(**batch).logits.argmax(-1), batch["labels"])
        self.log("test/accuracy", self.test_accuracy, batch_size=len(batch["labels"]))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = get_linear_schedule_with_warmup(optimizer, min(self.hparams.warmup_steps, steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_end(self) -> None:
        trainer = self.trainer
        if trainer.global_rank != 0:
            return
        best = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "val/score"
                     and c.best_model_path), None)
        if best is not None:
            weights, _ = read_training_checkpoint(Path(best.best_model_path))
            self.load_state_dict(weights)
        self.export(self.output_dir)
        datamodule = trainer.datamodule
        tester = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
        scores = tester.test(self, datamodule=datamodule, verbose=False)[0]
        summary = {"model": str(self.output_dir), "encoder": self.hparams.encoder, "labels": self.labels,
                   "train": datamodule.paths["train"], "val": datamodule.paths["val"],
                   "test": datamodule.paths["test"], "test_claims": len(datamodule.split("test")),
                   "test_accuracy": round(float(scores["test/accuracy"]), 4),
                   "val_accuracy": round(float(best.best_model_score), 4) if best is not None else None,
                   "epochs": trainer.current_epoch, "steps": trainer.global_step}
        print(json.dumps(summary))
        if self.hparams.results:
            save_file_atomically(self.hparams.results,
                                 lambda staged: staged.write_text(json.dumps(summary, indent=2) + "\n"))

    def export(self, target: Path) -> None:
        """save_pretrained (safetensors + tokenizer) through ``save_directory_atomically``, under ``target``'s run
        lock: ``target`` is the old model or the new one, never a half-written mix, and two runs never interleave."""
        tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(self.hparams.encoder))

        def write(directory: Path) -> None:
            self.model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)

        with RunLock(target, hint="or set another output directory"):
            save_directory_atomically(target, write)


__all__ = ["LabeledClaims", "SequenceClassifierFineTune"]
