"""EditDataModule: edit datasets -> typed, tokenized :class:`EditBatch` es, seeded and reproducible.

A data path is a file, ``builtin:NAME`` (the project's own edit set), or ``shared:REL`` (relative to
the benchmark data folder: ``$LIT_EDIT_DATA_DIR``, else ``shared/data`` beside the checkout). A ``#start:stop`` suffix
takes a slice of the records, e.g. ``shared:zsre/zsre_mend_train_10000.json#9500:10000``. ``builtin:`` and ``shared:``
name files inside their folders only (symlinks followed), and a path or slice that selects no records is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import AutoConfig

from lit_edit.data.batch import EditBatch, PromptTokenizer, context_length
from lit_edit.data.readers import load_edit_records, read_references, with_references
from lit_edit.data.records import DataFileNotFoundError, EditRecord, chained_groups
from lit_edit.data.sampling import DealtBatches, ResumableShuffle
from lit_edit.errors import ConfigurationError
from lit_edit.models import ModelSpec, load_tokenizer, resolve_model_path

BUILTIN_DIR = Path(__file__).parent / "builtin"
T = TypeVar("T")


def data_dir() -> Path:
    """The benchmark data folder: ``$LIT_EDIT_DATA_DIR``, else ``shared/data`` beside the project checkout."""
    if "LIT_EDIT_DATA_DIR" in os.environ:
        return Path(os.environ["LIT_EDIT_DATA_DIR"])
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside_checkout if beside_checkout.exists() else Path("..") / "shared" / "data"


def _inside(root: Path, relative: str, spec: str, option: str, what: str) -> Path:
    """``root / relative``, refused unless it (every symlink followed) stays inside ``root``: ``shared:`` and
    ``builtin:`` name files in their folders, never ``../../etc/passwd``."""
    path = root / relative
    real_root, real = root.resolve(), path.resolve()
    if not real.is_relative_to(real_root):
        raise ConfigurationError(f"{option} {spec!r}: {what} names a file outside {real_root} (it resolves to "
                                 f"{real}); give a plain path to read a file elsewhere")
    return path


def _window(spec: str, window: str, option: str) -> slice:
    """The ``#start:stop`` slice, refused when malformed or when it can select nothing (``#5:2``, ``#3:3``)."""
    try:
        start, stop = (int(x) if x.strip() else None for x in window.split(":"))
    except ValueError:
        raise ConfigurationError(f"{option} {spec!r}: the part after '#' must be start:stop, e.g. #0:500") from None
    if start is not None and stop is not None and (start < 0) == (stop < 0) and start >= stop:
        raise ConfigurationError(f"{option} {spec!r}: the slice #{window} selects no records (its start must be "
                                 f"below its stop, e.g. #{min(start, stop)}:{max(start, stop + 1)})")
    return slice(start, stop)


def resolve_data_path(spec: str, option: str = "data path") -> tuple[Path, slice]:
    """Split ``PATH[#start:stop]`` and expand the ``builtin:`` and ``shared:`` prefixes (confined to their folders).

    ``option`` names the setting in error messages (e.g. ``--data.test``).
    """
    path, _, window = spec.partition("#")
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        resolved = _inside(BUILTIN_DIR, f"{name}.json", spec, option, "builtin:")
        if not resolved.is_file():
            known = sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))
            raise DataFileNotFoundError(f"{option} {spec!r}: there is no builtin edit set {name!r}; "
                                        f"the builtin sets are {', '.join(known)}")
    elif path.startswith("shared:"):
        resolved = _inside(data_dir(), path.removeprefix("shared:"), spec, option, "shared:")
    else:
        resolved = Path(path)
    return resolved, _window(spec, window, option) if window else slice(None)


def load_split(spec: str, format: str = "auto", option: str = "data path") -> list[EditRecord]:
    """The records ``spec`` selects; selecting none (an empty file, a slice past its end) is an error naming
    ``option`` and the path, since an evaluation of no edits would report nothing and succeed."""
    path, window = resolve_data_path(spec, option)
    records = load_edit_records(path, format)
    return non_empty(records[window], len(records), spec, option)


def non_empty(selected: list[T], total: int, spec: str, option: str) -> list[T]:
    """``selected`` (the records or facts a data path's slice kept), refused when it is empty."""
    if not selected:
        held = "holds no records" if not total else f"holds {total} records, and the slice keeps none of them"
        raise ConfigurationError(f"{option} {spec!r}: the file {held}; give a file or slice with at least one record")
    return selected


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
            format: reader name (``auto``, ``zsre_mend``, ``counterfact_easyedit``, ``rome_counterfact``, ``lit_edit``,
                ``fever``, ...: :data:`lit_edit.data.readers.READERS`).
            model: the base model whose tokenizer is used when no editor is attached (the editor's otherwise).
            edits_per_batch: edits applied together in one training batch.
            eval_edits_per_batch: edits applied together in validation and test (1 = each edit alone).
            max_out_of_scope: cap on out-of-scope prompts per batch.
            limit_val, limit_test: use only the first N records of those splits.
            references: a JSON object from targets to texts about them (a path as above, no slice); records get
                their new target's texts, which generations after the edit are compared with (consistency).
        """
        super().__init__()
        for name, value, least in (("edits_per_batch", edits_per_batch, 1), ("eval_edits_per_batch", eval_edits_per_batch, 1),
                                   ("max_out_of_scope", max_out_of_scope, 0), ("max_length", max_length, 2),
                                   ("limit_val", limit_val, 1), ("limit_test", limit_test, 1),
                                   ("num_workers", num_workers, 0)):
            if value is not None and value < least:
                raise ConfigurationError(f"EditDataModule.{name} must be >= {least}, got {value} (--data.{name})")
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
                self._prompts = PromptTokenizer(load_tokenizer(self.model_spec), self.model_spec.kind, self.max_length,
                                                context_length=context_length_of(self.model_spec),
                                                labels=self.model_spec.labels)
        return self._prompts

    def records(self, split: str) -> list[EditRecord]:
        """The split's records; a split that selects none is an error naming its option (``--data.test``)."""
        if split not in self.splits:
            records = load_split(self.paths[split], self.format, f"--data.{split}")[: self.limits.get(split)]
            if self.references is not None:
                if self._reference_texts is None:  # read once for every split
                    path, window = resolve_data_path(self.references, "--data.references")
                    if window != slice(None):
                        raise ConfigurationError(f"--data.references {self.references!r}: reference texts are "
                                                 "read whole; drop the '#start:stop' part")
                    self._reference_texts = read_references(path)
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


def context_length_of(spec: ModelSpec) -> int | None:
    """The base model's context from its config (no weights loaded), or None where it cannot be read."""
    try:
        return context_length(AutoConfig.from_pretrained(resolve_model_path(spec)[0]))
    except (OSError, ValueError):
        return None


def group_batches(records: list[EditRecord], edits_per_batch: int) -> list[list[int]]:
    """Evaluation batches that never split a group of chained edits (consecutive records with one ``group``):
    whole groups are packed in order up to ``edits_per_batch`` edits, and a larger group is a batch of its own."""
    groups = chained_groups(records)
    batches: list[list[int]] = []
    for group in groups:
        if batches and len(batches[-1]) + len(group) <= edits_per_batch:
            batches[-1].extend(group)
        else:
            batches.append(list(group))
    return batches
