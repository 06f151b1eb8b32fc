"""What an ML engineer writes against swinzoo's documented Python API (README "Python API"), for a type checker:
every line is correct use, so any error is a defect in swinzoo's annotations. Never run, only checked: by `.ci/run`
(not pytest: over a minute cold, torch's own types), or by hand from the repository root:

    MYPYPATH=. mypy --strict --follow-imports=silent tests/typecheck/user_script.py

`--follow-imports=silent` reports on this file only, as mypy does for an installed swinzoo (py.typed)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from typing_extensions import assert_type

import swinzoo
from swinzoo import SwinBackbone, SwinTransformer
from swinzoo.train.module import SwinClassifier, trainer_kwargs
from swinzoo.train.simmim_module import SimMIMPretrainer


def classify(images: torch.Tensor) -> torch.Tensor:
    names: list[str] = swinzoo.list_models("swinv2*") + swinzoo.list_models(pretrained=True)
    assert names
    model = swinzoo.create_model("swin_t_224", num_classes=10)
    model = swinzoo.create_model("swin_base_patch4_window7_224", pretrained=True, num_classes=5)
    model.set_fast_path(False)
    model.reset_classifier(5)
    features = model.forward_features(images)
    pooled: torch.Tensor = model.forward_head(features, pre_logits=True)
    final, maps = model.forward_intermediates(images)
    loaded = swinzoo.load_model("swin_b_224")
    logits: torch.Tensor = loaded(images)
    transform = swinzoo.create_transform(loaded)
    config: dict[str, object] = swinzoo.data_config(model)
    print(pooled.shape, final.shape, len(maps), transform, config, model.config.num_classes, model.provenance)
    return logits


def detect(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    backbone = swinzoo.load_model("swin_t_224", features_only=True, out_indices=(1, 2, 3), frozen_stages=1)
    channels: list[int] = backbone.feature_info.channels()
    print(channels)
    created = swinzoo.create_model("swin_t_224", features_only=True)
    maps: tuple[torch.Tensor, ...] = created(images)
    ours: tuple[torch.Tensor, ...] = backbone(images)
    return ours + maps


def exact_types(images: torch.Tensor, flag: bool) -> None:
    assert_type(swinzoo.create_model("swin_t_224"), SwinTransformer)
    assert_type(swinzoo.create_model("swin_t_224", features_only=True), SwinBackbone)
    assert_type(swinzoo.create_model("swin_t_224", features_only=flag), SwinTransformer | SwinBackbone)
    assert_type(swinzoo.load_model("det.pth", features_only=True), SwinBackbone)
    assert_type(swinzoo.load_model("swin_t_224", features_only=False), SwinTransformer)
    assert_type(swinzoo.load_model("det.pth", out_indices=(1, 2, 3)), SwinTransformer | SwinBackbone)
    assert_type(swinzoo.load_simmim("swin_n_64.simmim"), swinzoo.SimMIM)
    assert_type(swinzoo.create_model("swin_t_224").forward_intermediates(images, intermediates_only=True),
                list[torch.Tensor])
    assert_type(swinzoo.create_model("swin_t_224").forward_intermediates(images),
                tuple[torch.Tensor, list[torch.Tensor]])
    assert_type(swinzoo.create_transform(224)(images), torch.Tensor)


def files(tmp: Path) -> None:
    ckpt = swinzoo.read_checkpoint("swin_tiny_patch4_window7_224.pth")
    state: dict[str, torch.Tensor] = ckpt.state_dict
    moved, cfg, report = swinzoo.transfer(state, ckpt.config, ckpt.config.replace(img_size=384))
    print(len(moved), cfg.img_size, report)
    converted = swinzoo.convert("swin_b_224", tmp / "swin_b_384.safetensors", res=384)
    out: Path = converted.output
    print(out, converted.config.window_size, converted.how_to_load)
    swinzoo.export(out, to="timm", output=tmp / "out_dir")
    saved: Path = swinzoo.save_model(swinzoo.load_model(out), tmp / "copy.safetensors")
    info: dict[str, object] = swinzoo.model_info(saved)
    local: Path = swinzoo.download("swin_b_224")
    url: str = swinzoo.push("runs/n128", repo="me/swin-n-128", dry_run="push_preview")
    print(info, local, url)


def train(tmp: Path) -> None:
    result = swinzoo.finetune("swin_n_64", res=128, data="shapes", out=str(tmp / "n128"))
    if result is not None:
        run: Path = result.out
        print(run, result.metrics)
    pre = swinzoo.pretrain("swin_n_64", data="shapes", max_steps=200, out=str(tmp / "pre"))
    if pre is not None:
        print(pre.out, pre.metrics)
    simmim = swinzoo.load_simmim(tmp / "pre")
    images = torch.rand(2, 3, 64, 64)
    loss, reconstruction = simmim(images, simmim.mask_generator()(len(images)))
    loss.backward()
    metrics = swinzoo.evaluate(str(tmp / "n128"), data="shapes")
    top1: float = metrics["top1"]
    rows = swinzoo.predict(str(tmp / "n128"), ["img.png"], topk=3)
    print(top1, rows[0]["predictions"], reconstruction.shape)


def lightning(datamodule: L.LightningDataModule, loader: torch.utils.data.DataLoader[torch.Tensor]) -> None:
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, res=96, recipe="nano_finetune")
    net: nn.Module = module.model
    trainer = L.Trainer(max_steps=1000, **trainer_kwargs(module.recipe))
    trainer.fit(module, datamodule=datamodule)
    module = SwinClassifier.load_from_checkpoint("best.ckpt")
    trainer.test(module, datamodule=datamodule)
    pretrainer = SimMIMPretrainer.from_pretrained("swin_n_64.simmim")
    L.Trainer(max_steps=1000, **trainer_kwargs(pretrainer.recipe)).fit(pretrainer, loader)
    print(net)


def errors() -> None:
    try:
        swinzoo.load_model("nope")
    except swinzoo.SwinzooError as e:
        print(f"error: {e}")
