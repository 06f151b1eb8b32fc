"""The training augmentation is the official one: timm's `create_transform(..., auto_augment='rand-m9-mstd0.5-inc1',
re_prob=0.25, re_mode='pixel', interpolation='bicubic')`, which the official data/build.py builds. With Python's
`random`, numpy's and torch's generators seeded alike, swinzoo's crop, each RandAugment op, the whole policy,
the random erasing and the whole train transform give timm's output, pixel for pixel."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD
from swinzoo.errors import SwinzooError
from swinzoo.train import augment
from swinzoo.train.data import train_transform
from swinzoo.train.recipes import Recipe, check_recipe
from swinzoo.train.rng import seeded

timm_aa = pytest.importorskip("timm.data.auto_augment")
from timm.data import create_transform  # noqa: E402
from timm.data.random_erasing import RandomErasing as TimmErasing  # noqa: E402
from timm.data.transforms import RandomResizedCropAndInterpolation  # noqa: E402

FILL = augment.mean_fill(IMAGENET_MEAN)
HPARAMS = dict(translate_const=int(64 * 0.45), img_mean=FILL, interpolation=Image.BICUBIC)


def images() -> list[Image.Image]:
    """Small RGB images with edges, gradients, flat areas and noise, so that every op changes pixels."""
    out = []
    for seed, (w, h) in enumerate([(64, 48), (48, 64), (37, 29)]):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        a = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.int32)
        a[h // 4:h // 2, w // 3:2 * w // 3] = (200, 30, 90)  # a flat box
        a += rng.integers(-20, 21, a.shape)
        out.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
    return out


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_the_op_set_is_timms_increasing_set_in_its_order():
    assert list(augment.OPS) == list(timm_aa._RAND_INCREASING_TRANSFORMS)


@pytest.mark.parametrize("name", list(augment.OPS))
@pytest.mark.parametrize("magnitude", [0, 3.7, 9, 10])
def test_each_op_matches_timm(name, magnitude):
    """Both signs (the seeds draw both), magnitude 10 included: timm 1.0 clamps the enhance factor at 0.1 where
    0.4.12 gives 1 - 0.9 = 0.0999...; Pillow blends with a float32 weight, so the images agree."""
    op = timm_aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=HPARAMS)
    for img in images():
        for seed in range(4):
            if name == "PosterizeIncreasing" and magnitude == 10:
                # 0 bits kept: timm 0.4.12 with its era's Pillow (lut i & ~255) gave a black image; Pillow 13
                # refuses 0 bits, so timm 1.0 raises here and there is nothing to compare with
                assert not np.asarray(augment.apply_op(name, img, magnitude, FILL)).any()
                continue
            random.seed(seed)
            theirs = op(img)
            random.seed(seed)
            ours = augment.apply_op(name, img, magnitude, FILL)
            assert same(ours, theirs), (name, magnitude, seed)
            assert not same(ours, img) or name in ("AutoContrast", "Equalize") or magnitude == 0, (name, magnitude)


def test_the_whole_policy_matches_timm():
    """'rand-m9-mstd0.5-inc1': op choice (numpy), probability, magnitude noise and signs (random), same order; the
    generators end in the same state. Draws where timm posterizes to 0 bits (timm 1.0 raises on Pillow 13) are
    skipped, and only those."""
    theirs_tf = timm_aa.rand_augment_transform("rand-m9-mstd0.5-inc1", dict(HPARAMS))
    ours_tf = augment.RandAugment(9, 0.5, fill=FILL)
    compared = skipped = changed = 0
    for seed in range(150):
        for img in images():
            seed_all(seed)
            try:
                theirs = theirs_tf(img)
            except ValueError as e:
                assert "bits" in str(e)
                skipped += 1
                continue
            states = random.getstate(), np.random.get_state()[1].copy()
            seed_all(seed)
            ours = ours_tf(img)
            assert same(ours, theirs), seed
            assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
            compared += 1
            changed += not same(ours, img)
    assert compared > 400 and skipped < 20 and changed > 200, (compared, skipped, changed)


@pytest.mark.parametrize("size, scale", [((64, 48), (0.08, 1.0)), ((37, 29), (0.3, 1.0)), ((200, 20), (0.9, 1.0))])
def test_the_crop_matches_timm(size, scale):
    """(200, 20) with a 0.9 area never fits an aspect of 3/4..4/3: timm's centre-crop fallback."""
    img = images()[0].resize(size)
    theirs_tf = RandomResizedCropAndInterpolation(32, scale=scale, interpolation="bicubic")
    ours_tf = augment.RandomResizedCrop(32, scale)
    for seed in range(30):
        random.seed(seed)
        theirs = theirs_tf(img)
        random.seed(seed)
        assert same(ours_tf(img), theirs), seed


def test_random_erasing_matches_timms_pixel_mode():
    theirs_tf, ours_tf = TimmErasing(0.25, mode="pixel", device="cpu"), augment.RandomErasing(0.25)
    erased = 0
    for seed in range(200):
        x = torch.randn(3, 24, 32, generator=torch.Generator().manual_seed(seed))
        seed_all(seed)
        theirs = theirs_tf(x.clone())
        seed_all(seed)
        ours = ours_tf(x.clone())
        assert torch.equal(ours, theirs), seed
        erased += not torch.equal(ours, x)
    assert 25 < erased < 75, erased  # about a quarter


@pytest.mark.parametrize("res, scale", [(64, (0.08, 1.0)), (32, (0.3, 1.0))])
def test_the_train_transform_is_timms_create_transform(res, scale):
    """swinzoo's train transform for an official recipe against timm's, as the official build_transform calls it:
    the previous one (torchvision's RandAugment, zero erasing) matched none of these."""
    theirs_tf = create_transform(res, is_training=True, scale=scale, auto_augment="rand-m9-mstd0.5-inc1",
                                 re_prob=0.25, re_mode="pixel", interpolation="bicubic", mean=IMAGENET_MEAN,
                                 std=IMAGENET_STD)
    ours_tf = train_transform(res, scale, rand_augment=9, random_erasing=0.25)
    for seed in range(40):
        for img in images():
            seed_all(seed)
            try:
                theirs = theirs_tf(img)
            except ValueError:  # posterize to 0 bits on Pillow 13: see test_the_whole_policy_matches_timm
                continue
            seed_all(seed)
            ours = ours_tf(img)
            assert ours.shape == (3, res, res) and torch.equal(ours, theirs), seed


def test_seeded_seeds_every_generator_the_augmentation_draws_from_and_restores_them():
    tf = train_transform(32, rand_augment=9, random_erasing=1.0)
    img = images()[0]
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    with seeded(1234):
        a = tf(img)
    random.random(), np.random.random(), torch.rand(1)  # other code moving the streams in between
    with seeded(1234):
        b = tf(img)
    with seeded(1235):
        c = tf(img)
    assert torch.equal(a, b) and not torch.equal(a, c)
    random.setstate(before[0])  # undo the draws above: seeded itself left all three as they were
    with seeded(1):
        pass
    assert random.getstate() == before[0]


def test_the_magnitude_is_of_ten_levels():
    check_recipe(Recipe(rand_augment=10))
    with pytest.raises(SwinzooError, match=r"rand_augment=11 is out of range.*\[0, 10\]"):
        check_recipe(Recipe(rand_augment=11))


def test_a_tensor_image_takes_the_pil_path_with_rand_augment():
    """`shapes` yields uint8 tensors: with RandAugment on they are augmented as the same picture in PIL."""
    from torchvision.transforms.v2.functional import to_pil_image

    from swinzoo.train.shapes import ShapesDataset

    x = ShapesDataset("train", 48, 2)[1][0]
    tf = train_transform(32, rand_augment=9, random_erasing=0.5)
    for seed in range(10):
        seed_all(seed)
        a = tf(x)
        seed_all(seed)
        assert torch.equal(a, tf(to_pil_image(x))), seed
