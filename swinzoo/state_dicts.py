"""Strict state-dict checks: a state dict must hold exactly the keys and shapes a model expects, and the first one
that does not is named in one line (torch's own error lists every key)."""

from __future__ import annotations

import torch

from swinzoo.errors import SwinzooError


def verify_state_dict(expected: dict[str, tuple], state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise a one-line error naming the first unexpected, misshapen or missing key."""
    for key, tensor in state_dict.items():
        if key not in expected:
            raise SwinzooError(f"{source}: unexpected key {key!r} for this architecture")
        if tuple(tensor.shape) != tuple(expected[key]):
            raise SwinzooError(f"{source}: {key} has shape {tuple(tensor.shape)} but the model expects "
                               f"{tuple(expected[key])}")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise SwinzooError(f"{source}: missing {len(missing)} keys, first {missing[0]!r}")


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) behind a one-line error."""
    verify_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def for_safetensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that share no memory, as safetensors' save_file takes them: tied weights, or keys a
    script saved as one tensor, are copied apart (safetensors refuses them, "Some tensors share memory")."""
    out, spans = {}, {}
    for key, value in state_dict.items():
        value = value.detach().contiguous().cpu()
        if value.numel():
            start = value.storage_offset() * value.element_size()
            span = (start, start + value.numel() * value.element_size())
            taken = spans.setdefault(value.untyped_storage().data_ptr(), [])
            if any(span[0] < end and begin < span[1] for begin, end in taken):
                value, span = value.clone(), None
            if span is not None:
                taken.append(span)
        out[key] = value
    return out
