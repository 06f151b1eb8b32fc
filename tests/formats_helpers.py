"""Helpers for the format tests: random weights that exercise every parameter, and a meaningful comparison."""

import math

import torch

SMALL = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (libraries zero some at init, e.g. V2 post-norms, which would hide mapping errors);
    V2 logit scales stay below the log(100) clamp, whose float32/float64 rounding differs between libraries."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if name.endswith("logit_scale"):
                p.copy_(math.log(10.0) + 0.3 * noise)
            elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
    return model


def assert_logits_close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = 1e-6) -> None:
    """float64 logits within `atol`, and not trivially small (so the comparison can fail)."""
    assert ours.dtype == torch.float64 and theirs.dtype == torch.float64
    assert theirs.abs().max() > 1e-2, "logits too small to make the comparison meaningful"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)
