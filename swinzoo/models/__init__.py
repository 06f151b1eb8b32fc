"""Swin V1 and V2 models: the classifier (`swin.py`), the dense-prediction backbone (`backbone.py`) and SimMIM
pretraining (`simmim.py`)."""

from swinzoo.models.backbone import SwinBackbone, count_params, parameter_shapes
from swinzoo.models.simmim import MaskGenerator, SimMIM
from swinzoo.models.swin import SwinTransformer, count_macs

__all__ = ["MaskGenerator", "SimMIM", "SwinBackbone", "SwinTransformer", "count_macs", "count_params",
           "parameter_shapes"]
