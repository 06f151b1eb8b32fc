"""Swin V1 and V2 models: the classifier (`swin.py`) and the dense-prediction backbone (`backbone.py`)."""

from swinzoo.models.backbone import SwinBackbone, build_model, count_params, parameter_shapes
from swinzoo.models.swin import SwinTransformer, count_macs

__all__ = ["SwinBackbone", "SwinTransformer", "build_model", "count_macs", "count_params", "parameter_shapes"]
