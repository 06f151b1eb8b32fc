"""`swinzoo pretrain` (SimMIM) end to end on the nano models and `shapes` (CPU, a few steps each), its recipes, its
bad inputs (one line, nothing left behind) and the hand-over to `swinzoo finetune`."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.cli import cli_main
from swinzoo.train.recipes import load_recipe
from swinzoo.train.recon_grid import grid_size
from swinzoo.train.shapes import render
from tests.conftest import one_error_line, run_cli

FAST = ["--batch-size", "8", "--num-workers", "0", "--trainer", "limit_val_batches=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """5 steps of SimMIM on the nano V1 model's encoder: the folder `swinzoo pretrain` writes."""
    out = tmp_path_factory.mktemp("pretrain") / "a"
    assert cli_main(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "5", "--out", str(out),
                     *FAST]) == 0
    return out


def test_pretrain_writes_a_simmim_model_metrics_and_pictures(pretrained):
    for name in ("model.safetensors", "metrics.json", "last.ckpt", "run.json", "config.yaml", "logs/metrics.csv",
                 "reconstructions/latest.png", "reconstructions/step_000005.png"):
        assert (pretrained / name).is_file(), name
    metrics = json.loads((pretrained / "metrics.json").read_text())
    assert metrics["global_step"] == 5 and metrics["n"] == 16  # 2 val batches of 8
    assert math.isfinite(metrics["val_loss"]) and 0 < metrics["val_loss"] < 5
    model = swinzoo.load_simmim(pretrained / "model.safetensors")
    assert isinstance(model, swinzoo.SimMIM) and model.config.img_size == 64 and model.config.num_classes == 0
    # the source's own fine-tune recipe (the nano models': nano_finetune), not Swin-B's ImageNet one
    assert model.provenance["finetune_recipe"] == "nano_finetune" and model.provenance["dataset"] == "shapes"
    assert model.provenance["simmim"]["mask_patch_size"] == 32 and model.provenance["pretrain"]["global_step"] == 5
    assert model.provenance["recipe"]["name"] == "simmim_pretrain"
    checkpoint = swinzoo.read_checkpoint(pretrained)  # the folder, as `finetune --from OUT` reads it
    assert "decoder.0.weight" in checkpoint.state_dict and "encoder.mask_token" in checkpoint.state_dict
    with Image.open(pretrained / "reconstructions/latest.png") as img:
        assert img.size == grid_size(8, 64, 64) == (1190, 424)  # 8 images enlarged to 128 px, 3 rows, labels


def test_resume_continues_to_more_steps(pretrained, tmp_path, capsys):
    out = tmp_path / "a"
    shutil.copytree(pretrained, out)
    code, stdout, err = run_cli(["pretrain", "--resume", out, "--max-steps", "7"], capsys)
    assert code == 0, err
    assert "at global step 5" in stdout
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 7
    assert (out / "reconstructions/step_000007.png").is_file()
    # the folder was copied: Lightning's version counter would have put the new checkpoint beside last.ckpt
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 7
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["last.ckpt"]
    # what run.json fixes is refused beside --resume, and a finished run has no steps left to train
    code, _, err = run_cli(["pretrain", "--resume", out, "--mask-ratio", "0.3", "--max-steps", "9"], capsys)
    assert code == 2 and "--mask-ratio cannot change a resumed run" in err and "--from" in err
    code, _, err = run_cli(["pretrain", "--resume", out], capsys)
    assert code == 2 and "the run finished at step 7" in err and "give --max-steps above 7" in err
    code, _, err = run_cli(["pretrain", "--resume", out, "--max-steps", "6"], capsys)
    assert code == 2 and "give --max-steps above 7" in err
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 7  # refusals leave the run as it was
    plan = json.loads((out / "run.json").read_text())
    del plan["provenance"]["task"]  # what a fine-tuning run's run.json looks like to pretrain
    (out / "run.json").write_text(json.dumps(plan))
    code, _, err = run_cli(["pretrain", "--resume", out], capsys)
    assert code == 2 and "is a fine-tuning run, not a pretraining one" in err


def test_a_pretraining_run_records_its_environment_and_a_resume_its_own(pretrained, tmp_path):
    """As a fine-tune: run.json and the SimMIM model's provenance name what the run resolved (versions, device,
    precision); a resume adds its own to its `resumed` entry and leaves the run's as it was."""
    out = tmp_path / "a"
    shutil.copytree(pretrained, out)
    env = json.loads((out / "run.json").read_text())["provenance"]["environment"]
    assert env["torch"] == torch.__version__ and env["accelerator"] == "cpu" and env["world_size"] == "1"
    assert swinzoo.load_simmim(out).provenance["environment"] == env
    assert swinzoo.pretrain(resume=str(out), max_steps=6).metrics["global_step"] == 6
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert provenance["environment"] == env and provenance["resumed"][0]["environment"]["torch"] == torch.__version__


def test_a_resume_whose_epochs_end_before_its_step_is_refused(pretrained, tmp_path, capsys):
    """--epochs 1 of 3 batches (--trainer.limit_train_batches 3) is a budget of 3 steps, below the 5 the run stands
    at: refused as --max-steps 3 is, the run left as it was (Lightning trained one more step, to 6)."""
    out = tmp_path / "a"
    shutil.copytree(pretrained, out)
    before = (out / "run.json").read_text()
    code, _, err = run_cli(["pretrain", "--resume", out, "--epochs", "1", "--trainer.limit_train_batches", "3"],
                           capsys)
    assert code == 2, err
    one_error_line(err, "the run finished at step 5", "1 epoch of 3 steps ends at step 3", "--max-steps above 5")
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 5
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 5
    assert (out / "run.json").read_text() == before  # the refused changes are not the plan of the next resume
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["hparams.yaml", "metrics.csv"]


def test_a_simmim_source_continues_with_its_mask_token_and_decoder(pretrained, tmp_path):
    source = swinzoo.load_simmim(pretrained)
    result = swinzoo.pretrain(str(pretrained / "model.safetensors"), data="shapes", max_steps=2, batch_size=8,
                              num_workers=0, lr=1e-12, out=str(tmp_path / "b"), trainer={"limit_val_batches": 1})
    assert result.metrics["global_step"] == 2 and math.isfinite(result.metrics["val_loss"])
    model = swinzoo.load_simmim(result.out)
    assert model.provenance["simmim"]["start"].startswith("a SimMIM checkpoint")
    before, after = source.state_dict(), model.state_dict()
    for key in ("encoder.mask_token", "decoder.0.weight", "encoder.patch_embed.proj.weight"):
        assert torch.allclose(before[key], after[key], atol=1e-6), key  # a lr of 1e-12 moves nothing


def test_scratch_with_a_zoo_name_starts_fresh(tmp_path):
    # no data given: the zoo entry's (the nano models': shapes), fresh weights or not
    result = swinzoo.pretrain("swin_n_64", scratch=True, max_steps=1, batch_size=8, num_workers=0,
                              mask_patch_size=16, norm_targets=True, out=str(tmp_path / "s"),
                              trainer={"limit_val_batches": 1})
    model = swinzoo.load_simmim(result.out)
    assert model.provenance["dataset"] == "shapes" and model.provenance["finetune_recipe"] == "nano_finetune"
    assert model.provenance["simmim"]["start"] == "fresh weights of the swin_n_64 architecture"
    assert model.provenance["simmim"]["mask_patch_size"] == 16 and model.provenance["parent"] == {}
    assert model.provenance["simmim"]["norm_targets"] and math.isfinite(result.metrics["val_loss"])
    assert (result.out / "reconstructions/latest.png").is_file()  # drawn from the locally normalised prediction


def image_files(folder: Path, count: int, res: int = 64) -> Path:
    """`count` PNG files in `folder` itself: no train/ or val/, no class folders."""
    folder.mkdir(parents=True)
    for i in range(count):
        img = render(i % 10, res, seed=i)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"img_{i:03d}.png")
    return folder


def test_a_plain_image_folder_and_a_v2_source_at_a_new_resolution(tmp_path, capsys):
    data = image_files(tmp_path / "photos", 20)
    out = tmp_path / "v2"
    code, stdout, err = run_cli(["pretrain", "--from", "swinv2_n_64_w4", "--res", "96", "--data", data,
                                 "--max-steps", "2", "--out", out, "--batch-size", "4", "--num-workers", "0"], capsys)
    assert code == 0, err
    assert "validation: 2 images of" in stdout and "held out" in stdout  # 10% of 20, seeded
    assert "resolution 64 -> 96" in stdout  # the encoder moved by the transfer
    model = swinzoo.load_simmim(out)
    assert model.config.img_size == 96 and model.config.version == 2
    assert model.provenance["finetune_recipe"] == "nano_finetune"
    assert json.loads((out / "metrics.json").read_text())["n"] == 2
    with Image.open(out / "reconstructions/latest.png") as img:
        assert img.size == grid_size(2, 96, 96)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bb") / "backbone.safetensors"
    swinzoo.save_model(swinzoo.load_model("swin_n_64", features_only=True), path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--from", "swin_n_64", "--res", "80"], "--mask-patch-size 32: mask patch 32 does not divide the input 80x80"),
    (["--from", "swin_n_64", "--mask-patch-size", "128"], "smaller than one mask patch (128 px)"),
    (["--from", "BACKBONE"], "is a detection backbone (no final norm)"),
    (["--from", "BACKBONE", "--scratch"], "--scratch builds fresh weights of a zoo architecture"),
    (["--from", "swin_n_64", "--mask-ratio", "0"], "--mask-ratio 0.0: must be a number in (0, 1]"),
    (["--from", "swin_n_64", "--res", "48", "--mask-patch-size", "16"], "multiple of the encoder stride (32 px)"),
    (["--from", "swin_n_64", "--data", "NOWHERE"], "no such folder"),
])
def test_bad_inputs_are_one_line_and_leave_nothing(args, message, backbone_file, tmp_path, capsys):
    out = tmp_path / "runs" / "bad"
    args = [str(backbone_file) if a == "BACKBONE" else str(tmp_path / "nowhere") if a == "NOWHERE" else a
            for a in args]
    if "--data" not in args:
        args += ["--data", "shapes"]
    code, _, err = run_cli(["pretrain", *args, "--max-steps", "2", "--out", out, *FAST], capsys)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "runs").exists()


def test_print_config_and_help(capsys):
    code, stdout, _ = run_cli(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--mask-ratio", "0.5",
                               "--print-config"], capsys)
    assert code == 0 and "from: swin_n_64" in stdout and "mask_ratio: 0.5" in stdout
    code, stdout, _ = run_cli(["pretrain", "--help"], capsys)
    assert code == 0 and "--mask-patch-size" in stdout and "--trainer.NAME" in stdout
    code, _, err = run_cli(["pretrain", "--from", "swin_n_64", "--trainer.max_step", "3"], capsys)
    assert code == 2 and "--trainer.max_step: not a Trainer option; did you mean max_steps?" in err


def test_simmim_recipes_hold_the_official_values(capsys):
    r = load_recipe("simmim_pretrain")
    assert (r.epochs, r.warmup_epochs, r.base_lr, r.warmup_lr, r.min_lr) == (100, 10, 2e-4, 1e-6, 1e-5)
    assert (r.weight_decay, r.drop_path_rate, r.clip_grad, r.eps, tuple(r.betas)) == (0.05, 0.0, 5.0, 1e-8,
                                                                                     (0.9, 0.999))
    assert tuple(r.crop_scale) == (0.67, 1.0) and r.layer_decay == 1.0 and r.res is None
    assert (r.rand_augment, r.random_erasing, r.mixup, r.cutmix) == (None, 0.0, 0.0, 0.0)
    assert (r.mask_patch_size, r.mask_ratio, r.norm_targets) == (32, 0.6, False)
    for name, layer_decay, window in (("simmim_finetune", 0.9, 7), ("simmim_finetune_v2", 0.75, 14)):
        f = load_recipe(name)
        assert (f.res, f.window, f.layer_decay, f.drop_path_rate, f.weight_decay) == (224, window, layer_decay, 0.1,
                                                                                       0.05)
        assert (f.epochs, f.warmup_epochs, f.base_lr, f.warmup_lr, f.min_lr) == (100, 20, 1.25e-3, 2.5e-7, 2.5e-7)
        assert (f.mixup, f.cutmix, f.rand_augment, f.random_erasing, f.label_smoothing) == (0.8, 1.0, 9, 0.25, 0.1)
    code, stdout, _ = run_cli(["recipes"], capsys)
    assert code == 0 and all(n in stdout for n in ("simmim_pretrain", "simmim_finetune", "simmim_finetune_v2"))


def test_masks_are_reproducible_and_differ_by_rank_and_step():
    from swinzoo.train.rng import TRAIN_MASK_STREAM, stream_seed

    draw = [swinzoo.MaskGenerator(64, 16, 4, 0.6, seed=stream_seed(0, TRAIN_MASK_STREAM, rank, step, 0))(4)
            for rank, step in ((0, 0), (0, 0), (1, 0), (0, 1))]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2]) and not torch.equal(draw[0], draw[3])
    assert draw[0].shape == (4, 16, 16) and int(draw[0][0].sum()) == math.ceil(16 * 0.6) * 16  # 10 of 16 units


def test_finetune_starts_from_the_pretrained_encoder(pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    code, stdout, err = run_cli(["finetune", "--from", pretrained / "model.safetensors", "--data", "shapes",
                                 "--max-steps", "2", "--out", out, *FAST], capsys)
    assert code == 0, err
    assert "recipe nano_finetune: the fine-tune recipe the source was trained to use" in stdout
    model = swinzoo.load_model(out)
    assert model.config.num_classes == 10 and model.provenance["recipe"]["name"] == "nano_finetune"


def test_the_named_fine_tune_recipe_is_the_sources_else_the_official_one():
    from swinzoo.train.recipes import Recipe
    from swinzoo.train.simmim_start import finetune_recipe_for

    assert finetune_recipe_for(Recipe(), {}, 1) == "simmim_finetune"  # an official architecture, or --scratch
    assert finetune_recipe_for(Recipe(), {}, 2) == "simmim_finetune_v2"
    assert finetune_recipe_for(Recipe(), {"finetune_recipe": "nano_finetune"}, 1) == "nano_finetune"
    assert finetune_recipe_for(Recipe(finetune_recipe="mine"), {"finetune_recipe": "nano_finetune"}, 1) == "mine"
    shipped = swinzoo.load_simmim("swin_n_64.simmim")
    assert shipped.provenance["finetune_recipe"] == "nano_finetune"


def test_every_pretrain_example_parses(tmp_path, monkeypatch, capsys):
    """The examples of `swinzoo pretrain --help`; a `> FILE` of --print-config is what the next --config reads."""
    from swinzoo.commands import finetune, pretrain
    from swinzoo.train.options import FinetuneOptions
    from swinzoo.train.pretrain_options import PretrainOptions

    monkeypatch.chdir(tmp_path)
    lines = [line.split("#")[0].strip() for line in pretrain.EXAMPLES.splitlines()[1:]]
    assert len(lines) >= 6
    for line in lines:
        command, _, redirect = line.partition(" > ")
        args = command.split()[1:]
        verb, options = (pretrain, PretrainOptions) if args[0] == "pretrain" else (finetune, FinetuneOptions)
        capsys.readouterr()
        result = verb.parse(args[1:])
        if redirect:
            assert result == 0, line
            Path(redirect.strip()).write_text(capsys.readouterr().out)
        else:
            assert isinstance(result, options), line


def test_shipped_simmim_nano_weights_reconstruct_shapes():
    """`swin_n_64.simmim` (embedded, docs/simmim.md) is a trained SimMIM model: on shapes images it fills masked
    patches with a far smaller L1 than the same model with fresh weights, and it fine-tunes through the zoo name."""
    from torchvision.transforms import v2

    images = torch.stack([render(label % 10, 64, seed=9000 + label) for label in range(16)]).float() / 255
    images = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(images)
    shipped = swinzoo.load_simmim("swin_n_64.simmim", mask_patch_size=16).eval()
    fresh = swinzoo.load_simmim("swin_n_64", mask_patch_size=16).eval()
    torch.nn.init.zeros_(fresh.decoder[0].weight)  # predicts the (zero) mean: a fair floor for an untrained model
    mask = shipped.mask_generator(seed=0)(16)
    with torch.no_grad():
        trained, untrained = shipped(images, mask)[0].item(), fresh(images, mask)[0].item()
    assert shipped.provenance["shipped"]["as"] == "swin_n_64.simmim" and shipped.config.num_classes == 0
    assert trained < 0.6 * untrained, (trained, untrained)
    with pytest.raises(swinzoo.SwinzooError, match="load it with swinzoo.load_simmim"):
        swinzoo.load_model("swin_n_64.simmim")


def test_a_resume_within_an_epoch_reads_the_rest_of_the_epoch_in_the_straight_runs_order(tmp_path, monkeypatch):
    """As for fine-tuning (tests/test_resume.py): 12 training images in batches of 4, resumed after step 4 of 9."""
    import lightning as L

    from swinzoo.train.simmim_data import Transformed
    from tests.test_finetune import image_folder
    from tests.test_resume import training_reads

    class CrashAt(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 5:
                raise RuntimeError("crash")

    read = training_reads(monkeypatch, Transformed)
    data = image_folder(tmp_path / "data")
    run = dict(data=str(data), max_steps=9, batch_size=4, num_workers=0, trainer={"limit_val_batches": 1})
    swinzoo.pretrain("swin_n_64", out=str(tmp_path / "a"), **run)
    straight = read.copy()
    assert len(straight) == 36
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.pretrain("swin_n_64", out=str(tmp_path / "b"), ckpt_every=2,
                         **{**run, "trainer": {**run["trainer"], "callbacks": [CrashAt()]}})
    read.clear()
    swinzoo.pretrain(resume=str(tmp_path / "b"), trainer=run["trainer"])
    assert read == straight[16:]


def test_ddp_validation_counts_each_image_once(tmp_path):
    """13 validation images on 2 processes: the sampler pads one rank's share with a copy of the first image,
    which neither n nor the loss may count."""
    import subprocess
    import sys

    from tests.test_finetune import env, image_folder

    data = image_folder(tmp_path / "data")
    (data / "val/b/6.png").write_bytes((data / "val/b/0.png").read_bytes())
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "swinzoo", "pretrain", "--from", "swin_n_64", "--data", str(data),
                           "--max-steps", "1", "--out", str(out), "--batch-size", "4", "--num-workers", "0",
                           "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp"],
                          env=env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["n"] == 13
    # the decoder's input in the standard layout: DDP's gradient buckets match the weight gradients' strides
    assert "Grad strides do not match" not in proc.stderr


def test_a_runs_mask_and_targets_travel_with_its_weights(tmp_path):
    """`load_simmim(OUT)` and `pretrain --from OUT/model.safetensors` take the run's --mask-patch-size,
    --mask-ratio and --norm-targets; what the caller gives still wins."""
    out = tmp_path / "a"
    assert cli_main(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "1", "--out", str(out),
                     "--mask-patch-size", "16", "--mask-ratio", "0.5", "--norm-targets", *FAST]) == 0
    model = swinzoo.load_simmim(out)
    assert (model.mask_patch_size, model.mask_ratio, model.norm_targets) == (16, 0.5, True)
    model = swinzoo.load_simmim(out, mask_patch_size=32, norm_targets=False)
    assert (model.mask_patch_size, model.mask_ratio, model.norm_targets) == (32, 0.5, False)
    assert cli_main(["pretrain", "--from", str(out / "model.safetensors"), "--data", "shapes", "--max-steps", "1",
                     "--out", str(tmp_path / "b"), "--mask-ratio", "0.6", *FAST]) == 0
    recipe = json.loads((tmp_path / "b/run.json").read_text())["recipe"]
    assert (recipe["mask_patch_size"], recipe["mask_ratio"], recipe["norm_targets"]) == (16, 0.6, True)


def test_recipe_keys_change_the_recipe_the_run_would_use(tmp_path, capsys):
    """--recipe.KEY VALUE over simmim_pretrain (not Recipe's fine-tune defaults), and over the masks a SimMIM
    source's run hands on, recorded in run.json and config.yaml."""
    out = tmp_path / "a"
    code, stdout, err = run_cli(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "1", "--out",
                                 out, "--mask-patch-size", "16", "--recipe.base_lr", "1e-3", *FAST], capsys)
    assert code == 0, err
    assert "recipe simmim_pretrain (with base_lr 0.001 set over it)" in stdout
    run = json.loads((out / "run.json").read_text())
    official = load_recipe("simmim_pretrain").to_dict()
    assert run["recipe"] == {**official, "base_lr": 1e-3, "mask_patch_size": 16, "max_steps": 1, "batch_size": 8}
    assert run["provenance"]["recipe_overrides"] == {"base_lr": 1e-3}
    assert "\nrecipe_overrides:\n  base_lr: 0.001\n" in (out / "config.yaml").read_text()
    code, _, err = run_cli(["pretrain", "--from", out / "model.safetensors", "--data", "shapes", "--max-steps", "1",
                            "--out", tmp_path / "b", "--recipe.mask_ratio", "0.4", *FAST], capsys)
    assert code == 0, err
    recipe = json.loads((tmp_path / "b/run.json").read_text())["recipe"]
    assert (recipe["name"], recipe["mask_patch_size"], recipe["mask_ratio"]) == ("simmim_pretrain", 16, 0.4)


def test_a_recipe_for_the_other_command_is_refused(tmp_path, capsys):
    """A fine-tune recipe's mixup, RandAugment and 0.08 crops are no pretraining, and a pretraining recipe's
    masks no fine-tune: each command names the recipes it takes."""
    code, _, err = run_cli(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--recipe", "simmim_finetune",
                            "--max-steps", "1", "--out", tmp_path / "a", *FAST], capsys)
    assert code == 2 and "simmim_finetune is a fine-tuning recipe" in err and "simmim_pretrain" in err, err
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--data", "shapes", "--recipe", "simmim_pretrain",
                            "--max-steps", "1", "--out", tmp_path / "b", *FAST], capsys)
    assert code == 2 and "simmim_pretrain is a pretraining recipe" in err and "swinzoo pretrain" in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert {load_recipe(n).task for n in ("simmim_pretrain", "simmim_finetune", "nano", "finetune")} == {
        "pretrain", "finetune"}


def test_validation_masks_belong_to_images_not_batches(tmp_path):
    """Each validation image gets the same mask at any --batch-size, so val/loss compares across runs."""
    import lightning as L

    from swinzoo.train.recipes import Recipe
    from swinzoo.train.simmim_data import SimMIMDataModule
    from swinzoo.train.simmim_module import SimMIMPretrainer
    from tests.test_finetune import image_folder

    data = image_folder(tmp_path / "data")  # 12 validation images
    cfg = swinzoo.create_model("swin_n_64").config.replace(num_classes=0, class_names=None)
    module = SimMIMPretrainer(cfg.to_dict(), Recipe(mask_patch_size=16).to_dict(), 8)
    losses = []
    for batch in (4, 8):
        dm = SimMIMDataModule(str(data), 64, batch, Recipe(mask_patch_size=16), num_workers=0)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
        losses.append(trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), losses


def test_a_run_that_is_all_warmup_says_so(tmp_path, capsys):
    """--epochs at or below the recipe's warmup_epochs: the lr only rises, and the plan says so."""
    from swinzoo.train.recipes import Recipe, warmup_note
    from tests.test_finetune import image_folder

    assert warmup_note(Recipe(epochs=30, warmup_epochs=5)) is None
    assert warmup_note(Recipe(epochs=30, warmup_epochs=5, max_steps=10)) is None
    assert "all 3 epochs" in warmup_note(Recipe(epochs=3, warmup_epochs=10))
    code, stdout, err = run_cli(["pretrain", "--from", "swin_n_64", "--data", image_folder(tmp_path / "d"),
                                 "--epochs", "1", "--out", tmp_path / "a", "--batch-size", "4", "--num-workers", "0"],
                                capsys)
    assert code == 0, err
    assert "warmup covers all 1 epochs" in " ".join(stdout.split()) and "--epochs above 10" in stdout


def test_the_picture_denormalises_with_the_visible_pixels_only():
    """With --norm-targets the prediction is drawn in image units with local statistics of the pixels the model
    saw: what lies under the mask must not leak into the picture (a zero prediction would show its outline)."""
    from swinzoo.train.recon_grid import from_local_norm

    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    visible = torch.ones(2, 1, 64, 64)
    visible[:, :, 16:48, 16:48] = 0  # a 32 px mask unit
    other = images * visible + torch.randn_like(images) * (1 - visible) * 5  # other content under the mask
    prediction = torch.randn_like(images)
    torch.testing.assert_close(from_local_norm(prediction, images, 47, visible),
                               from_local_norm(prediction, other, 47, visible))
    # where every pixel is visible, the official statistics (models.simmim.local_stats), in float64: the two sum
    # differently (pooled means / masked sums), which float32 rounding would blur at ~1e-5
    from swinzoo.models.simmim import local_stats

    images, prediction = images.double(), prediction.double()
    mean, std = local_stats(images, 47)
    torch.testing.assert_close(from_local_norm(prediction, images, 47, torch.ones_like(images[:, :1])),
                               prediction * std + mean, rtol=0, atol=1e-10)
