"""A run under Lightning's FSDPStrategy (`--strategy fsdp`, torch's FullyShardedDataParallel): once Lightning has
wrapped the module, each rank holds a flat shard of every parameter, and `module.model`'s parameters are 1-D views
of those shards outside the forward pass. What swinzoo reads or writes of the weights after that goes through
here: the whole state dict gathered for model.safetensors, whole parameters put back before a validation after the
fit (and best.ckpt's loaded), the gradient norm clipped over all shards, weight averaging refused. The gathering
and clipping are collectives: every rank calls them. Other strategies (one device, DDP) keep whole parameters and
take the plain path."""

from __future__ import annotations

from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.strategies import FSDPStrategy

from swinzoo.errors import SwinzooError


def fsdp_root(trainer):
    """The FSDP module Lightning wrapped the LightningModule in, or None when the run is not sharded."""
    if trainer is None or not isinstance(trainer.strategy, FSDPStrategy):
        return None
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = trainer.strategy.model
    return model if isinstance(model, FullyShardedDataParallel) else None


def built_ndims(model) -> dict[str, int]:
    """Each parameter's dimensions as built, by name, for the weight-decay groups (`optim.param_groups`): under FSDP
    `configure_optimizers` sees every parameter as a 1-D shard, which the official rule would exempt from decay."""
    return {name: p.ndim for name, p in model.named_parameters()}


def model_weights(trainer, module) -> dict | None:
    """`module.model`'s whole state dict on global rank zero (None on the other ranks), for model.safetensors.
    Under FSDP every rank must call it: the shards are gathered onto rank zero (on the CPU)."""
    root = fsdp_root(trainer)
    if root is None:
        return module.model.state_dict() if trainer.is_global_zero else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not trainer.is_global_zero:
        return None
    prefix = "model."  # the LightningModule's keys; FSDP's own wrapper names are left out
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def whole_parameters(trainer, module, state_dict: dict | None = None) -> None:
    """After a fit under FSDP, whole parameters in `module` again: `state_dict`'s (a whole LightningModule state
    dict: a checkpoint's), or else the shards gathered (every rank calls it, with the same `state_dict`). Lightning
    wraps the module in a new FSDP at each `trainer.validate`, and wrapping a module whose parameters are still the
    fit's shards makes a model of 1-D weights ("weight should have at least three dimensions", Lightning issue
    #19015). Without FSDP, `state_dict` (when given) is loaded."""
    root = fsdp_root(trainer)
    if root is not None:
        import torch
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if state_dict is None:  # on every rank, on the device (cpu_offload would leave the others empty)
            state_dict = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True))
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.data = state_dict[name].detach().to(param.device, param.dtype, copy=True)
                param.grad = None
        # what Lightning's next wrap (validate) starts from; until then nothing is sharded
        trainer.strategy.model = module
    if state_dict is not None:
        module.load_state_dict(state_dict)  # the buffers, and every key checked


class ShardedClipping:
    """Gradient clipping by norm under FSDP, for a LightningModule: the norm over every rank's shards, by the root
    FSDP module (`FullyShardedDataParallel.clip_grad_norm_`). Lightning's FSDP precision plugin refuses norm
    clipping (`torch.nn.utils.clip_grad_norm_` over one rank's shards would be wrong), and every recipe clips.
    The same clip coefficient as `clip_grad_norm_` over whole gradients: max_norm / (total norm + 1e-6), at most 1."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        root = fsdp_root(self.trainer)
        if root is None or not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        root.clip_grad_norm_(gradient_clip_val)


def check_weight_averaging(trainer, strategy_flag: str, ema=None) -> None:
    """Lightning's weight averaging (EMA, SWA) keeps a whole copy of the model and averages it with the module's
    parameters, which FSDP shards (Lightning: sharded models do not work with weight averaging): refused when the
    Trainer is built, before the run writes anything, not at the first step. `ema`: the recipe's EMA callback."""
    if not isinstance(trainer.strategy, FSDPStrategy):
        return
    for callback in trainer.callbacks:
        if not isinstance(callback, (WeightAveraging, StochasticWeightAveraging)):
            continue
        what, fix = (("the recipe's EMA", "--recipe.ema_decay null") if callback is ema
                     else (f"--trainer.callbacks {type(callback).__name__}", "drop that callback"))
        raise SwinzooError(f"--strategy {strategy_flag}: {what} averages a whole copy of the model, which FSDP "
                           f"shards (Lightning averages no sharded model); use --strategy ddp, or {fix}")
