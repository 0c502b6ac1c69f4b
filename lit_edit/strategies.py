"""DeepSpeed ZeRO for editors, on CUDA (Lightning's own path, unchanged) and on the CPU.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, although DeepSpeed itself trains with
ZeRO-2 and ZeRO-3 on the CPU (``DS_ACCELERATOR=cpu``, gloo for communication). :class:`DeepSpeedStrategy`
lifts that restriction for the CPU accelerator only, so CPU-only users and CI run the real DeepSpeed
code path; with a CUDA accelerator every method falls through to Lightning's.

It also refuses, before anything is set up, ZeRO stage 3 for an editor that cannot have its parameters
partitioned (see :attr:`lit_edit.editors.base.Editor.supports_zero3`); and it resumes from a checkpoint directory with
every file DeepSpeed's loader reads loaded as plain data (:func:`lit_edit.safe_files.deepspeed_reads_weights_only`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch import LightningModule
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.plugins.precision import DeepSpeedPrecision
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies import DeepSpeedStrategy as LightningDeepSpeedStrategy

from lit_edit.data.batch import EditBatch
from lit_edit.errors import UserInputError
from lit_edit.safe_files import check_deepspeed_directory, deepspeed_reads_weights_only

#: ``ShareMemCommBuilder.NAME``: DeepSpeed's CPU shared-memory all-reduce op.
SHARED_MEMORY_COMM_OP = "deepspeed_shm_comm"


class EditorDeepSpeedPrecision(DeepSpeedPrecision):
    """Lightning's DeepSpeed precision plugin with two corrections.

    * It casts the floating tensors of a batch; an :class:`EditBatch` (token ids, masks and frozen records,
      nothing floating) passes through unchanged instead of failing on its frozen dataclasses.
    * With ``accumulate_grad_batches`` > 1 Lightning already divides the loss by the number of accumulated
      batches, and ``DeepSpeedEngine.backward`` divided it again, so gradients came out that many times too
      small (measured: weights after 4 accumulated steps off by 20% of an Adam step). The engine's scaling is
      switched off here.
    """

    def convert_input(self, data: Any) -> Any:
        return data if isinstance(data, EditBatch) else super().convert_input(data)

    def backward(self, tensor: Any, model: Any, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("scale_wrt_gas", False)
        super().backward(tensor, model, optimizer, *args, **kwargs)


class ZeroStageError(UserInputError, ValueError):
    """The requested ZeRO stage cannot train this editor."""


class DeepSpeedStrategy(LightningDeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, plus the CPU accelerator (gloo process group, ``DS_ACCELERATOR=cpu``).

    Takes every argument of :class:`lightning.pytorch.strategies.DeepSpeedStrategy` (``stage``,
    ``offload_optimizer``, ``offload_parameters``, ``config``, ...).
    """

    strategy_name = "lit_edit_deepspeed"

    @property
    def precision_plugin(self) -> Any:
        return LightningDeepSpeedStrategy.precision_plugin.fget(self)

    @precision_plugin.setter
    def precision_plugin(self, plugin: Any) -> None:
        if type(plugin) is DeepSpeedPrecision:
            plugin = EditorDeepSpeedPrecision(plugin.precision)
        LightningDeepSpeedStrategy.precision_plugin.fset(self, plugin)

    @property
    def on_cpu(self) -> bool:
        return isinstance(self.accelerator, CPUAccelerator)

    def connect(self, model: Any) -> None:
        check_zero_stage(model, bool(self.zero_stage_3))
        super().connect(model)

    @property
    def root_device(self) -> torch.device:
        if self.on_cpu:  # DeepSpeed takes the device index as this process's rank (and `cpu:N` is just the CPU)
            return torch.device("cpu", self.local_rank)
        return super().root_device

    def setup_environment(self) -> None:
        if not self.on_cpu:
            return super().setup_environment()
        os.environ["DS_ACCELERATOR"] = "cpu"  # DeepSpeed picks its accelerator once, from this variable
        skip_shared_memory_comm_build()
        DDPStrategy.setup_environment(self)  # skips only DeepSpeedStrategy's CUDA check

    def setup_distributed(self) -> None:
        if not self.on_cpu:
            return super().setup_distributed()
        # As Lightning's, minus the check that device indices equal local ranks (CPU devices have no index).
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _get_process_group_backend(self) -> str:
        return "gloo" if self.on_cpu else super()._get_process_group_backend()

    def init_deepspeed(self) -> None:
        super().init_deepspeed()
        # DeepSpeed casts the parameters it was given to bf16/fp16; the frozen base model, outside the editor's
        # module tree, follows, so that edits substitute weights of the dtype the model computes in.
        half = next((dtype for key, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16))
                     if (self.config or {}).get(key, {}).get("enabled")), None)
        base = getattr(self.lightning_module, "model", None)
        if half is not None and isinstance(base, torch.nn.Module):
            base.to(half)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume from a DeepSpeed checkpoint directory with every file in it read as plain data; a single ``.ckpt``
        file (``load_full_weights``) is read with ``weights_only=True``."""
        if Path(checkpoint_path).is_dir():
            check_deepspeed_directory(checkpoint_path)
        with deepspeed_reads_weights_only():
            return super().load_checkpoint(checkpoint_path, weights_only=True)

    def _setup_model_and_optimizer(self, model: Any, optimizer: Any, lr_scheduler: Any = None) -> Any:
        if self.on_cpu and (self.config or {}).get("zero_optimization", {}).get("offload_optimizer"):
            # With optimizer offload DeepSpeed insists on its own CPU Adam; on the CPU the client optimizer's
            # state already lives in host memory, so keep the editor's own optimizer.
            self.config["zero_force_ds_cpu_optimizer"] = False
        return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)


def skip_shared_memory_comm_build() -> None:
    """Tell DeepSpeed not to compile its CPU shared-memory collective op.

    DeepSpeed's CPU backend JIT-compiles that op (g++ and ninja, under a file lock in ``~/.cache/torch_extensions``)
    whenever it starts its communication backend, but only ``inference_all_reduce`` uses it; training reduces through
    the gloo process group either way. Building it made every ZeRO run on the CPU depend on a compiler and on a lock
    file that a run killed mid-build leaves behind for every later run to wait on. DeepSpeed reads op compatibility
    from one module-level dict (``deepspeed.ops.__compatible_ops__``), so marking the op incompatible there skips it.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHARED_MEMORY_COMM_OP] = False


def check_zero_stage(model: Any, zero3: bool) -> None:
    """Raise :class:`ZeroStageError` when ZeRO-3 is asked for an editor that does not support it."""
    if zero3 and isinstance(model, LightningModule) and not getattr(model, "supports_zero3", False):
        raise ZeroStageError(
            f"DeepSpeed ZeRO stage 3 partitions every parameter and gathers one only inside its module's forward; "
            f"{type(model).__name__} does not declare `supports_zero3 = True` (it reads trainable parameters "
            "outside a forward). Use stage 2 instead (configs/strategies/zero2.yaml), which shards gradients and "
            "optimizer state but keeps parameters whole."
        )
