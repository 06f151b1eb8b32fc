"""Move canonical weights from one config to another, as the official `utils.load_pretrained` does.

`transfer(state_dict, src, dst)` is pure: it returns the new state dict, the target config (V2 gets its
`pretrained_window_sizes` from the source) and a `TransferReport` of everything it touched.
`simmim_encoder_to_classifier` is the SimMIM fine-tune load (`utils_simmim.load_pretrained`): same idea, but V1
bias tables are resized geometrically (`swinzoo.geometric_interp`), not bicubically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.geometric_interp import resize_bias_table_geometric
from swinzoo.models.attention import log_spaced_coords
from swinzoo.models.layers import relative_position_index, shift_mask
from swinzoo.models.resize import resize_abs_pos_embed, resize_bias_table, source_windows, with_source_windows
from swinzoo.zoo import IN22K_CLASSES, imagenet1k_class_names

# buffers the official code persists; never trusted from a file, rebuilt by the model for its own geometry
BUFFER_NAMES = ("relative_position_index", "attn_mask", "relative_coords_table")


@dataclass
class TransferReport:
    """What a transfer did, key by key."""

    interpolated: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.interpolated or self.mapped or self.reinitialized or self.notes)

    def to_dict(self) -> dict:
        return {
            "interpolated": [[k, list(a), list(b)] for k, a, b in self.interpolated],
            "mapped": self.mapped, "reinitialized": self.reinitialized, "dropped": self.dropped,
            "notes": self.notes, "kept": self.kept,
        }

    def lines(self) -> list[str]:
        out = list(self.notes)
        if self.interpolated:
            k, a, b = self.interpolated[0]
            out.append(f"interpolated {len(self.interpolated)} tensors bicubically, e.g. {k} {a} -> {b}")
        out.extend(f"mapped {k}" for k in self.mapped)
        out.extend(f"re-initialised {k}" for k in self.reinitialized)
        if self.dropped:
            out.append(f"dropped {len(self.dropped)} buffers (rebuilt for the target geometry)")
        out.append(f"kept {self.kept} tensors unchanged")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def print_to(self, console) -> None:
        """Print the report on a rich console, under a bold `transfer` heading."""
        console.print("[bold]transfer[/bold]")
        for line in self.lines():
            console.print(f"  {line}", soft_wrap=True, markup=False)


def drop_buffers(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove the buffers the official code persists; the model rebuilds them for its own geometry."""
    kept = {k: v for k, v in state_dict.items() if not k.endswith(BUFFER_NAMES)}
    return kept, [k for k in state_dict if k not in kept]


def canonical_buffers(cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """The buffers an official model of `cfg` keeps in its state dict, under their canonical (official) keys. The
    detection backbone keeps no `attn_mask`: it builds its masks from each input's size."""
    out = {}
    for i in range(cfg.num_stages):
        w, shift, res = cfg.stage_window(i), cfg.stage_shift(i), cfg.stage_resolution(i)
        mask = shift_mask(res, w, shift) if shift and not cfg.is_backbone else None
        index = relative_position_index(w)
        coords = log_spaced_coords(w, cfg.pretrained_window_sizes[i]) if cfg.version == 2 else None
        for j in range(cfg.depths[i]):
            prefix = f"layers.{i}.blocks.{j}."
            if mask is not None and j % 2 == 1:
                out[prefix + "attn_mask"] = mask.clone()
            if coords is not None:
                out[prefix + "attn.relative_coords_table"] = coords.clone()
            out[prefix + "attn.relative_position_index"] = index.clone()
    return out


def map22kto1k() -> torch.Tensor:
    """Row of the 21841-way ImageNet-22k head for each ImageNet-1k class (official data/map22kto1k.txt)."""
    text = resources.files("swinzoo.data").joinpath("map22kto1k.txt").read_text()
    return torch.tensor([int(line) for line in text.split()], dtype=torch.long)


def check_compatible(src: SwinConfig, dst: SwinConfig) -> None:
    for name in ("version", "embed_dim", "depths", "num_heads", "patch_size", "in_chans", "mlp_ratio", "qkv_bias",
                 "patch_norm", "ape"):
        a, b = getattr(src, name), getattr(dst, name)
        if a != b:
            what = "head counts" if name == "num_heads" else name
            raise SwinzooError(
                f"cannot transfer between different {what} ({name} {a} -> {b}); only resolution, window and classes "
                "may change: pick a target of the same architecture"
            )


def transfer(state_dict: dict[str, torch.Tensor], src: SwinConfig, dst: SwinConfig,
             class_map: torch.Tensor | None = None,
             head_seed: int = 0) -> tuple[dict[str, torch.Tensor], SwinConfig, TransferReport]:
    """Move `state_dict` (canonical keys, a model of config `src`) to config `dst`.

    - V1: each `relative_position_bias_table` is resized bicubically when the (effective) window changes;
      `absolute_pos_embed` likewise when the grid changes.
    - V2: weights carry over unchanged; `dst.pretrained_window_sizes` becomes the windows the source normalised
      its log-spaced coordinates by, so the CPB MLP sees the same inputs for the offsets both windows share.
    - Head: kept when the class count matches, gathered 21841 -> 1000 with the official map, else zeroed (the
      official `load_pretrained`). A source without one (a SimMIM encoder, a headless model) gets the model's own
      init, truncated normal(std 0.02) weights drawn from `head_seed` and zero biases, which the official SimMIM
      fine-tune load leaves in place.
    - A SimMIM pretraining state dict (`encoder.*`, `decoder.0.*`) takes the official SimMIM fine-tune load first
      (`simmim_encoder_to_classifier`: V1 tables resized geometrically, not bicubically), then the rules above.
    """
    check_compatible(src, dst)
    dst.validate_geometry()
    report = TransferReport()
    if is_simmim_state_dict(state_dict):
        state_dict, report.notes = simmim_encoder_to_classifier(
            state_dict, src, with_source_windows(src, dst) if dst.version == 2 else dst)
    state_dict, report.dropped = drop_buffers(state_dict)
    out: dict[str, torch.Tensor] = {}
    if dst.version == 2:
        moved = with_source_windows(src, dst)
        # the same effective windows spelled another way (0: "the stage's own") change nothing: no note, no rewrite
        if source_windows(moved) != source_windows(dst):
            report.notes.append(f"pretrained_window_sizes {list(moved.pretrained_window_sizes)} (the source's "
                                "effective windows)")
            dst = moved
    for key, value in state_dict.items():
        if key.endswith("relative_position_bias_table"):
            stage = int(key.split(".")[1])
            size = 2 * dst.stage_window(stage) - 1
            if value.shape[0] != size * size:
                out[key] = resize_bias_table(value, size)
                report.interpolated.append((key, tuple(value.shape), tuple(out[key].shape)))
                continue
        elif key == "absolute_pos_embed" and value.shape[1] != dst.patch_grid**2:
            out[key] = resize_abs_pos_embed(value, dst.patch_grid)
            report.interpolated.append((key, tuple(value.shape), tuple(out[key].shape)))
            continue
        elif key in ("head.weight", "head.bias") and src.num_classes != dst.num_classes:
            if src.num_classes == IN22K_CLASSES and dst.num_classes == 1000:
                out[key] = value[class_map if class_map is not None else map22kto1k()].clone()
                report.mapped.append(f"{key} 21841 -> 1000 rows with map22kto1k.txt")
            elif dst.num_classes > 0:
                shape = (dst.num_classes,) + tuple(value.shape[1:])
                out[key] = torch.zeros(shape, dtype=value.dtype)
                report.reinitialized.append(f"{key} {tuple(value.shape)} -> {shape} to zeros (as the official code "
                                            "does)")
            else:
                report.dropped.append(key)
            continue
        out[key] = value
        report.kept += 1
    if dst.num_classes > 0 and "head.weight" not in out:  # a headless source gets a fresh head
        dtype, shape = state_dict["norm.weight"].dtype, (dst.num_classes, dst.num_features)
        weight = torch.empty(shape, dtype=torch.float32)
        torch.nn.init.trunc_normal_(weight, std=0.02, generator=torch.Generator().manual_seed(head_seed))
        out["head.weight"], out["head.bias"] = weight.to(dtype), torch.zeros(dst.num_classes, dtype=dtype)
        report.reinitialized.append(f"head.weight (absent) -> {shape}: truncated normal, std 0.02, seed {head_seed}, "
                                    "and head.bias zeros (the model's own init, which the official SimMIM fine-tune "
                                    "keeps)")
    if src.img_size != dst.img_size or src.window_size != dst.window_size:
        report.notes.insert(0, f"resolution {src.img_size} -> {dst.img_size}, window {src.window_size} -> "
                               f"{dst.window_size}")
    if src.class_names != dst.class_names and dst.class_names is None and src.num_classes == dst.num_classes:
        dst = dst.replace(class_names=src.class_names)
    elif report.mapped and class_map is None and dst.class_names is None:
        # the official map lists the 1k classes in their 1k order: the mapped head scores ImageNet-1k's classes
        dst = dst.replace(class_names=list(imagenet1k_class_names()))
    return out, dst, report


def class_order(head_names, data_names) -> torch.Tensor | None:
    """The head's index of each of the data's classes when the two name the same distinct classes in another order
    (class folders sort alphabetically), else None."""
    head_names, data_names = list(head_names or ()), list(data_names)
    if head_names == data_names or sorted(head_names) != sorted(data_names) or len(set(data_names)) != len(data_names):
        return None
    return torch.tensor([head_names.index(name) for name in data_names])


def match_head_to_classes(state_dict: dict[str, torch.Tensor], head_names, data_names) -> str | None:
    """Reorder a kept head's rows (in place) by `class_order`: row i then scores the data's class i, as its name
    says. Returns a note, or None."""
    order = class_order(head_names, data_names)
    if order is None or "head.weight" not in state_dict or state_dict["head.weight"].shape[0] != len(order):
        return None
    for key in ("head.weight", "head.bias"):
        if key in state_dict:
            state_dict[key] = state_dict[key].index_select(0, order)
    return f"reordered the head's {len(order)} rows to the data's class order (the same names, matched by name)"


def is_simmim_state_dict(state_dict: dict) -> bool:
    """A SimMIM pretraining state dict: the encoder under `encoder.` and the pixel decoder `decoder.0.*`."""
    return "decoder.0.weight" in state_dict and any(k.startswith("encoder.") for k in state_dict)


def simmim_encoder_to_classifier(state_dict: dict[str, torch.Tensor], src: SwinConfig,
                                 dst: SwinConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A SimMIM pretraining state dict (`encoder.*`, `decoder.*`; the encoder of config `src`) as canonical weights of
    the classifier `dst`, without a head (the pretraining has none: the caller initialises it), and notes on what
    changed. The remap of the official `utils_simmim.load_pretrained` / `remap_pretrained_keys_swin`:

    - `encoder.*` without the prefix; `decoder.*` and `mask_token` dropped; buffers dropped (rebuilt by the model);
    - `rpe_mlp` renamed `cpb_mlp` (the name in the released V2 SimMIM files);
    - V1: a `relative_position_bias_table` whose window changes is resized by the geometric interpolation;
    - V2: weights unchanged; `dst.pretrained_window_sizes` must be the source's windows (`with_source_windows`).
    """
    check_compatible(src, dst)
    dst.validate_geometry()
    if not any(k.startswith("encoder.") for k in state_dict):
        raise SwinzooError("no encoder.* keys: not a SimMIM pretraining state dict (move a classifier with transfer())")
    if dst.version == 2 and dst.pretrained_window_sizes != source_windows(src):
        raise SwinzooError(f"target pretrained_window_sizes {list(dst.pretrained_window_sizes)} are not the SimMIM "
                           f"source's windows {list(source_windows(src))}: build the target with with_source_windows")
    if dst.ape and src.patch_grid != dst.patch_grid:  # the official loader would fail on the shape mismatch too
        raise SwinzooError(f"the SimMIM fine-tune load cannot move absolute_pos_embed from {src.img_size} to "
                           f"{dst.img_size} px: fine-tune at {src.img_size}")
    encoder = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    others = len(state_dict) - len(encoder)
    encoder, buffers = drop_buffers(encoder)
    # no place in a classifier (mask_token), or not this function's to give (a head: the caller initialises it)
    dropped = [k for k in encoder if k == "mask_token" or k.startswith("head.")]
    out: dict[str, torch.Tensor] = {}
    resized, renamed = [], 0
    for key, value in encoder.items():
        if key in dropped:
            continue
        if "rpe_mlp" in key:
            key, renamed = key.replace("rpe_mlp", "cpb_mlp"), renamed + 1
        if key.endswith("relative_position_bias_table"):
            size = 2 * dst.stage_window(int(key.split(".")[1])) - 1
            if value.shape[0] != size * size:
                value = resize_bias_table_geometric(value, size)
                resized.append(key)
        out[key] = value
    notes = [f"{len(out)} encoder tensors without the encoder. prefix; dropped {others} decoder tensors, "
             f"{', '.join(dropped) or 'no mask_token'} and {len(buffers)} buffers (rebuilt by the model)"]
    if resized:
        notes.append(f"resized {len(resized)} bias tables geometrically (official SimMIM), e.g. {resized[0]} "
                     f"{tuple(encoder[resized[0]].shape)} -> {tuple(out[resized[0]].shape)}")
    if renamed:
        notes.append(f"renamed {renamed} rpe_mlp tensors to cpb_mlp")
    if dst.num_classes > 0:
        notes.append(f"no head in the pretraining: head.weight/head.bias for {dst.num_classes} classes are new")
    return out, notes
