"""swinzoo: Swin Transformer V1/V2 with the official numerics, a model zoo, converters and fine-tuning.

The library every CLI verb wraps; names are imported on first use, so `import swinzoo` (and `swinzoo --help`)
stays cheap until a function is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "SwinConfig": "swinzoo.config",
    "data_config": "swinzoo.preprocess",
    "create_transform": "swinzoo.preprocess",
    "SwinzooError": "swinzoo.errors",
    "list_models": "swinzoo.zoo",
    "SwinTransformer": "swinzoo.models",
    "SwinBackbone": "swinzoo.models",
    "SimMIM": "swinzoo.models",
    "MaskGenerator": "swinzoo.models",
    "transfer": "swinzoo.weight_transfer",
    "Checkpoint": "swinzoo.converters",
    "save_model": "swinzoo.converters.native",
    "read_checkpoint": "swinzoo.sources",
    "load_model": "swinzoo.sources",
    "load_simmim": "swinzoo.sources",
    "create_model": "swinzoo.conversion",
    "Converted": "swinzoo.conversion",
    "model_info": "swinzoo.sources",
    "download": "swinzoo.hub",
    "push": "swinzoo.upload",
    "convert": "swinzoo.conversion",
    "export": "swinzoo.conversion",
    "evaluate": "swinzoo.evaluation",
    "predict": "swinzoo.prediction",
    "finetune": "swinzoo.train.run",
    "FinetuneResult": "swinzoo.train.options",
    "pretrain": "swinzoo.train.pretrain",
    "PretrainResult": "swinzoo.train.pretrain_options",
}
__all__ = [
    "Checkpoint", "Converted", "FinetuneResult", "MaskGenerator", "PretrainResult", "SimMIM", "SwinBackbone",
    "SwinConfig", "SwinTransformer", "SwinzooError",
    "convert", "create_model", "create_transform", "data_config", "download", "evaluate", "export", "finetune",
    "list_models", "load_model", "load_simmim", "model_info", "predict", "pretrain", "push", "read_checkpoint",
    "save_model", "transfer",
]

if TYPE_CHECKING:
    from swinzoo.config import SwinConfig
    from swinzoo.conversion import Converted, convert, create_model, export
    from swinzoo.converters import Checkpoint
    from swinzoo.converters.native import save_model
    from swinzoo.errors import SwinzooError
    from swinzoo.evaluation import evaluate
    from swinzoo.hub import download
    from swinzoo.models import MaskGenerator, SimMIM, SwinBackbone, SwinTransformer
    from swinzoo.prediction import predict
    from swinzoo.preprocess import create_transform, data_config
    from swinzoo.sources import load_model, load_simmim, model_info, read_checkpoint
    from swinzoo.train.options import FinetuneResult
    from swinzoo.train.pretrain import pretrain
    from swinzoo.train.pretrain_options import PretrainResult
    from swinzoo.train.run import finetune
    from swinzoo.upload import push
    from swinzoo.weight_transfer import transfer
    from swinzoo.zoo import list_models


if not TYPE_CHECKING:  # a type checker sees the imports above: a module __getattr__ would make any typo Any

    def __getattr__(name: str):
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'swinzoo' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
