"""Swin V1 and V2 models."""

from swinzoo.models.swin import SwinTransformer, count_macs, count_params, parameter_shapes

__all__ = ["SwinTransformer", "count_macs", "count_params", "parameter_shapes"]
