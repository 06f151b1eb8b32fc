"""swinzoo: Swin Transformer V1/V2 with the official numerics, a model zoo, converters and fine-tuning."""

from __future__ import annotations

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.io import load_model, save_model
from swinzoo.models import SwinTransformer
from swinzoo.zoo import list_models

__version__ = "0.1.0"
__all__ = ["SwinConfig", "SwinTransformer", "SwinzooError", "create_model", "list_models", "load_model",
           "save_model"]


def create_model(name: str, **overrides) -> SwinTransformer:
    """Build a zoo architecture (`swin_b_224`, `swinv2_b_384_w24.in22k_ft_in1k`, ...) with fresh weights.

    `overrides` are `SwinConfig` fields, e.g. `num_classes=10`, `img_size=384, window_size=12`.
    """
    from swinzoo.zoo import zoo_config

    model = SwinTransformer(zoo_config(name, **overrides))
    model.provenance = {"zoo": name, "weights": "initialised"}
    return model
