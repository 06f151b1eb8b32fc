"""What every format module shares: the `Format` interface, literal key tables, reading weight files, and the
architecture a state dict reveals.

A format module (official, native, timm, hf, torchvision) ends with `FORMAT = Format(...)`: its name, how to
recognise it (a folder's config.json, or a state dict's keys), `read` (path -> `Checkpoint`: canonical state
dict, config, provenance) and `write` (`Checkpoint` -> file or folder). `converters/__init__.py` registers them.

A key table is a litgpt-style dict `canonical template -> foreign template(s)`. Templates name their variable
parts: `{s}` stage, `{b}` block, `{p}` weight|bias; foreign templates may also use stage arithmetic (`{s1}` =
s + 1 for timm's downsample, `{f}` = 2s + 1 and `{g}` = 2s + 2 for torchvision's `features.*`). A tuple of
foreign templates is one canonical tensor split in equal row blocks (HF's query/key/value = official qkv).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.folders import is_shard_index, shards_of
from swinzoo.converters.foreign import LIGHTNING_KEY, check_not_a_program, is_module_checkpoint
from swinzoo.converters.training import is_tensor_dict, lightning_model, nested_weights, take_weights
from swinzoo.errors import SwinzooError
from swinzoo.io import is_safetensors, load_torch, read_safetensors
from swinzoo.models import parameter_shapes
from swinzoo.state_dicts import verify_state_dict
from swinzoo.weight_transfer import BUFFER_NAMES, canonical_buffers, drop_buffers

# placeholder -> (canonical stage -> foreign number, foreign number -> canonical stage or None when impossible)
STAGE_MAPS = {
    "s1": (lambda s: s + 1, lambda n: n - 1 if n >= 1 else None),
    "f": (lambda s: 2 * s + 1, lambda n: (n - 1) // 2 if n % 2 == 1 else None),
    "g": (lambda s: 2 * s + 2, lambda n: (n - 2) // 2 if n >= 2 and n % 2 == 0 else None),
}
BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")


class Template:
    """One key pattern, e.g. `features.{f}.{b}.mlp.0.{p}`: match it against keys, or fill it in."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.names = re.findall(r"\{(\w+)\}", text)
        pattern = re.escape(text)
        for name in self.names:
            group = r"(?P<p>weight|bias)" if name == "p" else rf"(?P<{name}>\d+)"
            pattern = pattern.replace(re.escape("{" + name + "}"), group, 1)
        self.regex = re.compile(f"^{pattern}$")

    def match(self, key: str) -> dict | None:
        """Canonical fields {s, b, p} of `key`, or None."""
        m = self.regex.match(key)
        if m is None:
            return None
        out = {}
        for name, value in m.groupdict().items():
            if name in STAGE_MAPS:
                stage = STAGE_MAPS[name][1](int(value))
                if stage is None:
                    return None
                out["s"] = stage
            else:
                out[name] = value if name == "p" else int(value)
        return out

    def fill(self, fields: dict) -> str:
        values = {n: STAGE_MAPS[n][0](fields["s"]) if n in STAGE_MAPS else fields[n] for n in self.names}
        return self.text.format(**values)


class KeyMap:
    """A key table compiled both ways. `to_foreign` / `to_canonical` are pure: state dict in, state dict out."""

    def __init__(self, table: dict[str, str | tuple[str, ...]], name: str) -> None:
        self.name = name
        self.entries = [(Template(c), tuple(Template(f) for f in (fs if isinstance(fs, tuple) else (fs,))))
                        for c, fs in table.items()]

    def to_foreign(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in sd.items():
            for canon, foreign in self.entries:
                fields = canon.match(key)
                if fields is not None:
                    for template, part in zip(foreign, value.chunk(len(foreign), dim=0)):
                        out[template.fill(fields)] = part.clone() if len(foreign) > 1 else value
                    break
            else:
                raise SwinzooError(f"{key} has no {self.name} equivalent; this model cannot be written as {self.name}")
        return out

    def to_canonical(self, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Rename (and re-join split tensors); buffers are dropped, anything unknown is an error."""
        parts: dict[str, list] = {}
        for key, value in sd.items():
            if key.endswith(BUFFER_NAMES):
                continue
            for canon, foreign in self.entries:
                hit = next(((i, f) for i, t in enumerate(foreign) if (f := t.match(key)) is not None), None)
                if hit is not None:
                    i, fields = hit
                    parts.setdefault(canon.fill(fields), [None] * len(foreign))[i] = value
                    break
            else:
                raise SwinzooError(f"{source}: unexpected key {key!r} for the {self.name} Swin layout "
                                   f"(first keys seen: {first_keys(sd)})")
        out = {}
        for key, pieces in parts.items():
            if any(p is None for p in pieces):
                raise SwinzooError(f"{source}: {key} is split in {len(pieces)} parts in the {self.name} layout "
                                   "but some are missing; the file is incomplete")
            out[key] = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
        return out


def first_keys(sd: dict, n: int = 4) -> str:
    return ", ".join(list(sd)[:n]) or "none (empty)"


# ---------------------------------------------------------------------------------------------- interface
@dataclass
class Checkpoint:
    """Weights on the one path: canonical (official) keys without buffers, their config, and where they came from."""

    state_dict: dict[str, torch.Tensor]
    config: SwinConfig
    provenance: dict = field(default_factory=dict)
    # what reading chose, for this read's report only (a file written from it keeps the provenance, not these)
    notes: list[str] = field(default_factory=list)

    def __iter__(self):  # `state_dict, config, provenance = checkpoint`
        return iter((self.state_dict, self.config, self.provenance))

    def __repr__(self) -> str:
        # the tensors summed up, as a module's repr does: their values would be thousands of lines in a notebook
        values = sum(t.numel() for t in self.state_dict.values())
        dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in self.state_dict.values()}))
        tensors = f"<{len(self.state_dict)} tensors, {values:,} values{', ' + dtypes if dtypes else ''}>"
        return f"Checkpoint(state_dict={tensors}, config={self.config!r}, provenance={self.provenance!r})"


def _never(*_) -> bool:
    return False


@dataclass(frozen=True)
class Format:
    """One checkpoint format. `read(path, arch, arch_name, trust_checkpoint, raw)` -> Checkpoint, where `arch` is
    the config from `--arch` (or None) and `raw` the state dict already read while detecting (or None);
    `write(checkpoint, out, allow_numeric_change=, overwrite=)` -> how to load the result in the format's own
    library (`overwrite`: write into a folder that holds other files, replacing only the format's own; a file
    format's existing file is replaced, else refused, even one another process wrote while this one ran)."""

    name: str
    summary: str
    read: Callable[..., Checkpoint]
    write: Callable[..., str] | None = None
    claims_folder: Callable[[Path, dict | None], bool] = _never  # (folder, its config.json or None)
    claims_keys: Callable[[dict], bool] = _never  # a raw state dict's keys


# ---------------------------------------------------------------------------------------------- files
def unwrap(obj: object, source: str = "checkpoint", ema: bool | None = None) -> dict[str, torch.Tensor]:
    """The state dict inside a torch file: a training checkpoint's model or EMA entry (`training.take_weights`),
    `{'model': sd}`, `{'state_dict': sd}`, sd itself, or the one Swin state dict under other keys
    (`training.nested_weights`), without DDP / torch.compile prefixes."""
    sd = take_weights(obj, source, ema)
    return sd if is_tensor_dict(sd) else nested_weights(obj, source)


def read_weights(path: str | Path, trust_checkpoint: bool = False, *, module_checkpoint: bool = False,
                 ema: bool | None = None) -> dict:
    """A .safetensors file or a torch file (weights_only unless trusted), unwrapped to its state dict (`ema`: which
    weights of a training checkpoint, see `training.take_weights`). `module_checkpoint`: a Lightning checkpoint of
    swinzoo's modules is returned whole, for the swinzoo format."""
    if Path(path).is_dir():
        raise SwinzooError(f"{path} is a folder; give the weight file inside it, or read the folder with "
                           "--from-format auto (timm, transformers and swinzoo folders are recognised)")
    if is_shard_index(path):
        return unwrap(read_shards(Path(path), trust_checkpoint), str(path), ema)
    if is_safetensors(path) or Path(path).suffix == ".safetensors":  # named so: a damaged one, not a torch file
        return unwrap(read_safetensors(path, "; it is damaged or incomplete: download or write it again")[0],
                      str(path), ema)
    check_not_a_program(path)
    obj = load_torch(path, trust_checkpoint)
    if module_checkpoint and is_module_checkpoint(obj):
        return obj
    if isinstance(obj, dict) and LIGHTNING_KEY in obj:  # the user's own module's (swinzoo's are the line above's)
        return lightning_model(obj, str(path), ema)
    return unwrap(obj, str(path), ema)


def read_shards(index: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """One state dict from a sharded model's shards (safetensors, or torch files read as any other)."""
    shards, names = shards_of(index)
    sd: dict[str, torch.Tensor] = {}
    for shard in shards:
        if is_safetensors(shard) or shard.suffix == ".safetensors":
            sd.update(read_safetensors(shard, "; it is damaged or incomplete: download it again")[0])
        else:
            sd.update(unwrap(load_torch(shard, trust_checkpoint), str(shard)))
    missing = [name for name in names if name not in sd]
    if missing:
        raise SwinzooError(f"{index} maps {missing[0]} to a shard that does not hold it; the folder is incomplete or "
                           "mixed from two saves: fetch it again")
    return sd


# ---------------------------------------------------------------------------------------------- architecture
def arch_from_keys(sd: dict[str, torch.Tensor], source: str) -> dict:
    """What canonical keys reveal: {"fields": SwinConfig fields, "windows": the window of each stage or None}.

    Windows come from V1 bias tables, or from V2 buffers when the file kept them (official checkpoints do);
    V2 parameters alone do not reveal them.
    """
    if "patch_embed.proj.weight" not in sd or not any(BLOCK_KEY.match(k) for k in sd):
        raise SwinzooError(f"{source} is not a Swin state dict (expected patch_embed.proj.weight and "
                           f"layers.0.blocks.0.*; first keys seen: {first_keys(sd)})")
    proj = sd["patch_embed.proj.weight"]
    depths: dict[int, int] = {}
    for key in sd:
        m = BLOCK_KEY.match(key)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    stages = len(depths)
    version = 2 if "layers.0.blocks.0.attn.logit_scale" in sd else 1
    heads, windows = [], []
    for i in range(stages):
        attn = f"layers.{i}.blocks.0.attn."
        if version == 1:
            table = sd[attn + "relative_position_bias_table"]
            heads.append(table.shape[1])
            windows.append((round(math.sqrt(table.shape[0])) + 1) // 2)
        else:
            heads.append(sd[attn + "logit_scale"].shape[0])
            if attn + "relative_coords_table" in sd:
                windows.append((sd[attn + "relative_coords_table"].shape[1] + 1) // 2)
            elif attn + "relative_position_index" in sd:
                windows.append(round(math.sqrt(sd[attn + "relative_position_index"].shape[0])))
            else:
                windows.append(None)
    fields = dict(
        version=version, patch_size=proj.shape[2], in_chans=proj.shape[1], embed_dim=proj.shape[0],
        depths=tuple(depths[i] for i in range(stages)), num_heads=tuple(heads),
        mlp_ratio=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / proj.shape[0],
        qkv_bias=("layers.0.blocks.0.attn.qkv.bias" in sd) or ("layers.0.blocks.0.attn.q_bias" in sd),
        ape="absolute_pos_embed" in sd, patch_norm="patch_embed.norm.weight" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    return {"fields": fields, "windows": windows}


def v2_pretrained_windows(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> tuple[int, ...]:
    """Invert the log-spaced normalisation: the largest offset w-1 maps to log2(8 (w-1)/(p-1) + 1) / 3."""
    out = []
    for i in range(cfg.num_stages):
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_coords_table")
        w = cfg.stage_window(i)
        if table is None or w < 2:
            out.append(0)
            continue
        top = float(table[..., 0].max().double())
        pretrained = round(8 * (w - 1) / (2 ** (3 * top) - 1)) + 1
        out.append(0 if pretrained == w else pretrained)
    return tuple(out)


def check_against(sd: dict[str, torch.Tensor], cfg: SwinConfig, arch: str) -> None:
    """Raise naming the first key where the weights contradict `--arch` (both shapes in the message)."""
    expected = parameter_shapes(cfg)
    expected.update({k: tuple(v.shape) for k, v in canonical_buffers(cfg).items()})
    for key, value in sd.items():
        if key not in expected:
            raise SwinzooError(f"--arch {arch} contradicts the checkpoint: it has {key} {tuple(value.shape)}, "
                               f"which {arch} does not have")
        if tuple(value.shape) != expected[key]:
            raise SwinzooError(f"--arch {arch} contradicts the checkpoint: {key} is {tuple(value.shape)} in the file "
                               f"but {expected[key]} for {arch}")
    params, _ = drop_buffers(expected)
    missing = [k for k in params if k not in sd]
    if missing:
        raise SwinzooError(f"--arch {arch} contradicts the checkpoint: it lacks {missing[0]} {expected[missing[0]]}")


def config_for_arch(sd: dict[str, torch.Tensor], arch: SwinConfig, arch_name: str) -> SwinConfig:
    """The `--arch` config with the checkpoint's class count, checked against the weights."""
    classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    cfg = arch.replace(num_classes=classes, class_names=None)
    check_against(sd, cfg, arch_name or "the given architecture")
    if cfg.version == 2:
        check_pretrained_windows(sd, cfg, arch_name or "the given architecture")
    return cfg


def check_pretrained_windows(sd: dict[str, torch.Tensor], cfg: SwinConfig, arch: str) -> None:
    """A V2 file that kept its relative_coords_table tells the windows it was pretrained at by the table's values
    (its shape only tells the window): an --arch with others would rebuild the table and shift every logit."""
    revealed = v2_pretrained_windows(sd, cfg)
    for i, (found, given) in enumerate(zip(revealed, cfg.pretrained_window_sizes)):
        key, own = f"layers.{i}.blocks.0.attn.relative_coords_table", cfg.stage_window(i)
        if key in sd and (found or own) != (given or own):
            file_windows, arch_windows = (tuple(p or cfg.stage_window(j) for j, p in enumerate(sizes))
                                          for sizes in (revealed, cfg.pretrained_window_sizes))
            raise SwinzooError(f"--arch {arch} contradicts the checkpoint: {key} says pretrained windows "
                               f"{file_windows}, {arch} has {arch_windows}; drop --arch (the file's buffers tell its "
                               "architecture) or give one with those windows")


def clamped_resolution(windows: list[int | None], patch: int) -> int | None:
    """The resolution V1 bias tables reveal when a stage is narrower than the window: the official code clamps the
    window to that stage's width, so the first stage with a smaller table is exactly that many tokens wide."""
    known = [w for w in windows if w is not None]
    stage = next((i for i, w in enumerate(windows) if w is not None and w < max(known)), None) if known else None
    return None if stage is None else windows[stage] * patch * 2**stage


def build_config(sd: dict[str, torch.Tensor], source: str, *, window: int | None = None, img_size: int | None = None,
                 pretrained_window_sizes=None, class_names=None, arch: SwinConfig | None = None,
                 arch_name: str = "", **extra) -> SwinConfig:
    """The config of canonical weights: `arch` (from --arch) wins; otherwise keys + what the format's config said.

    Without a resolution, a model is assumed to be sized so its last stage is exactly one window
    (window * patch * 2^(stages-1): 224 for window 7, 256 for window 8), which is what every released model is,
    unless V1 bias tables show a stage narrower than the window (its window clamped to its width, as at 64 px /
    window 4), whose width then gives the resolution.
    """
    if arch is not None:
        return config_for_arch(sd, arch, arch_name)
    info = arch_from_keys(sd, source)
    fields = info["fields"]
    known = [w for w in info["windows"] if w is not None]
    window = window or (max(known) if known else None)
    if window is None:
        raise SwinzooError(f"cannot tell the window of {source}: V2 weights do not reveal it; give the folder with its "
                           "config.json, or pass --arch NAME (e.g. swinv2_t_256_w8)")
    stages = len(fields["depths"])
    if img_size is None:
        img_size = (clamped_resolution(info["windows"], fields["patch_size"])
                    or window * fields["patch_size"] * 2 ** (stages - 1))
    if class_names is not None and len(class_names) != fields["num_classes"]:
        class_names = None
    cfg = SwinConfig(window_size=window, img_size=img_size, class_names=class_names,
                     pretrained_window_sizes=tuple(pretrained_window_sizes or (0,) * stages), **fields, **extra)
    cfg.validate_geometry()
    verify_state_dict(parameter_shapes(cfg), sd, source)
    return cfg


def geometry_args(fields: dict) -> dict:
    """What a format's config adds to the weights: window, resolution, V2 pretrained windows."""
    pws = fields.get("pretrained_window_sizes")
    if pws is not None and not any(pws):
        pws = None  # all zero: let build_config size it to the stage count
    return dict(window=fields["window_size"], img_size=fields["img_size"], pretrained_window_sizes=pws)


# dropout rates a format's config can state (transformers always, timm in model_args); SwinConfig's defaults otherwise
RATES = ("drop_rate", "drop_path_rate")


def rate_args(fields: dict) -> dict:
    """The dropout rates a format's config stated, where they are numbers in [0, 1). They never change what the
    weights compute, so one that is not is left out (the default), rather than stopping a read."""
    return {k: float(v) for k in RATES if isinstance(v := fields.get(k), (int, float)) and not isinstance(v, bool)
            and 0 <= v < 1}


def default_class_names(names: list[str] | None) -> list[str] | None:
    """None when names are absent or the libraries' placeholders (LABEL_0, ...)."""
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return [str(n) for n in names]
