"""EditDataModule: edit datasets -> typed, tokenized :class:`EditBatch` es, seeded and reproducible.

A data path is a file, ``builtin:NAME`` (the project's own edit set), or ``shared:REL`` (relative to
the benchmark data folder: ``$LIT_EDIT_DATA_DIR``, else ``shared/data`` beside the checkout). A ``#start:stop`` suffix
takes a slice of the records, e.g. ``shared:zsre/zsre_mend_train_10000.json#9500:10000``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_edit.data.batch import EditBatch, PromptTokenizer
from lit_edit.data.readers import load_edit_records, read_references, with_references
from lit_edit.data.records import EditRecord
from lit_edit.data.sampling import DealtBatches, ResumableShuffle
from lit_edit.models import ModelSpec, load_tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin"


def data_dir() -> Path:
    """The benchmark data folder: ``$LIT_EDIT_DATA_DIR``, else ``shared/data`` beside the project checkout."""
    if "LIT_EDIT_DATA_DIR" in os.environ:
        return Path(os.environ["LIT_EDIT_DATA_DIR"])
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside_checkout if beside_checkout.exists() else Path("..") / "shared" / "data"


def resolve_data_path(spec: str) -> tuple[Path, slice]:
    """Split ``PATH[#start:stop]`` and expand the ``builtin:`` and ``shared:`` prefixes."""
    path, _, window = spec.partition("#")
    if path.startswith("builtin:"):
        resolved = BUILTIN_DIR / f"{path.removeprefix('builtin:')}.json"
    elif path.startswith("shared:"):
        resolved = data_dir() / path.removeprefix("shared:")
    else:
        resolved = Path(path)
    if not window:
        return resolved, slice(None)
    try:
        start, stop = (int(x) if x else None for x in window.split(":"))
    except ValueError:
        raise ValueError(f"data path {spec!r}: the part after '#' must be start:stop, e.g. #0:500") from None
    return resolved, slice(start, stop)


def load_split(spec: str, format: str = "auto") -> list[EditRecord]:
    path, window = resolve_data_path(spec)
    return load_edit_records(path, format)[window]


class EditDataModule(LightningDataModule):
    """Edit, in-scope and out-of-scope batches for training, validation and test."""

    def __init__(self, train: str = "builtin:train", val: str = "builtin:val", test: str = "builtin:test",
                 format: str = "auto", model: ModelSpec | None = None, edits_per_batch: int = 4,
                 eval_edits_per_batch: int = 1, max_out_of_scope: int = 8, max_length: int = 128,
                 limit_val: int | None = None, limit_test: int | None = None, seed: int = 0,
                 num_workers: int = 0, references: str | None = None) -> None:
        """
        Args:
            train, val, test: data paths (see the module docstring).
            format: reader name (``auto``, ``zsre_mend``, ``counterfact_easyedit``, ``rome_counterfact``, ``lit_edit``).
            model: the base model whose tokenizer is used when no editor is attached (the editor's otherwise).
            edits_per_batch: edits applied together in one training batch.
            eval_edits_per_batch: edits applied together in validation and test (1 = each edit alone).
            max_out_of_scope: cap on out-of-scope prompts per batch.
            limit_val, limit_test: use only the first N records of those splits.
            references: a JSON object from targets to texts about them (a path as above, no slice); records get
                their new target's texts, which generations after the edit are compared with (consistency).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["model"])  # the editor records the model
        self.model_spec = model or ModelSpec()
        self.paths = {"train": train, "val": val, "test": test}
        self.format = format
        self.edits_per_batch = edits_per_batch
        self.eval_edits_per_batch = eval_edits_per_batch
        self.max_out_of_scope = max_out_of_scope
        self.max_length = max_length
        self.limits = {"val": limit_val, "test": limit_test}
        self.seed = seed
        self.num_workers = num_workers
        self.references = references
        self._reference_texts: dict[str, tuple[str, ...]] | None = None
        self.splits: dict[str, list[EditRecord]] = {}
        self._prompts: PromptTokenizer | None = None

    @property
    def prompts(self) -> PromptTokenizer:
        """The editor's own tokenization when attached to a trainer, so model and data always agree."""
        if self._prompts is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if isinstance(getattr(module, "prompts", None), PromptTokenizer):
                self._prompts = module.prompts
            else:
                self._prompts = PromptTokenizer(load_tokenizer(self.model_spec), self.model_spec.kind, self.max_length)
        return self._prompts

    def records(self, split: str) -> list[EditRecord]:
        if split not in self.splits:
            records = load_split(self.paths[split], self.format)[: self.limits.get(split)]
            if self.references is not None:
                if self._reference_texts is None:  # read once for every split
                    self._reference_texts = read_references(resolve_data_path(self.references)[0])
                records = with_references(records, self._reference_texts)
            self.splits[split] = records
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}.get(stage or "", list(self.paths))
        for split in needed:
            self.records(split)

    def collate(self, records: list[EditRecord]) -> EditBatch:
        return self.prompts.batch(records, self.max_out_of_scope)

    def _loader(self, split: str, batch_size: int, sampler: ResumableShuffle | None = None) -> DataLoader:
        records = self.records(split)
        if sampler is None and any(record.group is not None for record in records):
            # Chained edits stay together: the items are whole batches (so a distributed sampler deals out batches).
            batches = [[records[i] for i in batch] for batch in group_batches(records, batch_size)]
            return DataLoader(batches, batch_size=None, collate_fn=self.collate, num_workers=self.num_workers)
        return DataLoader(records, batch_size=batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, drop_last=sampler is not None)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        ranks = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableShuffle(len(self.records("train")), self.seed, self.edits_per_batch, *ranks)
        fit_loop = trainer.fit_loop if trainer is not None else None
        if fit_loop is not None and fit_loop.restarting:  # resumed from a checkpoint: skip what it trained on
            done = fit_loop.epoch_loop.batch_progress.current.processed
            if done < sampler.batches_per_rank:
                sampler.resume_after(done * self.edits_per_batch)
        return self._loader("train", self.edits_per_batch, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_edits_per_batch)

    def test_dataloader(self) -> DataLoader:
        """Every test batch exactly once over all ranks: rank ``r`` of ``W`` edits batches ``r, r + W, ...``."""
        batches = [[self.records("test")[i] for i in batch]
                   for batch in group_batches(self.records("test"), self.eval_edits_per_batch)]
        trainer = self.trainer
        ranks = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return DataLoader(batches, batch_size=None, sampler=DealtBatches(len(batches), *ranks),
                          collate_fn=self.collate, num_workers=self.num_workers)


def group_batches(records: list[EditRecord], edits_per_batch: int) -> list[list[int]]:
    """Evaluation batches that never split a group of chained edits (consecutive records with one ``group``):
    whole groups are packed in order up to ``edits_per_batch`` edits, and a larger group is a batch of its own."""
    groups: list[list[int]] = []
    for index, record in enumerate(records):
        if groups and record.group is not None and records[groups[-1][0]].group == record.group:
            groups[-1].append(index)
        else:
            groups.append([index])
    batches: list[list[int]] = []
    for group in groups:
        if batches and len(batches[-1]) + len(group) <= edits_per_batch:
            batches[-1].extend(group)
        else:
            batches.append(list(group))
    return batches
