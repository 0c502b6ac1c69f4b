"""Evaluate several editors on the same test batches and report one table (markdown + JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule
from torch import nn

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor

#: Table columns: (heading, logged metric key, format).
COLUMNS = (
    ("ES", "es", "{:.3f}"),
    ("paraphrase ES", "paraphrase_es", "{:.3f}"),
    ("pre-edit ES", "pre_es", "{:.3f}"),
    ("DD (acc.)", "dd", "{:+.3f}"),
    ("retention", "retention", "{:.3f}"),
    ("target NLL", "edit_nll", "{:.3f}"),
    ("edit s/edit", "edit_seconds", "{:.3f}"),
)


class EditorSuite(LightningModule):
    """Runs every editor on each test batch; ``output`` receives one JSON record per editor."""

    def __init__(self, editors: dict[str, Editor], output: str = "results/evaluate.json",
                 only: list[str] | None = None) -> None:
        """``only`` names the editors to run (default: all), to re-run or skip one without editing the config."""
        super().__init__()
        if only is not None:
            unknown = sorted(set(only) - set(editors))
            if unknown:
                raise ValueError(f"--model.only names editors the config does not define: {unknown}; "
                                 f"defined: {sorted(editors)}")
            editors = {key: editor for key, editor in editors.items() if key in only}
        if not editors:
            raise ValueError("EditorSuite needs at least one editor")
        specs = {(e.model_spec.name, e.model_spec.kind, e.model_spec.dtype) for e in editors.values()}
        if len(specs) > 1:
            raise ValueError(f"all editors of one evaluation must edit the same base model, got {sorted(specs)}")
        self.editors = nn.ModuleDict(editors)
        self.output = Path(output)
        self.results: list[dict[str, Any]] = []

    @property
    def prompts(self) -> Any:
        return next(iter(self.editors.values())).prompts

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, EditBatch) else batch

    def test_step(self, batch: EditBatch, batch_idx: int) -> None:
        pre = next(iter(self.editors.values())).pre_edit_logits(batch)  # one base model: compute it once
        for key, editor in self.editors.items():
            editor.score(batch, editor.test_scores, pre)
            Editor.log_scores(self, editor.test_scores, key, len(batch))

    def on_test_epoch_end(self) -> None:
        self.results = []
        for key, editor in self.editors.items():
            figures = {name: float(metric.compute()) for name, metric in editor.test_scores.as_logged().items()}
            self.results.append({
                "editor": key,
                "name": editor.name,
                "class_path": f"{type(editor).__module__}.{type(editor).__qualname__}",
                "init_args": _plain(dict(editor.hparams)),
                "model": _plain(editor.model_spec),
                "edits": int(editor.test_scores.edit_seconds.weight.item()),
                "metrics": figures,
            })
        if self.trainer.is_global_zero:
            data = self.trainer.datamodule.hparams if self.trainer.datamodule is not None else {}
            for record in self.results:
                record["data"] = _plain(dict(data))
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.output.write_text(json.dumps(self.results, indent=1))
            print("\n" + results_table(self.results) + f"\n\nwritten to {self.output}")


def results_table(results: list[dict[str, Any]]) -> str:
    """A markdown table, one row per editor."""
    head = "| editor | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    rows = []
    for record in results:
        cells = []
        for _, key, fmt in COLUMNS:
            value = record["metrics"].get(key, math.nan)
            cells.append("n/a" if math.isnan(value) else fmt.format(value))
        rows.append(f"| {record['editor']} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _plain(value: Any) -> Any:
    """JSON-ready copy of hyperparameters (dataclasses and paths become dicts and strings)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
