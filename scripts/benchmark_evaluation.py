"""Evaluation throughput as a ratio to the bare forward passes it needs (issue target: at least 0.7).

    python scripts/benchmark_evaluation.py [--edits 100] [--test shared:counterfact/counterfact-val.json#0:100]

Evaluates the unedited model (``NoEdit``: no edit is made, so all that is left is evaluation) on the test edits
through ``evaluate.py``'s own path (``EditorSuite`` under ``Trainer.test``: metrics, the per-batch log, CounterFact's
scores, provenance, the report). Then it runs the forward passes that evaluation needs, bare: per batch, the
in-scope and out-of-scope logits, the in-scope prompts with their true targets, and the neighbours with both
targets. It prints edits per second for both and their ratio (bare seconds / evaluation seconds), best of
``--repeats``, and writes them to ``results/benchmark_evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer

from lit_edit.data.datamodule import EditDataModule
from lit_edit.data.records import LabeledPrompt
from lit_edit.editors import NoEdit
from lit_edit.models import ModelSpec
from lit_edit.suite import EditorSuite


def evaluation_seconds(editor: NoEdit, data: EditDataModule) -> float:
    with tempfile.TemporaryDirectory() as out:
        suite = EditorSuite({"unedited": editor}, output=str(Path(out) / "r.json"), resume=False)
        trainer = Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                          enable_model_summary=False)
        start = time.perf_counter()
        trainer.test(suite, datamodule=data, verbose=False)
        return time.perf_counter() - start


@torch.no_grad()
def bare_seconds(editor: NoEdit, data: EditDataModule) -> float:
    batches = list(data.test_dataloader())
    start = time.perf_counter()
    for batch in batches:
        editor.logits(batch.in_scope)
        editor.logits(batch.out_of_scope)
        records = batch.records
        editor.logits(editor.prompts([LabeledPrompt(p, r.target_true) for r in records
                                      for p in (r.prompt, *r.paraphrases)]))
        neighbours = [(p.prompt, r) for r in records for p in r.hard_out_of_scope if p.target == r.target_true]
        if neighbours:
            for field in ("target_true", "target_new"):
                editor.logits(editor.prompts([LabeledPrompt(p, getattr(r, field)) for p, r in neighbours]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", default="shared:counterfact/counterfact-val.json#0:100")
    parser.add_argument("--format", default="counterfact_easyedit")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("results/benchmark_evaluation.json"))
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    editor = NoEdit(ModelSpec(name=args.model)).eval()
    data = EditDataModule(test=args.test, format=args.format, model=editor.model_spec, eval_edits_per_batch=1)
    data.setup("test")
    edits = len(data.records("test"))
    evaluation = min(evaluation_seconds(editor, data) for _ in range(args.repeats))
    bare = min(bare_seconds(editor, data) for _ in range(args.repeats))
    figures = {"edits": edits, "test": args.test, "model": args.model, "evaluation_s": round(evaluation, 3),
               "bare_forward_s": round(bare, 3), "evaluation_edits_per_s": round(edits / evaluation, 2),
               "bare_edits_per_s": round(edits / bare, 2), "ratio": round(bare / evaluation, 3),
               "torch_threads": torch.get_num_threads()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
