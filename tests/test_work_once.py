"""Each command does its expensive work once, counted with a wrapper around the function that does it (not timed)."""

import subprocess
import sys

import torch

from swinzoo.train import recon_grid


def counting(monkeypatch, owner, name: str) -> list:
    """Replace `owner.name` by a wrapper recording each call's arguments; returns the record."""
    calls, real = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_a_reconstruction_picture_is_encoded_once_for_both_files(tmp_path, monkeypatch):
    from PIL import Image

    saves = counting(monkeypatch, Image.Image, "save")
    torch.manual_seed(0)
    images, reconstruction = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    mask = torch.randint(0, 2, (2, 2, 2))
    path = recon_grid.write_reconstructions(tmp_path, 7, images, mask, reconstruction, 32, "step 7")
    assert path == tmp_path / "step_000007.png" and len(saves) == 1
    assert (tmp_path / "latest.png").read_bytes() == path.read_bytes()


def test_export_builds_the_architecture_once(tmp_path, monkeypatch, capsys):
    """A swinzoo file exported as it is: its weights are checked against its config when read and again as the
    export's target, the same architecture: one meta-device build, not one per check."""
    from swinzoo.cli import cli_main
    from swinzoo.models import backbone
    from swinzoo.models.swin import SwinTransformer

    monkeypatch.setattr(backbone, "_SHAPES", {}, raising=False)  # what earlier tests built in this process
    builds = counting(monkeypatch, SwinTransformer, "__init__")
    assert cli_main(["export", "swin_n_64", "--to", "timm", "-o", tmp_path / "timm"]) == 0
    assert len(builds) == 1
    builds.clear()
    monkeypatch.setattr(backbone, "_SHAPES", {})
    assert cli_main(["info", tmp_path / "timm"]) == 0  # read, checked, then counted: params and GMACs
    assert len(builds) == 1


def test_predict_imports_no_training_library(tmp_path):
    """`predict` reads a model and classifies images: Lightning, torchmetrics and the transformers that
    torchmetrics imports (together about 900 modules, over a second) are for training and `eval`."""
    from PIL import Image

    Image.new("RGB", (80, 72), (200, 30, 30)).save(tmp_path / "red.png")
    code = ("import sys; from swinzoo.cli import cli_main; "
            f"assert cli_main(['predict', 'swin_n_64', {str(tmp_path / 'red.png')!r}]) == 0; "
            "print(sorted(m for m in ('lightning', 'torchmetrics', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_download_without_check_imports_no_torch(hub_home):
    """`swinzoo download` fetches files (here: finds them shipped inside swinzoo); torch and the model code (over
    2000 modules) are for --check, which reads the weights."""
    code = ("import sys; from swinzoo.cli import cli_main; assert cli_main(['download', 'swin_n_64']) == 0; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_a_sweep_checks_the_images_of_its_data_once(tmp_path, monkeypatch):
    """`swinzoo eval M --res 64 96` checks every validation image before the first evaluation; the evaluations at
    each resolution then read the same folder, and need not decode every image again to check it."""
    from PIL import Image

    import swinzoo
    from swinzoo import evaluation
    from swinzoo.train import worker_data

    for c, colour in enumerate(("red", "green", "blue")):
        (tmp_path / "d" / "val" / str(c)).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (70 + i, 64), colour).save(tmp_path / "d" / "val" / str(c) / f"{i}.png")
    model = swinzoo.convert("swin_n_64", tmp_path / "m.safetensors", num_classes=3).output
    checks = counting(monkeypatch, worker_data, "check_images")  # ImageFolderSplit's
    rows = evaluation.sweep([str(model)], [64, 96], str(tmp_path / "d"), num_workers=0)
    assert [(r["res"], r["n"]) for r in rows] == [(64, 6), (96, 6)]
    assert len(checks) == 1


def test_reading_and_exporting_a_model_imports_no_compiler(tmp_path):
    """`swinzoo info` / `convert` / `export` build models (on the meta device to check shapes, V1 and V2) and never
    compile: importing torch._dynamo (~900 modules, ~1 s) is for torch.compile alone. torchvision's import pulls it
    in, so commands that read images pay it there, not here."""
    code = ("import sys, torch; from swinzoo.cli import cli_main; "
            f"assert cli_main(['info', 'swinv2_n_64_w4']) == 0; "
            f"assert cli_main(['export', 'swin_n_64', '--to', 'timm', '-o', r'{tmp_path / 'timm'}']) == 0; "
            "m = __import__('swinzoo').create_model('swinv2_n_64_w4').eval(); "
            "m(torch.randn(1, 3, 70, 50)); "
            "print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_index_buffers_follow_the_default_device():
    """The position index and V2's coordinate table are computed on the CPU (no compiler import on the meta device)
    but still land on the device a model is built under, as other buffers do."""
    from swinzoo.models import SwinTransformer
    from swinzoo.zoo import zoo_config

    with torch.device("meta"):
        model = SwinTransformer(zoo_config("swinv2_n_64_w4"))
    assert {b.device.type for b in model.buffers()} == {"meta"}
    cpu = SwinTransformer(zoo_config("swinv2_n_64_w4"))
    attn = cpu.layers[0].blocks[0].attn
    assert attn.relative_coords_table.dtype == torch.float32 and attn.relative_coords_table.device.type == "cpu"


def test_a_plan_is_built_where_the_compiling_flag_is_set_without_dynamo(monkeypatch):
    """torch.export's non-strict tracing sets `torch.compiler.is_compiling()` and runs the Python itself (no
    dynamo to run the disabled build off the graph): the plan is built once, not `_build_plan` calling itself
    through `torch.compiler.disable` until a RecursionError."""
    from swinzoo.models import windows

    monkeypatch.setattr(torch.compiler, "_is_compiling_flag", True)
    plan = windows._build_plan(10, 11, 7, 3)
    monkeypatch.undo()
    eager = windows.WindowPlan(10, 11, 7, 3)
    assert plan.group_sizes == eager.group_sizes and torch.equal(plan.source, eager.source)
    assert torch.equal(plan.group_masks, eager.group_masks)
