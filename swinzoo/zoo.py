"""Every released official Swin V1 and V2 model, as literal data.

A zoo name fixes an architecture at a resolution and window (`swin_b_384`, `swinv2_b_384_w24`); a tag after the
dot picks a set of weights (`swin_b_224.in22k`). A name without a tag means the entry's default weights, the best
ImageNet-1k ones. Paper numbers (params in millions, GMACs, top-1) are the official README's; `gmacs` is what the
official `flops()` prints, i.e. multiply-adds. Everything else about an entry (its timm architecture, the timm
converter's table, bench's timm counterpart) is derived from these rows.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

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
IN1K_TAGS = ("in1k", "in22k_ft_in1k")  # tags whose 1000-way head is ImageNet-1k in its class-index order
# the classes of the built-in `shapes` data (swinzoo.train.shapes draws them), in label order: the nano models' heads
SHAPE_CLASSES = (
    "solid", "stripes_0", "stripes_45", "stripes_90", "stripes_135", "checker", "dots", "rings", "circle", "frame",
)
IN1K_NAMES_FILE = "imagenet1k_classes.txt"
R = "https://github.com/SwinTransformer/storage/releases/download"
PWS_192 = (12, 12, 12, 6)  # effective windows of the 192 px / w12 22k pre-training (stage 3 is 6x6)


@dataclass(frozen=True)
class Weights:
    """One released set of weights of a zoo entry."""

    model: str  # zoo name
    tag: str  # in1k | in22k | in22k_ft_in1k | shapes | simmim
    hub_repo: str | None  # Hugging Face repo holding them (timm's layout), `timm/<timm name>`
    official_url: str | None  # the official release file
    top1: float | None  # ImageNet-1k top-1 from the official README
    num_classes: int = 1000
    pretrained_windows: tuple[int, ...] = (0, 0, 0, 0)  # V2: the windows the CPB was trained with
    package_file: str | None = None  # a file in swinzoo/data shipped with the package (swinzoo's own models)

    @property
    def timm_name(self) -> str | None:
        """timm's model name with its pretrained tag, e.g. `swin_tiny_patch4_window7_224.ms_in1k`."""
        return self.hub_repo.split("/", 1)[1] if self.hub_repo and self.hub_repo.startswith("timm/") else None

    @property
    def timm_arch(self) -> str | None:
        """timm's architecture name, e.g. `swin_tiny_patch4_window7_224`."""
        return self.timm_name.split(".", 1)[0] if self.timm_name else None

    @property
    def class_names(self) -> list[str] | None:
        """The ImageNet-1k names of a 1000-way ImageNet-1k head, the `shapes` names of the nano models' heads; None
        otherwise (no 22k names are shipped)."""
        if self.tag == "shapes" and self.num_classes == len(SHAPE_CLASSES):
            return list(SHAPE_CLASSES)
        return list(imagenet1k_class_names()) if self.tag in IN1K_TAGS and self.num_classes == 1000 else None

    @property
    def loadable(self) -> bool:
        """`load_model(name)` can get these weights: shipped in the package or on the Hub (not only a URL)."""
        return bool(self.hub_repo or self.package_file)

    def package_path(self) -> Path | None:
        """The shipped file of package-data weights (the nano models), or None when they are not in the package."""
        if self.package_file is None:
            return None
        path = Path(str(resources.files("swinzoo.data").joinpath(self.package_file)))
        return path if path.exists() else None


@dataclass(frozen=True)
class ZooEntry:
    name: str
    version: int
    arch: str  # a key of ARCHS
    img_size: int
    window_size: int
    params_m: float  # paper, millions
    gmacs: float  # paper "FLOPs" = multiply-adds, G
    default_tag: str
    weights: tuple[Weights, ...] = field(default_factory=tuple)  # filled from WEIGHTS

    def config(self, tag: str | None = None, **overrides) -> SwinConfig:
        """The architecture with the head of the weights `tag` names (their class names too, for ImageNet-1k)."""
        w = self.weights_for(tag) if self.weights else None
        base = dict(
            version=self.version, img_size=self.img_size, window_size=self.window_size, **ARCHS[self.arch],
            num_classes=w.num_classes if w else 1000,
            pretrained_window_sizes=w.pretrained_windows if w else (0, 0, 0, 0),
            class_names=w.class_names if w else None,
        )
        if "class_names" not in overrides and overrides.get("num_classes", base["num_classes"]) != base["num_classes"]:
            base["class_names"] = None  # another head: the released one's names no longer apply
        base.update(overrides)
        return SwinConfig(**base)

    def weights_for(self, tag: str | None) -> Weights:
        tag = tag or self.default_tag
        for w in self.weights:
            if w.tag == tag:
                return w
        raise SwinzooError(f"{self.name} has no weights tagged .{tag}; available: {[w.tag for w in self.weights]}")


MODELS: list[ZooEntry] = [  # name, version, size (ARCHS), resolution, window, paper params M, GMACs, default tag
    ZooEntry("swin_t_224", 1, "t", 224, 7, 28.3, 4.5, "in1k"),
    ZooEntry("swin_s_224", 1, "s", 224, 7, 49.6, 8.7, "in22k_ft_in1k"),
    ZooEntry("swin_b_224", 1, "b", 224, 7, 87.8, 15.4, "in22k_ft_in1k"),
    ZooEntry("swin_b_384", 1, "b", 384, 12, 87.9, 47.1, "in22k_ft_in1k"),
    ZooEntry("swin_l_224", 1, "l", 224, 7, 196.5, 34.5, "in22k_ft_in1k"),
    ZooEntry("swin_l_384", 1, "l", 384, 12, 196.7, 103.9, "in22k_ft_in1k"),
    ZooEntry("swin_t_c24_256", 1, "t_c24", 256, 8, 28.3, 5.9, "in1k"),
    ZooEntry("swinv2_t_256_w8", 2, "t", 256, 8, 28.3, 5.9, "in1k"),
    ZooEntry("swinv2_s_256_w8", 2, "s", 256, 8, 49.7, 11.5, "in1k"),
    ZooEntry("swinv2_b_256_w8", 2, "b", 256, 8, 87.9, 20.3, "in1k"),
    ZooEntry("swinv2_t_256_w16", 2, "t", 256, 16, 28.3, 6.6, "in1k"),
    ZooEntry("swinv2_s_256_w16", 2, "s", 256, 16, 49.7, 12.6, "in1k"),
    ZooEntry("swinv2_b_256_w16", 2, "b", 256, 16, 87.9, 21.8, "in22k_ft_in1k"),
    ZooEntry("swinv2_b_384_w24", 2, "b", 384, 24, 87.9, 54.7, "in22k_ft_in1k"),
    ZooEntry("swinv2_l_256_w16", 2, "l", 256, 16, 196.7, 47.5, "in22k_ft_in1k"),
    ZooEntry("swinv2_l_384_w24", 2, "l", 384, 24, 196.7, 115.4, "in22k_ft_in1k"),
    ZooEntry("swinv2_b_192_w12", 2, "b", 192, 12, 109.3, 11.8, "in22k"),
    ZooEntry("swinv2_l_192_w12", 2, "l", 192, 12, 228.8, 26.0, "in22k"),
    ZooEntry("swin_n_64", 1, "n", 64, 4, 2.28, 0.0282, "shapes"),
    ZooEntry("swinv2_n_64_w4", 2, "n", 64, 4, 2.31, 0.0281, "shapes"),
]

# One row per released set of weights: zoo name, tag, Hub repo (`timm/<timm name>.<timm tag>`), official
# release URL, ImageNet-1k top-1 of the official README (None for 22k heads and swinzoo's own models).
WEIGHTS: list[Weights] = [
    Weights("swin_t_224", "in1k", "timm/swin_tiny_patch4_window7_224.ms_in1k",
            f"{R}/v1.0.0/swin_tiny_patch4_window7_224.pth", 81.2),
    Weights("swin_t_224", "in22k_ft_in1k", "timm/swin_tiny_patch4_window7_224.ms_in22k_ft_in1k",
            f"{R}/v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth", 80.9),
    Weights("swin_t_224", "in22k", "timm/swin_tiny_patch4_window7_224.ms_in22k",
            f"{R}/v1.0.8/swin_tiny_patch4_window7_224_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_s_224", "in1k", "timm/swin_small_patch4_window7_224.ms_in1k",
            f"{R}/v1.0.0/swin_small_patch4_window7_224.pth", 83.2),
    Weights("swin_s_224", "in22k_ft_in1k", "timm/swin_small_patch4_window7_224.ms_in22k_ft_in1k",
            f"{R}/v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth", 83.2),
    Weights("swin_s_224", "in22k", "timm/swin_small_patch4_window7_224.ms_in22k",
            f"{R}/v1.0.8/swin_small_patch4_window7_224_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_b_224", "in1k", "timm/swin_base_patch4_window7_224.ms_in1k",
            f"{R}/v1.0.0/swin_base_patch4_window7_224.pth", 83.5),
    Weights("swin_b_224", "in22k_ft_in1k", "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
            f"{R}/v1.0.0/swin_base_patch4_window7_224_22kto1k.pth", 85.2),
    Weights("swin_b_224", "in22k", "timm/swin_base_patch4_window7_224.ms_in22k",
            f"{R}/v1.0.0/swin_base_patch4_window7_224_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_b_384", "in1k", "timm/swin_base_patch4_window12_384.ms_in1k",
            f"{R}/v1.0.0/swin_base_patch4_window12_384.pth", 84.5),
    Weights("swin_b_384", "in22k_ft_in1k", "timm/swin_base_patch4_window12_384.ms_in22k_ft_in1k",
            f"{R}/v1.0.0/swin_base_patch4_window12_384_22kto1k.pth", 86.4),
    Weights("swin_b_384", "in22k", "timm/swin_base_patch4_window12_384.ms_in22k",
            f"{R}/v1.0.0/swin_base_patch4_window12_384_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_l_224", "in22k_ft_in1k", "timm/swin_large_patch4_window7_224.ms_in22k_ft_in1k",
            f"{R}/v1.0.0/swin_large_patch4_window7_224_22kto1k.pth", 86.3),
    Weights("swin_l_224", "in22k", "timm/swin_large_patch4_window7_224.ms_in22k",
            f"{R}/v1.0.0/swin_large_patch4_window7_224_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_l_384", "in22k_ft_in1k", "timm/swin_large_patch4_window12_384.ms_in22k_ft_in1k",
            f"{R}/v1.0.0/swin_large_patch4_window12_384_22kto1k.pth", 87.3),
    Weights("swin_l_384", "in22k", "timm/swin_large_patch4_window12_384.ms_in22k",
            f"{R}/v1.0.0/swin_large_patch4_window12_384_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swin_t_c24_256", "in1k", None,
            f"{R}/v1.0.5/swin_tiny_c24_patch4_window8_256.pth", 81.6),
    Weights("swinv2_t_256_w8", "in1k", "timm/swinv2_tiny_window8_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_tiny_patch4_window8_256.pth", 81.8),
    Weights("swinv2_s_256_w8", "in1k", "timm/swinv2_small_window8_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_small_patch4_window8_256.pth", 83.7),
    Weights("swinv2_b_256_w8", "in1k", "timm/swinv2_base_window8_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_base_patch4_window8_256.pth", 84.2),
    Weights("swinv2_t_256_w16", "in1k", "timm/swinv2_tiny_window16_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_tiny_patch4_window16_256.pth", 82.8),
    Weights("swinv2_s_256_w16", "in1k", "timm/swinv2_small_window16_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_small_patch4_window16_256.pth", 84.1),
    Weights("swinv2_b_256_w16", "in1k", "timm/swinv2_base_window16_256.ms_in1k",
            f"{R}/v2.0.0/swinv2_base_patch4_window16_256.pth", 84.6),
    Weights("swinv2_b_256_w16", "in22k_ft_in1k", "timm/swinv2_base_window12to16_192to256.ms_in22k_ft_in1k",
            f"{R}/v2.0.0/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth", 86.2, pretrained_windows=PWS_192),
    Weights("swinv2_b_384_w24", "in22k_ft_in1k", "timm/swinv2_base_window12to24_192to384.ms_in22k_ft_in1k",
            f"{R}/v2.0.0/swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth", 87.1, pretrained_windows=PWS_192),
    Weights("swinv2_l_256_w16", "in22k_ft_in1k", "timm/swinv2_large_window12to16_192to256.ms_in22k_ft_in1k",
            f"{R}/v2.0.0/swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth", 86.9, pretrained_windows=PWS_192),
    Weights("swinv2_l_384_w24", "in22k_ft_in1k", "timm/swinv2_large_window12to24_192to384.ms_in22k_ft_in1k",
            f"{R}/v2.0.0/swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth", 87.6, pretrained_windows=PWS_192),
    Weights("swinv2_b_192_w12", "in22k", "timm/swinv2_base_window12_192.ms_in22k",
            f"{R}/v2.0.0/swinv2_base_patch4_window12_192_22k.pth", None, num_classes=IN22K_CLASSES),
    Weights("swinv2_l_192_w12", "in22k", "timm/swinv2_large_window12_192.ms_in22k",
            f"{R}/v2.0.0/swinv2_large_patch4_window12_192_22k.pth", None, num_classes=IN22K_CLASSES),
    # swinzoo's own nano models (not official): trained on the built-in `shapes` data, shipped in the wheel
    Weights("swin_n_64", "shapes", None,
            None, None, num_classes=10, package_file="swin_n_64.safetensors"),
    Weights("swinv2_n_64_w4", "shapes", None,
            None, None, num_classes=10, package_file="swinv2_n_64_w4.safetensors"),
    # SimMIM-pretrained on the unlabelled `shapes` images (encoder, mask token, decoder; docs/simmim.md)
    Weights("swin_n_64", "simmim", None, None, None, num_classes=0, package_file="swin_n_64_simmim.safetensors"),
]


ZOO: dict[str, ZooEntry] = {m.name: replace(m, weights=tuple(w for w in WEIGHTS if w.model == m.name))
                            for m in MODELS}
ENTRIES: list[ZooEntry] = list(ZOO.values())


@functools.cache
def timm_archs() -> dict[str, tuple[ZooEntry, Weights]]:
    """timm architecture name -> (zoo entry, weights) of every zoo row that timm publishes; where several weights
    share an architecture, the entry's default weights."""
    out: dict[str, tuple[ZooEntry, Weights]] = {}
    for e in ENTRIES:
        for w in e.weights:
            if w.timm_arch and (w.timm_arch not in out or w.tag == e.default_tag):
                out[w.timm_arch] = (e, w)
    return out


def split_name(name: str) -> tuple[str, str | None]:
    """`swin_b_224.in22k` -> ("swin_b_224", "in22k"). timm's spellings are accepted as aliases:
    `swin_base_patch4_window7_224.ms_in22k` -> ("swin_b_224", "in22k"); a timm architecture without a tag names
    the weights timm publishes under it (`swinv2_base_window12to16_192to256` -> swinv2_b_256_w16.in22k_ft_in1k)."""
    base, _, tag = name.partition(".")
    if base not in ZOO and base in timm_archs():
        entry, weights = timm_archs()[base]
        base, tag = entry.name, (tag[3:] if tag.startswith("ms_") else tag) or weights.tag
    return base, tag or None


def is_zoo_name(name: str) -> bool:
    return split_name(name)[0] in ZOO


def get_entry(name: str) -> tuple[ZooEntry, str | None]:
    """`swin_b_224.in22k` -> (entry, "in22k"); an unknown name gets an error naming the closest ones."""
    base, tag = split_name(name)
    if base not in ZOO:
        close = difflib.get_close_matches(base, [*ZOO, *timm_archs()], n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `swinzoo list` for the names"
        raise SwinzooError(f"unknown model name {name!r}: {hint}")
    entry = ZOO[base]
    if tag is not None:
        entry.weights_for(tag)
    return entry, tag


def zoo_config(name: str, **overrides) -> SwinConfig:
    entry, tag = get_entry(name)
    return entry.config(tag, **overrides)


def hub_weights(repo: str) -> Weights | None:
    """The zoo weights published in Hub repo `repo` (`timm/swin_tiny_patch4_window7_224.ms_in1k`), if any."""
    return next((w for w in WEIGHTS if w.hub_repo == repo), None)


@functools.cache
def imagenet1k_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (package data; torchvision's names)."""
    text = resources.files("swinzoo.data").joinpath(IN1K_NAMES_FILE).read_text(encoding="utf-8")
    return tuple(text.splitlines())


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Every zoo name and every name.tag; with `pattern`, those matching it (a glob like `swinv2_*_384`, else a
    substring). `pretrained=True`, as in timm: only the name.tag of weights `load_model` can fetch by name (those
    on the Hub or shipped in the package; not `swin_t_c24_256.in1k`, released only as a file)."""
    names = []
    for e in ENTRIES:
        if not pretrained:
            names.append(e.name)
        names.extend(f"{e.name}.{w.tag}" for w in e.weights if w.loadable or not pretrained)
    return [n for n in names if matches(n, pattern)]


def matches(name: str, pattern: str | None) -> bool:
    """`pattern` is a glob when it has *?[ (as timm's: a glob without a dot matches name.tag by the name before the
    tag), else a substring."""
    if not pattern:
        return True
    if not any(c in pattern for c in "*?["):
        return pattern in name
    base = name.split(".", 1)[0] if "." not in pattern else name
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(base, pattern)
