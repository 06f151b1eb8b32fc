"""Test-only: Lightning's FSDPStrategy on CPU processes (gloo), which Lightning refuses ("requires a GPU
accelerator") though torch's FSDP1 runs there once given `device_id=cpu`. Registered as `--strategy fsdp_cpu`;
`python -m tests.fsdp_cpu finetune ...` is `swinzoo finetune ...` with it, and Lightning's launcher starts the
other ranks with the same command, so they register it too."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

NAME = "fsdp_cpu"
# torch's FSDP1 before 2.14 segfaults on CPU processes when it clones a gathered parameter for a full state dict
# (the first checkpoint; seen with 2.10 to 2.13). The CPU is not a device torch's FSDP supports; GPUs are not this path
RUNS_HERE = torch.torch_version.TorchVersion(torch.__version__) >= "2.14"


class CPUFSDPStrategy(FSDPStrategy):
    """FSDPStrategy with the model wrapped for the CPU. Lightning passes `device_id=root_device.index` (None on
    the CPU), with which torch's FSDP looks for an accelerator; Lightning's accelerator check tests
    `type(strategy) is FSDPStrategy`, which a subclass is not. The rest (sharding, state dicts, checkpoints,
    precision plugin) is Lightning's own."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                             mixed_precision=self.mixed_precision_config,
                                             sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"),
                                             **self.kwargs)
        return super()._setup_model(model)

    def optimizer_state(self, optimizer):
        """Lightning's full optimizer state, gathered without "offloading to the CPU". torch's FSDP1 gathers each
        state (exp_avg, exp_avg_sq) into one reused buffer and keeps views of it when the offload is a no-op
        (`.cpu()` of a CPU tensor): every state would read as the last one gathered. On a GPU `.cpu()` copies."""
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import (
            FullOptimStateDictConfig,
            FullStateDictConfig,
            OptimStateKeyType,
            StateDictType,
        )
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        if self._state_dict_type != "full":
            return super().optimizer_state(optimizer)
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
                                  FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True)):
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # as Lightning stores it
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state


def register() -> None:
    if NAME not in StrategyRegistry:
        StrategyRegistry.register(NAME, CPUFSDPStrategy, description="FSDP on CPU processes (tests only)")


if __name__ == "__main__":
    register()
    from swinzoo.cli import main

    main()
