"""Numerics the other official-parity tests leave unchecked, against the official code's own outputs.

`fixtures/numerics_guards.expected.safetensors` (made by `fixtures/make_numerics_guards.py` with the official
microsoft/Swin-Transformer models, float64, eval mode) on the weights of the two tiny official fixtures:
- `ape_*`: the V1 fixture built with an absolute position embedding (no other fixture has one);
- `clamp_*`: the V2 fixture with every logit scale above the log(1/0.01) clamp (the other fixtures keep them
  below it, so the clamp, and its float32-rounded bound, were never exercised).
Each runs on the inference fast path (no autograd) and on the reference blocks (autograd recording).
"""

import pytest
import torch

from swinzoo import SwinTransformer
from swinzoo.converters.official import from_official, read_official

from .conftest import V1, V2, expected, fixture_pth

PATHS = ["fast-path", "reference-autograd"]


def logits(model: SwinTransformer, x: torch.Tensor, path: str) -> torch.Tensor:
    model = model.double().eval()
    with torch.set_grad_enabled(path == "reference-autograd"):
        return model(x.double()).detach()


@pytest.mark.parametrize("path", PATHS)
def test_absolute_position_embedding_matches_official(path):
    exp = expected("numerics_guards")
    sd, cfg = from_official(read_official(fixture_pth(V1)))
    model = SwinTransformer(cfg.replace(ape=True))
    model.load_state_dict({**sd, "absolute_pos_embed": exp["ape_absolute_pos_embed"]}, strict=True)
    torch.testing.assert_close(logits(model, exp["ape_input"], path), exp["ape_logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_logit_scale_clamp_matches_official(path):
    exp = expected("numerics_guards")
    sd, cfg = from_official(read_official(fixture_pth(V2)))
    scales = {k: torch.full_like(v, 6.0) for k, v in sd.items() if k.endswith("logit_scale")}
    assert len(scales) == sum(cfg.depths) and 6.0 > torch.log(torch.tensor(100.0))  # all above the clamp
    model = SwinTransformer(cfg)
    model.load_state_dict({**sd, **scales}, strict=True)
    torch.testing.assert_close(logits(model, exp["clamp_input"], path), exp["clamp_logits"], rtol=0, atol=1e-6)
