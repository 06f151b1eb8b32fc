"""`swinzoo finetune / eval / predict` end to end on tiny models and data (CPU, a few steps each)."""

import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.config import SwinConfig
from swinzoo.hardware import auto_precision
from swinzoo.models import cpu_gemm
from swinzoo.train.shapes import render
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--batch-size", "4", "--num-workers", "0", "--trainer", "limit_val_batches=2",
        "--trainer", "enable_model_summary=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-stage, 32 px, window 4 V1 model with 3 classes, saved in swinzoo format."""
    path = tmp_path_factory.mktemp("src") / "tiny.safetensors"
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=3)
    swinzoo.save_model(swinzoo.SwinTransformer(cfg), path, {"source": "test"})
    return path


def image_folder(root: Path, classes=("a", "b"), per_class=6) -> Path:
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = render(label, 24, seed=i + (100 if split == "val" else 0))
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / name / f"{i}.png")
    return root


def test_finetune_eval_predict(tiny, tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", "--from", tiny, "--res", "64", "--data", data, "--recipe", "nano_finetune",
                                 "--max-steps", "3", "--out", out, *FAST], capsys)
    assert code == 0, err
    assert "resolution 32 -> 64, window 4 -> 8" in stdout and "re-initialised head.weight" in stdout
    assert '"img_size": 64' in stdout and "total batch 4" in stdout
    precision, why = auto_precision(on_cuda=False)  # the run log says what 'auto' chose and why
    assert f"precision {precision} ({why})" in " ".join(stdout.split())
    if platform.libc_ver()[0] == "glibc":  # a CPU run keeps freed memory for the next step, and says so
        assert "memory glibc keeps freed memory for reuse" in " ".join(stdout.split())
    for name in ("model.safetensors", "metrics.json", "last.ckpt", "run.json", "logs/metrics.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"top1", "top5"} and metrics["global_step"] == 3 and metrics["n"] == 8  # 2 val batches of 4
    # the command as given to cli_main (not the argv of the process that called it), quoted to be replayed
    command = json.loads((out / "run.json").read_text())["command"]
    assert shlex.split(command) == ["swinzoo", "finetune", "--from", str(tiny), "--res", "64", "--data", str(data),
                                    "--recipe", "nano_finetune", "--max-steps", "3", "--out", str(out), *FAST]
    model = swinzoo.load_model(out)
    assert model.config.img_size == 64 and model.config.window_size == 8 and model.config.class_names == ["a", "b"]
    assert model.provenance["recipe"]["name"] == "nano_finetune" and model.provenance["transfer"]["interpolated"]
    code, stdout, err = run_cli(["eval", out / "model.safetensors", "--data", data, "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert list(result) == ["top1", "top5", "n"] and result["n"] == 12
    if platform.libc_ver()[0] == "glibc":  # so does a CPU eval: its batches are freed and made again
        assert "memory glibc keeps freed memory for reuse" in " ".join(err.split())
    code, stdout, err = run_cli(["predict", out, data / "val/a/0.png", "--topk", "2", "--json"], capsys)
    assert code == 0, err
    pred = json.loads(stdout)[0]["predictions"]
    assert {c for c, _ in pred} == {"a", "b"} and sum(p for _, p in pred) == pytest.approx(1.0, abs=1e-5)


def test_finetune_from_python(tiny, tmp_path):
    """`swinzoo.finetune` with keyword arguments: what the CLI calls, Trainer options as a dict."""
    result = swinzoo.finetune(str(tiny), res=64, data=str(image_folder(tmp_path / "data")), recipe="nano_finetune",
                              max_steps=2, batch_size=4, num_workers=0, out=str(tmp_path / "run"),
                              trainer={"limit_val_batches": 1, "enable_model_summary": False})
    assert result.out == tmp_path / "run" and result.metrics["global_step"] == 2 and result.metrics["n"] == 4
    # the call is what the run records as its command, not the argv of the Python process that made it
    command = json.loads((result.out / "run.json").read_text())["command"]
    assert command.startswith(f"swinzoo.finetune({str(tiny)!r}, res=64, ") and "max_steps=2" in command
    assert swinzoo.load_model(result.out).config.img_size == 64
    with pytest.raises(swinzoo.SwinzooError, match="not a Trainer option"):
        swinzoo.finetune(str(tiny), data="shapes", trainer={"max_epoch": 1})


def test_embedded_nano_models_load_offline():
    for name in ("swin_n_64", "swinv2_n_64_w4"):
        from swinzoo.sources import read_checkpoint

        src = read_checkpoint(name)
        assert src.config.img_size == 64 and src.config.window_size == 4 and len(src.config.class_names) == 10
        assert src.provenance["dataset"] == "shapes" and src.provenance["recipe"]["name"] == "nano"


def test_the_run_log_and_provenance_say_the_precision_lightning_runs(tiny, tmp_path, capsys):
    """fp16 AMP is CUDA's: on the CPU Lightning runs 16-mixed as bf16-mixed, and the log and the weights' record
    say so rather than repeating what was asked for."""
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", "--from", tiny, "--data", data, "--recipe", "nano_finetune",
                                 "--max-steps", "1", "--precision", "16-mixed", "--out", out, *FAST], capsys)
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if line.startswith("precision "))
    assert line.startswith("precision bf16-mixed (16-mixed asked for") and "CUDA" in line, line
    assert swinzoo.load_model(out).provenance["finetune"]["precision"] == "bf16-mixed"


class Diverge(L.Callback):
    """What an fp16 run without loss scaling can do: the weights turn NaN during training."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        with torch.no_grad():
            pl_module.model.head.weight.fill_(float("nan"))


def test_diverged_weights_are_an_error_not_a_model(tiny, tmp_path):
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(swinzoo.SwinzooError, match=r"training diverged: .*not finite \(head.weight\); .*--precision"):
        swinzoo.finetune(str(tiny), data=str(data), recipe="nano_finetune", max_steps=1, batch_size=4, num_workers=0,
                         keep="last", out=str(out), trainer={"callbacks": [Diverge()]})
    # no model from NaN weights (last.ckpt stays, as after any failure past the first checkpoint)
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()


def test_weights_that_overflow_the_save_dtype_are_an_error():
    from swinzoo.train.checks import check_finite

    weights = {"a": torch.tensor([1e6]).to(torch.float16), "index": torch.tensor([3])}
    with pytest.raises(swinzoo.SwinzooError, match=r"^--save-dtype float16: the weights do not fit that dtype \(a\); "):
        check_finite(weights, "--save-dtype float16: the weights", "use --save-dtype float32", "do not fit that dtype")
    check_finite({"a": torch.ones(2)}, "", "")


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "swinzoo", *map(str, args)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_ddp_two_cpu_processes(tiny, tmp_path):
    data = image_folder(tmp_path / "data")
    odd = data / "val/b/6.png"  # 13 val images: the sampler pads one rank's share with a copy of the first
    odd.write_bytes((data / "val/b/0.png").read_bytes())
    out = tmp_path / "ddp"
    proc = subprocess.run(cli("finetune", "--from", tiny, "--data", data, "--recipe", "nano_finetune", "--max-steps",
                              "2", "--out", out, "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", *FAST),
                          env=env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "total batch 8" in proc.stdout  # 4 per device x 2 devices
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("precision ") for line in lines) == 1  # the plan once, not once per process
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["n"] == 13  # both ranks' images, synced, the copy not counted


def test_ddp_with_fewer_validation_images_than_processes(tiny, tmp_path):
    """Two validation images (one a class) on three processes: the third rank's batch is only the sampler's
    padding, and it must still take part in the epoch's metric sync (it returned early, and the others waited for
    ever)."""
    data = image_folder(tmp_path / "data")
    for extra in data.glob("val/*/[1-9].png"):
        extra.unlink()
    out = tmp_path / "ddp"
    proc = subprocess.run(cli("finetune", "--from", tiny, "--data", data, "--recipe", "nano_finetune", "--max-steps",
                              "1", "--out", out, "--devices", "3", "--accelerator", "cpu", "--strategy", "ddp", *FAST),
                          env=env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["n"] == 2


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_killed_run_resumes_at_same_step(tiny, tmp_path):
    data = image_folder(tmp_path / "data")
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli("finetune", "--from", tiny, "--data", data, "--recipe", "nano_finetune", "--max-steps",
                                "100000", "--ckpt-every", "1", "--out", out, *FAST),
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "last.ckpt").exists() and checkpoint_step(out / "last.ckpt") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    step = checkpoint_step(out / "last.ckpt")
    first_log = out / "logs/metrics.csv"
    before = first_log.read_bytes() if first_log.exists() else None
    out = out.rename(tmp_path / "moved")  # run.json and last.ckpt name the old folder; the run goes on where it is
    first_log = out / "logs/metrics.csv"
    resumed = subprocess.run(cli("finetune", "--resume", out, "--max-steps", step + 2, "--trainer",
                                 "limit_val_batches=2"), env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at global step {step}" in resumed.stdout
    assert json.loads((out / "metrics.json").read_text())["global_step"] == step + 2
    # not last-v1.ckpt beside the old one, as Lightning's version counter would have it
    assert checkpoint_step(out / "last.ckpt") == step + 2 and not list(out.glob("last-v*"))
    # the resumed part logs beside the first part's log, which Lightning's CSV logger would have deleted
    assert (first_log.read_bytes() if first_log.exists() else None) == before
    resumed_log = out / f"logs/resumed-at-{step}/metrics.csv"
    steps = [int(line.split(",")[2]) for line in resumed_log.read_text().splitlines()[1:] if line.split(",")[2]]
    assert steps and step <= min(steps) and max(steps) <= step + 2


@pytest.mark.parametrize("sig, to", [("SIGTERM", "the process"), ("SIGTERM", "its process group"),
                                     ("SIGINT", "its process group")])
def test_a_signal_mid_run_is_one_line_and_the_run_resumes(sig, to, tiny, tmp_path):
    """SIGTERM once the run has checkpointed: `error: interrupted` alone, exit 130, and --resume goes on. Lightning
    logged "[rank: 0] Received SIGTERM: 15" above it; sent to the process group (`timeout`, `kill -- -PGID`, a
    scheduler; Ctrl-C sends SIGINT so), the data loader workers got it too: the run ended in "unexpected
    RuntimeError: DataLoader worker ... is killed by signal: Terminated", exit 1, or under "Exception ignored in"
    tracebacks of the workers and of a loader interrupted while starting them."""
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    proc = subprocess.Popen(cli("finetune", "--from", tiny, "--data", data, "--recipe", "nano_finetune", "--max-steps",
                                "100000", "--ckpt-every", "1", "--out", out, *FAST[:2], "--num-workers", "2",
                                *FAST[4:]), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "last.ckpt").exists() and checkpoint_step(out / "last.ckpt") >= 1:
            break
        time.sleep(0.2)
    sig = getattr(signal, sig)
    os.killpg(proc.pid, sig) if to == "its process group" else proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == ["error: interrupted"], err[-2000:]
    assert not list(out.glob(".*swinzoo-tmp*")) and not (out / "model.safetensors").exists()
    step = checkpoint_step(out / "last.ckpt")
    resumed = subprocess.run(cli("finetune", "--resume", out, "--max-steps", step + 1), env=env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["global_step"] == step + 1


def shapes_folder(root: Path, per_class: int = 4) -> Path:
    """The nano models' classes as class folders, which sort alphabetically: not the models' order."""
    names = swinzoo.load_model("swin_n_64").config.class_names
    for split, offset in (("train", 0), ("val", 1000)):
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                img = render(label, 64, seed=offset + i)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / name / f"{i}.png")
    return root


def test_the_models_classes_in_folder_order_are_matched_by_name(tmp_path, capsys):
    data = shapes_folder(tmp_path / "shapes")
    by_name = swinzoo.evaluate("swin_n_64", data=str(data), num_workers=0)
    assert "matched by name" in capsys.readouterr().err
    assert by_name["top1"] > 0.5  # 0.86 on the built-in shapes; by index, near 0
    code, out, _ = run_cli(["finetune", "--from", "swin_n_64", "--data", data, "--max-steps", "1", "--out",
                            tmp_path / "run", *FAST], capsys)
    assert code == 0 and "reordered the head's 10 rows to the data's class order" in out
    names = sorted(swinzoo.load_model("swin_n_64").config.class_names)
    assert swinzoo.load_model(tmp_path / "run" / "model.safetensors").config.class_names == names


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_ctrl_c_in_a_training_step_exits_130_and_leaves_nothing(verb, tiny, tmp_path, capsys, monkeypatch):
    """Lightning turns Ctrl+C into SystemExit(1) after its shutdown; the CLI still says `error: interrupted`, 130."""
    from swinzoo.train.module import SwinClassifier
    from swinzoo.train.simmim_module import SimMIMPretrainer

    def ctrl_c(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(SwinClassifier if verb == "finetune" else SimMIMPretrainer, "training_step", ctrl_c)
    out = tmp_path / "run"
    code, _, err = run_cli([verb, "--from", tiny, "--data", image_folder(tmp_path / "d"), "--max-steps", "3",
                            "--out", out, *FAST], capsys)
    assert code == 130 and err.strip().splitlines() == ["error: interrupted"], err
    assert not out.exists()


def test_progress_bar_titles_a_step_bound_run():
    """Lightning's rich bar would title a max_steps run "Epoch 0/-2" (max_epochs = -1)."""
    from types import SimpleNamespace

    from swinzoo.train.progress import StepBoundProgressBar

    bar = StepBoundProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(0).strip() == "Epoch 0"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"


def test_finetune_with_ema_and_layer_decay(tiny, tmp_path, capsys):
    """The recipe's EMA and layer-wise lr decay run end to end: the optimizer gets one lr per layer, and the saved
    weights are the EMA's: they differ from those of the same (deterministic) run without EMA. In fp32 on the CPU
    the log names the library of the fp32 products."""
    data = image_folder(tmp_path / "data")
    base = ("epochs: 1\nbatch_size: 4\nbase_lr: 0.05\nwarmup_epochs: 0\nlayer_decay: 0.5\nseed: 0\nmixup: 0.0\n"
            "cutmix: 0.0\nrand_augment: null\nrandom_erasing: 0.0\nprecision: 32-true\n")
    runs = {}
    for name, extra in (("plain", ""), ("again", ""), ("ema", "ema_decay: 0.5\n")):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(base + extra)
        out = tmp_path / name
        code, stdout, err = run_cli(["finetune", "--from", tiny, "--data", data, "--recipe", recipe,
                                     "--max-steps", "3", "--out", out, *FAST], capsys)
        assert code == 0, err
        assert f"matmul {cpu_gemm.describe()}" in " ".join(stdout.split())
        runs[name] = swinzoo.load_model(out)
    recorded = runs["ema"].provenance["recipe"]
    assert recorded["ema_decay"] == 0.5 and recorded["layer_decay"] == 0.5
    plain, again, ema = (runs[k].state_dict() for k in ("plain", "again", "ema"))
    assert all(torch.equal(plain[k], again[k]) for k in plain)  # so a difference below is the EMA's doing
    assert any(not torch.equal(plain[k], ema[k]) for k in plain)
    ckpt = torch.load(tmp_path / "ema" / "last.ckpt", map_location="cpu", weights_only=True)  # as --resume loads it
    assert len({g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]}) >= 3


def test_finetune_on_a_hugging_face_dataset(tiny, tmp_path):
    """`--data hf:NAME` through the `datasets` library (optional: CI's second phase installs it), offline: a local
    image-folder dataset with a `validation` split, in an empty HF_HOME."""
    pytest.importorskip("datasets")
    data = image_folder(tmp_path / "hf", classes=("cat", "dog"))
    (data / "val").rename(data / "validation")
    out = tmp_path / "run"
    hf_env = {**env(), "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cli("finetune", "--from", tiny, "--data", f"hf:{data}", "--recipe", "nano_finetune",
                              "--max-steps", "2", "--out", out, *FAST),
                          env=hf_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = swinzoo.load_model(out)
    assert model.config.class_names == ["cat", "dog"] and model.config.num_classes == 2
    assert json.loads((out / "metrics.json").read_text())["n"] == 8  # 2 val batches of 4


class TransformSpy(L.Callback):
    """The transforms of the loaders a run trains and validates with."""

    def __init__(self) -> None:
        self.train, self.val = [], []

    def on_train_start(self, trainer, pl_module) -> None:
        self.train.append(trainer.train_dataloader.dataset.transform)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val.append(trainer.val_dataloaders.dataset.transform)


def test_a_run_validates_with_the_preprocessing_its_weights_carry(tmp_path):
    """A source with its own preprocessing (crop_pct 0.95, mean and std 0.5): the run validates as `swinzoo eval`
    of its output does, so metrics.json holds the number eval prints, and training normalises alike."""
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4, num_classes=2,
                     pretrained_window_sizes=(0, 0),
                     preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.95, "crop_mode": "center"})
    source = tmp_path / "src.safetensors"
    swinzoo.save_model(swinzoo.SwinTransformer(cfg), source, {"source": "test"})
    data, spy = image_folder(tmp_path / "data"), TransformSpy()
    result = swinzoo.finetune(str(source), data=str(data), recipe="nano_finetune", max_steps=1, batch_size=4,
                              num_workers=0, out=str(tmp_path / "run"), trainer={"callbacks": [spy]})
    image = Image.open(data / "val/a/0.png").convert("RGB").resize((41, 37))
    expected = swinzoo.create_transform(swinzoo.load_model(result.out))(image)
    assert spy.val and all(torch.equal(tf(image), expected) for tf in spy.val)
    normalise = [t for t in spy.train[0].transforms if type(t).__name__ == "Normalize"]
    assert [list(t.mean) for t in normalise] == [[0.5] * 3] and [list(t.std) for t in normalise] == [[0.5] * 3]


def test_scratch_from_a_zoo_name_keeps_its_data_and_recipe(tmp_path, capsys):
    """Fresh weights of swin_n_64, with the defaults its entry gives a fine-tune: shapes and nano_finetune."""
    out = tmp_path / "scratch"
    code, stdout, err = run_cli(["finetune", "--from", "swin_n_64", "--scratch", "--max-steps", "1", "--out", out,
                                 *FAST], capsys)
    assert code == 0, err
    assert "recipe nano_finetune: the fine-tune recipe" in stdout and "fresh weights" in stdout
    run = json.loads((out / "run.json").read_text())
    assert run["data"] == "shapes" and run["recipe"]["name"] == "nano_finetune"
    assert run["provenance"]["parent"] == {}  # defaults from the entry, weights not from its shipped file


def test_scratch_from_a_file_takes_its_architecture_not_its_weights(tmp_path, capsys):
    """--scratch is fresh weights of the source's architecture for a file too (it had quietly fine-tuned the file's
    weights): nothing transferred, no parent, the file's defaults kept."""
    src = tmp_path / "src.safetensors"
    assert run_cli(["convert", "swin_n_64", "-o", src], capsys)[0] == 0
    out = tmp_path / "scratch"
    code, stdout, err = run_cli(["finetune", "--from", src, "--scratch", "--max-steps", "1", "--out", out, *FAST],
                                capsys)
    assert code == 0, err
    assert "fresh weights" in stdout and "transfer" not in stdout
    run = json.loads((out / "run.json").read_text())
    assert run["provenance"]["parent"] == {} and run["data"] == "shapes"
