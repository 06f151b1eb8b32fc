"""The config objects training scripts pickle beside their weights, which a weights-only torch.load may rebuild:
none of their code runs, so reading them needs no --trust-checkpoint.

- timm's train.py and torchvision's references/classification pickle their argparse arguments whole (`args`). A
  Namespace is a bag of attributes, rebuilt by setting its __dict__; timm's own loader allows it the same way.
- The official Swin code pickles its yacs config (`config`, a CfgNode: a dict subclass). It is rebuilt as the
  OrderedDict it is a dict of, so yacs need not be installed and none of its code runs.

Anything else (a class of the user's, a function) still needs --trust-checkpoint: its pickle may run code.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
import zipfile
from collections import OrderedDict
from contextlib import AbstractContextManager
from pathlib import Path

import torch

CONFIG_GLOBALS = [argparse.Namespace, (OrderedDict, "yacs.config.CfgNode")]
CONFIG_NAMES = ("argparse.Namespace", "yacs.config.CfgNode")


def config_globals() -> AbstractContextManager:
    """While open, a weights-only torch.load also rebuilds the config objects above."""
    return torch.serialization.safe_globals(CONFIG_GLOBALS)


def torch_load(name: str, trust_checkpoint: bool = False, mmap: bool = False) -> object:
    """torch.load weights-only, the config objects above included; with `trust_checkpoint`, a full load only where
    that fails, so a trusted file whose only objects are such configs needs neither their packages nor their code."""
    with config_globals(), warnings.catch_warnings():
        # "Detected pickle protocol 4": the refusal that follows says it in the error's own line
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            return torch.load(name, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            if not (trust_checkpoint and "weights only load failed" in str(e).lower()):
                raise
    # reached only with trust_checkpoint (the user's --trust-checkpoint), where the weights-only load refused
    return torch.load(name, map_location="cpu", weights_only=not trust_checkpoint, mmap=mmap)


def objects_needing_trust(path: str | Path) -> list[str]:
    """The names of the classes and functions a checkpoint's pickle refers to that a weights-only load refuses (the
    error says which), read by opcode (nothing is run); empty where torch cannot list them."""
    try:
        if zipfile.is_zipfile(path):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        else:  # the format before torch 1.6: its pickles one after another, the object fourth
            from torch import _weights_only_unpickler as unpickler

            allowed = {*unpickler._get_allowed_globals(), *unpickler._get_user_allowed_globals()}
            with open(path, "rb") as f:
                found = set().union(*(unpickler.get_globals_in_pkl(f) for _ in range(4)))
            names = sorted(found - allowed)
    except Exception:  # a listing that fails only leaves the names out of the message
        return []
    return [name for name in names if name not in CONFIG_NAMES]
