"""What the foreign-format converters share: literal key tables, reading weight files, and the architecture a
canonical state dict reveals.

A key table is a litgpt-style dict `canonical template -> foreign template(s)`. Templates name their variable
parts: `{s}` stage, `{b}` block, `{p}` weight|bias; foreign templates may also use stage arithmetic (`{s1}` =
s + 1 for timm's downsample, `{f}` = 2s + 1 and `{g}` = 2s + 2 for torchvision's `features.*`). A tuple of
foreign templates is one canonical tensor split in equal row blocks (HF's query/key/value = official qkv).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

# placeholder -> (canonical stage -> foreign number, foreign number -> canonical stage or None when impossible)
STAGE_MAPS = {
    "s1": (lambda s: s + 1, lambda n: n - 1 if n >= 1 else None),
    "f": (lambda s: 2 * s + 1, lambda n: (n - 1) // 2 if n % 2 == 1 else None),
    "g": (lambda s: 2 * s + 2, lambda n: (n - 2) // 2 if n >= 2 and n % 2 == 0 else None),
}
BUFFER_SUFFIXES = ("relative_position_index", "relative_coords_table", "attn_mask")
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
            if key.endswith(BUFFER_SUFFIXES):
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


# ---------------------------------------------------------------------------------------------- files
def read_weights(path: str | Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """A .safetensors file or a torch file (weights_only unless trusted), unwrapped to its state dict."""
    from converters.official import load_pth, unwrap

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SwinzooError(f"{path} is not a readable safetensors file ({e})") from None
    return unwrap(load_pth(path, trust_checkpoint), str(path))


def weights_in_folder(folder: Path) -> Path:
    """The weight file of a Hub-style folder: model.safetensors first, as timm and transformers do."""
    for name in ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth"):
        if (folder / name).exists():
            return folder / name
    if (folder / "model.safetensors.index.json").exists():
        raise SwinzooError(f"{folder} holds a sharded checkpoint; swinzoo reads single-file Swin weights only")
    raise SwinzooError(f"{folder} has no model.safetensors or pytorch_model.bin; give the folder holding the weights")


def read_config_json(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise SwinzooError(f"{folder} has no config.json; give a timm or transformers model folder, or the weight "
                           "file itself with --arch NAME")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SwinzooError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise SwinzooError(f"{path} exists and is not a folder; choose another output")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old.{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_torch(obj: object, path: str | Path) -> Path:
    from swinzoo.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ---------------------------------------------------------------------------------------------- architecture
def arch_from_keys(sd: dict[str, torch.Tensor], source: str) -> dict:
    """SwinConfig fields a canonical state dict (no buffers) reveals, plus `window` (V1 tables) or None."""
    if "patch_embed.proj.weight" not in sd or not any(BLOCK_KEY.match(k) for k in sd):
        raise SwinzooError(f"{source} is not a Swin state dict (first keys: {first_keys(sd)})")
    proj = sd["patch_embed.proj.weight"]
    depths: dict[int, int] = {}
    for key in sd:
        m = BLOCK_KEY.match(key)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    stages = len(depths)
    version = 2 if "layers.0.blocks.0.attn.logit_scale" in sd else 1
    window = None
    if version == 1:
        heads = [sd[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(stages)]
        window = max((round(math.sqrt(sd[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[0])) + 1)
                     // 2 for i in range(stages))
    else:
        heads = [sd[f"layers.{i}.blocks.0.attn.logit_scale"].shape[0] for i in range(stages)]
    fields = dict(
        version=version, patch_size=proj.shape[2], in_chans=proj.shape[1], embed_dim=proj.shape[0],
        depths=tuple(depths[i] for i in range(stages)), num_heads=tuple(heads),
        mlp_ratio=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / proj.shape[0],
        qkv_bias=("layers.0.blocks.0.attn.qkv.bias" in sd) or ("layers.0.blocks.0.attn.q_bias" in sd),
        ape="absolute_pos_embed" in sd, patch_norm="patch_embed.norm.weight" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    return {"fields": fields, "window": window}


def build_config(sd: dict[str, torch.Tensor], source: str, *, window: int | None = None, img_size: int | None = None,
                 pretrained_window_sizes=None, class_names=None, arch: SwinConfig | None = None,
                 arch_name: str = "", **extra) -> SwinConfig:
    """The config of canonical weights: `arch` (from --arch) wins; otherwise keys + what the format's config said.

    Without a resolution, a model is assumed to be sized so its last stage is exactly one window
    (window * patch * 2^(stages-1): 224 for window 7, 256 for window 8), which is what every released model is.
    """
    from converters.official import check_against
    from swinzoo.io import verify_state_dict
    from swinzoo.models import parameter_shapes

    if arch is not None:
        classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
        cfg = arch.replace(num_classes=classes, class_names=None)
        check_against(sd, cfg, arch_name or "the given architecture")
        return cfg
    info = arch_from_keys(sd, source)
    fields = info["fields"]
    window = window or info["window"]
    if window is None:
        raise SwinzooError(f"cannot tell the window of {source}: V2 weights do not reveal it; give the folder with its "
                           "config.json, or pass --arch NAME (e.g. swinv2_t_256_w8)")
    stages = len(fields["depths"])
    if img_size is None:
        img_size = window * fields["patch_size"] * 2 ** (stages - 1)
    if class_names is not None and len(class_names) != fields["num_classes"]:
        class_names = None
    cfg = SwinConfig(window_size=window, img_size=img_size, class_names=class_names,
                     pretrained_window_sizes=tuple(pretrained_window_sizes or (0,) * stages), **fields, **extra)
    cfg.validate_geometry()
    verify_state_dict(parameter_shapes(cfg), sd, source)
    return cfg


def default_class_names(names: list[str] | None) -> list[str] | None:
    """None when names are absent or the libraries' placeholders (LABEL_0, ...)."""
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return [str(n) for n in names]


def script_main(fmt: str, description: str, read, write, argv: list[str] | None = None, extra_flags=()) -> None:
    """The thin script every foreign-format converter runs: `SRC OUT` reads `fmt` into a swinzoo checkpoint,
    `--export SRC OUT` writes a swinzoo checkpoint out as `fmt` with `write(state_dict, config, out, args)`."""
    import argparse

    from swinzoo.io import read_checkpoint, save_state_dict

    p = argparse.ArgumentParser(description=description)
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--export", action="store_true", help=f"SRC is a swinzoo checkpoint; write {fmt} to OUT")
    for flag in extra_flags:
        p.add_argument(flag, action="store_true")
    args = p.parse_args(argv)
    if args.export:
        sd, cfg, _ = read_checkpoint(args.src)
        write(sd, cfg, args.out, args)
    else:
        sd, cfg = read(args.src)
        save_state_dict(sd, cfg, args.out, {"source": str(args.src), "format": fmt})
    print(f"wrote {args.out}")
