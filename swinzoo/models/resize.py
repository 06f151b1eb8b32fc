"""Moving weights to another resolution and window by the official `load_pretrained` rules, for state dicts
(`weight_transfer.transfer`, what `convert --res --window` runs) and for a live model (timm's `set_input_size`):

- V1: a `relative_position_bias_table` whose effective window changes is resized bicubically (align_corners=False);
  `absolute_pos_embed` likewise when the token grid changes;
- V2: the weights stay; `pretrained_window_sizes` becomes the windows the source normalised its log-spaced CPB
  coordinates by, so the CPB MLP sees the same inputs for the offsets both windows share.

timm's own in-place move differs in two places (`ClassifierAPI.set_input_size` says which).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swinzoo.config import SwinConfig, geometry_problem, scaled_window, suggest_geometry
from swinzoo.errors import SwinzooError
from swinzoo.models.attention import WindowAttentionV1, log_spaced_coords
from swinzoo.models.layers import relative_position_index


def resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """((2w-1)^2, heads) -> (size^2, heads), official bicubic (align_corners=False) in the table's dtype."""
    side = int(round(table.shape[0] ** 0.5))
    heads = table.shape[1]
    dtype = table.dtype
    work = table if dtype in (torch.float32, torch.float64) else table.float()  # CPU bicubic needs fp32/fp64
    grid = work.permute(1, 0).reshape(1, heads, side, side)
    out = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return out.reshape(heads, size * size).permute(1, 0).contiguous().to(dtype)


def resize_abs_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, L, C) -> (1, grid^2, C), bicubic over the square token grid."""
    side = int(round(pos.shape[1] ** 0.5))
    dtype = pos.dtype
    work = pos if dtype in (torch.float32, torch.float64) else pos.float()
    out = F.interpolate(work.reshape(1, side, side, -1).permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic",
                        align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).contiguous().to(dtype)


def source_windows(src: SwinConfig) -> tuple[int, ...]:
    """The window each stage's CPB coordinates were normalised by in the source model (V2)."""
    return tuple(p if p > 0 else src.stage_window(i) for i, p in enumerate(src.pretrained_window_sizes))


def with_source_windows(src: SwinConfig, dst: SwinConfig) -> SwinConfig:
    """`dst` with V2 `pretrained_window_sizes` = the source's effective windows, so the CPB MLP sees the same inputs
    for the offsets both windows share (the official fine-tune configs, e.g. 12-12-12-6 from 192/w12); V1 as is."""
    return dst.replace(pretrained_window_sizes=source_windows(src)) if dst.version == 2 else dst


def _one(value, what: str, per_stage: int) -> int | None:
    """timm's int, (h, w) or per-stage spellings of one square size -> that int (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        flat = [v for item in value for v in (item if isinstance(item, (list, tuple)) else (item,))]
        if len(set(flat)) != 1:
            kind = "one window for all stages" if per_stage else "square"
            raise SwinzooError(f"{what} {value!r}: swinzoo models are {kind} (a config holds one {what}); give one int")
        value = flat[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SwinzooError(f"{what} must be a positive integer, got {value!r}")
    return value


def input_size_config(config: SwinConfig, img_size=None, patch_size=None, window_size=None, window_ratio=None,
                      always_partition: bool | None = None) -> SwinConfig:
    """The config timm's `set_input_size` arguments describe, or a one-line error (before anything changes).

    Without a window, a new size keeps the window-to-image ratio (timm's default and `convert --res`'s: 224/w7 ->
    384/w12); `window_ratio` is timm's: the patch grid divided by it; `window_size` wins over it, as in timm."""
    if config.is_backbone:
        raise SwinzooError("set_input_size applies to classifiers; a backbone (features_only) takes any input size")
    if always_partition:
        raise SwinzooError("always_partition=True is not supported: swinzoo classifiers follow the official rule (a "
                           "stage no larger than the window attends over the whole stage, unshifted); leave it False")
    patch = _one(patch_size, "patch_size", 0)
    if patch is not None and patch != config.patch_size:
        raise SwinzooError(f"patch_size {patch_size!r}: changing the patch size would resample the patch embedding; "
                           f"swinzoo keeps patch_size {config.patch_size} (leave it out)")
    img = _one(img_size, "img_size", 0) or config.img_size
    window = _one(window_size, "window", len(config.depths))
    ratio = _one(window_ratio, "window", len(config.depths)) if window is None else None
    if window is None and ratio is not None:
        window = max(1, (img // config.patch_size) // ratio)
    if window is None:
        window = config.window_size if img == config.img_size else scaled_window(config, img)
    problem = geometry_problem(img, window, config.patch_size, config.num_stages)
    if problem:
        raise SwinzooError(f"{problem}; {suggest_geometry(img, window, config.patch_size, config.num_stages)}")
    dst = config.replace(img_size=img, window_size=window)
    moved = with_source_windows(config, dst)
    # the same effective windows spelled another way (0: "the stage's own") change nothing, as in `transfer`
    dst = moved if source_windows(moved) != source_windows(dst) else dst
    dst.check_buildable()
    return dst


def move_in_place(model: nn.Module, dst: SwinConfig) -> dict:
    """Move a `SwinTransformer` to the geometry of `dst` (from `input_size_config`): what `transfer` does to its state
    dict, done to the model, whose cached window plans and attention terms are dropped. Returns the transfer record
    (`TransferReport.to_dict()`'s keys, "from" the old config) that `convert` writes into provenance."""
    src = model.config
    record = {"from": src.to_dict(), "interpolated": [], "mapped": [], "reinitialized": [], "dropped": [],
              "notes": [], "kept": 0}
    with torch.no_grad():
        pos = model.absolute_pos_embed
        if pos is not None and dst.patch_grid != src.patch_grid:
            model.absolute_pos_embed = nn.Parameter(resize_abs_pos_embed(pos, dst.patch_grid), pos.requires_grad)
            record["interpolated"].append(["absolute_pos_embed", list(pos.shape), list(model.absolute_pos_embed.shape)])
        for i, stage in enumerate(model.layers):
            window = dst.stage_window(i)
            stage.window = window
            for j, block in enumerate(stage.blocks):
                block.window, block.shift = window, window // 2 if j % 2 else 0
                _move_attention(block.attn, window, dst.pretrained_window_sizes[i], f"layers.{i}.blocks.{j}.attn.",
                                record)
            stage.plans = type(stage.plans)()  # plans are keyed on the window, but hold no other geometry to keep
    if dst.pretrained_window_sizes != src.pretrained_window_sizes:
        record["notes"].append(f"pretrained_window_sizes {list(dst.pretrained_window_sizes)} (the source's effective "
                               "windows)")
    if (src.img_size, src.window_size) != (dst.img_size, dst.window_size):
        record["notes"].insert(0, f"resolution {src.img_size} -> {dst.img_size}, window {src.window_size} -> "
                                  f"{dst.window_size}")
    record["kept"] = len(model.state_dict()) - len(record["interpolated"])
    model.config = dst
    return record


def _move_attention(attn: nn.Module, window: int, pretrained_window: int, prefix: str, record: dict) -> None:
    index = attn.relative_position_index
    if isinstance(attn, WindowAttentionV1):
        table = attn.relative_position_bias_table
        if attn.window != window:
            attn.relative_position_bias_table = nn.Parameter(resize_bias_table(table, 2 * window - 1),
                                                             table.requires_grad)
            record["interpolated"].append([prefix + "relative_position_bias_table", list(table.shape),
                                           list(attn.relative_position_bias_table.shape)])
    else:
        coords = attn.relative_coords_table
        attn.relative_coords_table = log_spaced_coords(window, pretrained_window).to(coords.device, coords.dtype)
    attn.relative_position_index = relative_position_index(window).to(index.device)
    attn.window = window
    attn.term_cache.clear()  # keyed on the bias parameters, which a V2 move keeps: its terms would be stale


def record_transfer(provenance: dict, record: dict) -> None:
    """Put a transfer's record ("from" config + `TransferReport.to_dict()`) into `provenance`, in place: an earlier
    move stays on record, oldest first, and a run's validation figures move aside (they scored the weights before)."""
    if "transfer" in provenance:
        earlier = {k: provenance.pop(k) for k in ("transfer", "before_transfer") if k in provenance}
        provenance["earlier_transfers"] = [*provenance.get("earlier_transfers", []), earlier]
    provenance["transfer"] = record
    measured = {k: provenance.pop(k) for k in ("finetune", "pretrain") if k in provenance}
    if measured:
        provenance["before_transfer"] = measured
