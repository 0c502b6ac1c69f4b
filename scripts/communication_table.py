"""Communication per optimizer step, on paper, for training editors with DDP and DeepSpeed ZeRO-3 at scale.

    python scripts/communication_table.py [--configs configs/train/mend.yaml configs/train/enn.yaml] [--gpus 8 64 512]

Counts each configured editor's trainable parameters (Ψ; the frozen base model is not trained, so it is never
reduced or partitioned) and prints, per rank and per step, the bytes that ring collectives send:
DDP all-reduces gradients, 2Ψ(N−1)/N elements; ZeRO-3 all-gathers parameters for forward and again for
backward and reduce-scatters gradients, 3Ψ(N−1)/N (Rajbhandari et al., 2020), as a number of collectives that
grows with the parameter tensors gathered. Elements are bf16 (2 bytes), as a GPU run would use. Also the
editor's training state per rank (bf16 weights and gradients, fp32 master weights and two Adam moments:
16 bytes per parameter), which ZeRO-3 divides by N and DDP does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_edit.cli import TrainCLI
from lit_edit.config_files import PARSER_MODE
from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors.base import Editor

REPO = Path(__file__).resolve().parents[1]


def trainable(config: Path) -> tuple[str, int, int]:
    """(editor class, trainable parameters, trainable tensors) of the editor a training config builds."""
    cli = TrainCLI(Editor, EditDataModule, subclass_mode_model=True, run=False,
                   args=["--config", str(config), "--trainer.logger", "false"],
                   parser_kwargs={"parser_mode": PARSER_MODE}, save_config_callback=None)
    parameters = [p for p in cli.model.parameters() if p.requires_grad]
    return type(cli.model).__name__, sum(p.numel() for p in parameters), len(parameters)


def megabytes(elements: float, bytes_per_element: int = 2) -> str:
    return f"{elements * bytes_per_element / 2**20:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path,
                        default=[REPO / "configs" / "train" / "mend.yaml", REPO / "configs" / "train" / "enn.yaml"])
    parser.add_argument("--gpus", nargs="+", type=int, default=[8, 64, 512])
    args = parser.parse_args()
    editors = [(config, *trainable(config)) for config in args.configs]
    print("| editor (config) | Ψ trainable | N GPUs | DDP MiB/rank/step | ZeRO-3 MiB/rank/step "
          "| ZeRO-3 collectives/step | state MiB/rank, DDP | state MiB/rank, ZeRO-3 |")
    print("|---|---|---|---|---|---|---|---|")
    for config, name, count, tensors in editors:
        for n in args.gpus:
            share = (n - 1) / n
            print(f"| {name} ({config.name}) | {count / 1e6:.2f} M | {n} | {megabytes(2 * count * share)} "
                  f"| {megabytes(3 * count * share)} | {3 * tensors} | {megabytes(count, 16)} "
                  f"| {megabytes(count / n, 16)} |")


if __name__ == "__main__":
    main()
