"""Every released official Swin V1 and V2 model, as data.

A zoo name fixes an architecture at a resolution and window (`swin_b_384`, `swinv2_b_384_w24`); a tag after the
dot picks a set of weights (`swin_b_224.in22k`). A name without a tag means the best ImageNet-1k weights. Paper
numbers (params in millions, GMACs, top-1) are the official README's; `gmacs` is what the official `flops()`
prints, i.e. multiply-adds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

ARCHS: dict[str, dict] = {
    # litgpt-style rows: the official configs/ presets (embed dim, depths, heads)
    "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    "t_c24": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
    # swinzoo's own nano models (not official): trained on the built-in `shapes` data, shipped in the wheel
    "n": dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
}

IN22K_CLASSES = 21841
RELEASES = "https://github.com/SwinTransformer/storage/releases/download"


@dataclass(frozen=True)
class Weights:
    """One released set of weights for a zoo entry."""

    tag: str  # in1k | in22k | in22k_ft_in1k
    hub_repo: str | None  # Hugging Face repo holding them
    hub_format: str  # format of that repo: timm | official
    official_url: str  # the GitHub release file
    top1: float | None  # ImageNet-1k top-1 from the official README (None for 22k-only heads)
    num_classes: int = 1000
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    package_file: str | None = None  # a file in swinzoo/data shipped with the package (swinzoo's own models)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    version: int
    arch: str
    img_size: int
    window_size: int
    params_m: float  # paper, millions
    gmacs: float  # paper "FLOPs" = multiply-adds, G
    weights: tuple[Weights, ...] = field(default_factory=tuple)
    default_tag: str = "in1k"
    official: bool = True  # False for swinzoo's own models: params/GMACs are ours, top-1 is on `shapes`

    def config(self, tag: str | None = None, **overrides) -> SwinConfig:
        w = self.weights_for(tag) if self.weights else None
        base = dict(
            version=self.version, img_size=self.img_size, window_size=self.window_size, **ARCHS[self.arch],
            num_classes=w.num_classes if w else 1000,
            pretrained_window_sizes=w.pretrained_window_sizes if w else (0, 0, 0, 0),
        )
        base.update(overrides)
        return SwinConfig(**base)

    def weights_for(self, tag: str | None) -> Weights:
        tag = tag or self.default_tag
        for w in self.weights:
            if w.tag == tag:
                return w
        raise SwinzooError(f"{self.name} has no weights tagged .{tag}; available: {[w.tag for w in self.weights]}")


def _v1(size: str, res: int, params_m: float, gmacs: float, tags: dict[str, float | None], default: str) -> ZooEntry:
    window = 7 if res == 224 else 12
    long = {"t": "tiny", "s": "small", "b": "base", "l": "large"}[size]
    timm_name = f"swin_{long}_patch4_window{window}_{res}"
    files = {  # the official release file of each tag; v1.0.8 files end in _finetune, v1.0.0 ones do not
        "in1k": f"v1.0.0/{timm_name}.pth",
        "in22k": f"{'v1.0.8' if size in 'ts' else 'v1.0.0'}/{timm_name}_22k.pth",
        "in22k_ft_in1k": f"v1.0.8/{timm_name}_22kto1k_finetune.pth" if size in "ts"
        else f"v1.0.0/{timm_name}_22kto1k.pth",
    }
    weights = tuple(
        Weights(tag, f"timm/{timm_name}.ms_{tag}", "timm", f"{RELEASES}/{files[tag]}", top1,
                IN22K_CLASSES if tag == "in22k" else 1000)
        for tag, top1 in tags.items()
    )
    return ZooEntry(f"swin_{size}_{res}", 1, size, res, window, params_m, gmacs, weights, default)


def _v2(size: str, res: int, window: int, params_m: float, gmacs: float, tag: str, top1: float | None,
        official_file: str, timm_name: str, pretrained=(0, 0, 0, 0)) -> ZooEntry:
    w = Weights(tag, f"timm/{timm_name}.ms_{tag}", "timm", f"{RELEASES}/v2.0.0/{official_file}", top1,
                IN22K_CLASSES if tag == "in22k" else 1000, pretrained)
    return ZooEntry(f"swinv2_{size}_{res}_w{window}", 2, size, res, window, params_m, gmacs, (w,), tag)


def _merge(a: ZooEntry, b: ZooEntry, default: str) -> ZooEntry:
    return ZooEntry(a.name, a.version, a.arch, a.img_size, a.window_size, a.params_m, a.gmacs,
                    a.weights + b.weights, default)


_PWS_192 = (12, 12, 12, 6)  # effective windows of the 192 px / w12 22k pre-training (stage 3 is 6x6)
ENTRIES: list[ZooEntry] = [
    _v1("t", 224, 28.3, 4.5, {"in1k": 81.2, "in22k_ft_in1k": 80.9, "in22k": None}, "in1k"),
    _v1("s", 224, 49.6, 8.7, {"in1k": 83.2, "in22k_ft_in1k": 83.2, "in22k": None}, "in22k_ft_in1k"),
    _v1("b", 224, 87.8, 15.4, {"in1k": 83.5, "in22k_ft_in1k": 85.2, "in22k": None}, "in22k_ft_in1k"),
    _v1("b", 384, 87.9, 47.1, {"in1k": 84.5, "in22k_ft_in1k": 86.4, "in22k": None}, "in22k_ft_in1k"),
    _v1("l", 224, 196.5, 34.5, {"in22k_ft_in1k": 86.3, "in22k": None}, "in22k_ft_in1k"),
    _v1("l", 384, 196.7, 103.9, {"in22k_ft_in1k": 87.3, "in22k": None}, "in22k_ft_in1k"),
    ZooEntry("swin_t_c24_256", 1, "t_c24", 256, 8, 28.3, 5.9, (
        Weights("in1k", None, "official", f"{RELEASES}/v1.0.5/swin_tiny_c24_patch4_window8_256.pth", 81.6),)),
    _v2("t", 256, 8, 28.3, 5.9, "in1k", 81.8, "swinv2_tiny_patch4_window8_256.pth", "swinv2_tiny_window8_256"),
    _v2("s", 256, 8, 49.7, 11.5, "in1k", 83.7, "swinv2_small_patch4_window8_256.pth", "swinv2_small_window8_256"),
    _v2("b", 256, 8, 87.9, 20.3, "in1k", 84.2, "swinv2_base_patch4_window8_256.pth", "swinv2_base_window8_256"),
    _v2("t", 256, 16, 28.3, 6.6, "in1k", 82.8, "swinv2_tiny_patch4_window16_256.pth", "swinv2_tiny_window16_256"),
    _v2("s", 256, 16, 49.7, 12.6, "in1k", 84.1, "swinv2_small_patch4_window16_256.pth", "swinv2_small_window16_256"),
    _merge(
        _v2("b", 256, 16, 87.9, 21.8, "in1k", 84.6, "swinv2_base_patch4_window16_256.pth",
            "swinv2_base_window16_256"),
        _v2("b", 256, 16, 87.9, 21.8, "in22k_ft_in1k", 86.2,
            "swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth", "swinv2_base_window12to16_192to256",
            _PWS_192),
        "in22k_ft_in1k",
    ),
    _v2("b", 384, 24, 87.9, 54.7, "in22k_ft_in1k", 87.1, "swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth",
        "swinv2_base_window12to24_192to384", _PWS_192),
    _v2("l", 256, 16, 196.7, 47.5, "in22k_ft_in1k", 86.9, "swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth",
        "swinv2_large_window12to16_192to256", _PWS_192),
    _v2("l", 384, 24, 196.7, 115.4, "in22k_ft_in1k", 87.6,
        "swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth", "swinv2_large_window12to24_192to384", _PWS_192),
    _v2("b", 192, 12, 109.3, 11.8, "in22k", None, "swinv2_base_patch4_window12_192_22k.pth",
        "swinv2_base_window12_192"),
    _v2("l", 192, 12, 228.8, 26.0, "in22k", None, "swinv2_large_patch4_window12_192_22k.pth",
        "swinv2_large_window12_192"),
]



def _nano(name: str, version: int, params_m: float, gmacs: float, top1: float) -> ZooEntry:
    """A swinzoo nano model: 64 px, window 4, 10 `shapes` classes; weights in swinzoo/data/NAME.safetensors."""
    w = Weights("shapes", None, "swinzoo", "", top1, 10, package_file=f"{name}.safetensors")
    return ZooEntry(name, version, "n", 64, 4, params_m, gmacs, (w,), "shapes", official=False)


# top-1 here is on the `shapes` val split at 64 px (README "Fine-tuning"), not ImageNet
ENTRIES += [
    _nano("swin_n_64", 1, 2.28, 0.0282, None),
    _nano("swinv2_n_64_w4", 2, 2.31, 0.0281, None),
]

ZOO: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}


def split_name(name: str) -> tuple[str, str | None]:
    base, _, tag = name.partition(".")
    return base, tag or None


def is_zoo_name(name: str) -> bool:
    return split_name(name)[0] in ZOO


def get_entry(name: str) -> tuple[ZooEntry, str | None]:
    """`swin_b_224.in22k` -> (entry, "in22k"); an unknown name gets an error naming the closest ones."""
    base, tag = split_name(name)
    if base not in ZOO:
        close = difflib.get_close_matches(base, list(ZOO), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `swinzoo list` for the names"
        raise SwinzooError(f"unknown model name {name!r}: {hint}")
    entry = ZOO[base]
    if tag is not None:
        entry.weights_for(tag)
    return entry, tag


def zoo_config(name: str, **overrides) -> SwinConfig:
    entry, tag = get_entry(name)
    return entry.config(tag, **overrides)


def list_models() -> list[str]:
    """Every zoo name, and every name.tag."""
    names = []
    for e in ENTRIES:
        names.append(e.name)
        names.extend(f"{e.name}.{w.tag}" for w in e.weights)
    return names
