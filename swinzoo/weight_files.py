"""The weight files of a Hub-style model folder, local or in a Hub repo alike, and a sharded model's index
(transformers' save_pretrained above max_shard_size, huggingface_hub's save_torch_state_dict), whose weight_map names
the shard file of each tensor. The index is someone else's file: each shard must be a plain file name beside it,
never a path to follow."""

from __future__ import annotations

import json

from swinzoo.errors import SwinzooError

SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# what transformers' from_pretrained reads, the first found: each single file, else its shards
WEIGHT_CHOICES = ("model.safetensors", SHARD_INDEXES[0], "pytorch_model.bin", SHARD_INDEXES[1])


def weight_map(text: str | bytes, where: str, fix: str) -> dict[str, str]:
    """A sharded model's index `text` as its map of tensor names to shard files, each shard a plain file name;
    otherwise a one-line error naming the index (`where`) and what to do (`fix`)."""
    try:
        found = json.loads(text).get("weight_map")
    except (ValueError, AttributeError, RecursionError):  # not JSON, or not an object
        found = None
    if not isinstance(found, dict) or not found:
        raise SwinzooError(f"{where} has no weight_map of tensor names to shard files; the index is damaged: {fix}")
    for name in dict.fromkeys(found.values()):
        if (not isinstance(name, str) or not name.isprintable() or "/" in name or "\\" in name
                or name in ("", ".", "..")):
            raise SwinzooError(f"{where} names shard {name!r}, which is not a file name beside the index; the index "
                               f"is damaged or crafted: {fix}")
    return found
