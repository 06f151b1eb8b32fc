"""A model held in memory as the source of push, export, convert, read_checkpoint, load_model and save_model, as
timm's push_to_hub(model, repo) and transformers' model.push_to_hub take one: swinzoo's models, the Lightning modules
around them, torch.compile's and DataParallel's wrappers, a Checkpoint, and timm / transformers models by their keys.
Anything else is one SwinzooError line naming what is accepted."""

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import swinzoo
from swinzoo.converters.native import PROVENANCE_KEY
from swinzoo.errors import SwinzooError

from .conftest import randomized
from .formats_helpers import SMALL, randomize

X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def classifier(num_classes: int = 3) -> swinzoo.SwinTransformer:
    return randomized(swinzoo.create_model("swin_n_64", num_classes=num_classes)).eval()


def file_provenance(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()[PROVENANCE_KEY])


def file_keys(path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def logits64(model, x=X64):
    with torch.no_grad():
        return model.double().eval()(x.double())


# ------------------------------------------------------------------------------------------------ the reported three
def test_push_dry_run_of_a_model_object_writes_the_timm_folder(tmp_path):
    model = classifier()
    out = swinzoo.push(model, repo="me/x", dry_run=tmp_path / "pp")
    folder = tmp_path / "pp"
    assert out == str(folder) and {"model.safetensors", "config.json", "README.md"} <= {p.name for p in
                                                                                       folder.iterdir()}
    block = json.loads((folder / "config.json").read_text())["swinzoo"]
    assert block["config"]["num_classes"] == 3 and block["metrics"] is None
    assert block["provenance"]["in_memory"]["object"] == "SwinTransformer"
    assert block["provenance"]["zoo"] == "swin_n_64"  # where the model came from stays on record
    again = swinzoo.load_model(folder)
    assert torch.allclose(logits64(again), logits64(model), atol=1e-6)
    card = " ".join((folder / "README.md").read_text().split())
    # the card says the weights are the object's, maybe trained since it was made
    assert "- weights: those an in-memory `SwinTransformer` held (float32), maybe trained or edited since" in card


def test_export_of_a_model_object_to_timm_matches_its_logits_in_float64(tmp_path):
    timm = pytest.importorskip("timm")
    model = classifier()
    swinzoo.export(model, to="timm", output=tmp_path / "t")
    theirs = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    assert (logits64(theirs) - logits64(model)).abs().max() <= 1e-6


def test_convert_of_a_model_object_moves_it_and_records_both(tmp_path):
    model = classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    done = swinzoo.convert(model, tmp_path / "m96.safetensors", res=96)
    assert done.config.img_size == 96 and done.config.window_size == 6
    provenance = file_provenance(tmp_path / "m96.safetensors")
    assert provenance["in_memory"]["object"] == "SwinTransformer" and "transfer" in provenance
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched


# ------------------------------------------------------------------------------------------------ reading an object
def test_read_checkpoint_of_a_model_object_is_a_copy():
    model = classifier()
    checkpoint = swinzoo.read_checkpoint(model)
    assert checkpoint.config == model.config and set(checkpoint.state_dict) == set(model.state_dict())
    checkpoint.state_dict["head.bias"] += 1
    assert not torch.equal(checkpoint.state_dict["head.bias"], model.head.bias)


def test_load_model_of_a_model_object_is_a_new_model_with_its_logits():
    model = classifier()
    copy = swinzoo.load_model(model)
    assert copy is not model and type(copy) is swinzoo.SwinTransformer
    assert torch.equal(logits64(copy), logits64(model))
    backbone = swinzoo.load_model(model, features_only=True)
    assert isinstance(backbone, swinzoo.SwinBackbone)


def test_a_headless_model_object_converts_and_refuses_the_timm_push_only_where_it_must(tmp_path):
    model = randomized(swinzoo.create_model("swin_n_64", num_classes=0))
    swinzoo.convert(model, tmp_path / "h.safetensors")
    assert swinzoo.load_model(tmp_path / "h.safetensors").config.num_classes == 0


def test_a_backbone_object_converts_and_exports_as_a_backbone(tmp_path):
    backbone = swinzoo.load_model("swin_n_64", features_only=True)
    swinzoo.convert(backbone, tmp_path / "bb.safetensors")
    again = swinzoo.load_model(tmp_path / "bb.safetensors")
    assert isinstance(again, swinzoo.SwinBackbone)
    swinzoo.export(backbone, to="official", output=tmp_path / "bb.pth")
    with pytest.raises(SwinzooError, match="detection backbone"):
        swinzoo.push(backbone, repo="me/x", dry_run=tmp_path / "pp")


def test_a_simmim_object_keeps_its_decoder_and_mask_settings(tmp_path):
    simmim = swinzoo.load_simmim("swin_n_64.simmim", mask_ratio=0.5)
    swinzoo.convert(simmim, tmp_path / "enc.safetensors")  # the official fine-tune load: the encoder
    assert swinzoo.load_model(tmp_path / "enc.safetensors").config.num_classes == 0
    swinzoo.export(simmim, to="simmim", output=tmp_path / "s.pth")
    swinzoo.save_model(simmim, tmp_path / "s.safetensors")
    again = swinzoo.load_simmim(tmp_path / "s.safetensors")
    assert again.mask_ratio == 0.5 and swinzoo.load_simmim(simmim).mask_ratio == 0.5
    assert torch.equal(again.decoder[0].weight, simmim.decoder[0].weight)
    with pytest.raises(SwinzooError, match="SimMIM pretraining model"):
        swinzoo.push(simmim, repo="me/x", dry_run=tmp_path / "pp")


def test_a_checkpoint_object_is_a_source(tmp_path):
    checkpoint = swinzoo.read_checkpoint("swin_n_64")
    swinzoo.convert(checkpoint, tmp_path / "c.safetensors", res=96)
    assert swinzoo.load_model(tmp_path / "c.safetensors").config.img_size == 96


# ------------------------------------------------------------------------------------------------ wrapped models
def test_lightning_modules_give_their_model(tmp_path):
    from swinzoo.train.module import SwinClassifier
    from swinzoo.train.simmim_module import SimMIMPretrainer

    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=3)
    swinzoo.export(module, to="timm", output=tmp_path / "t")
    assert swinzoo.load_model(tmp_path / "t").config.num_classes == 3
    provenance = swinzoo.read_checkpoint(module).provenance
    assert provenance["in_memory"]["object"] == "SwinClassifier.model"
    assert provenance["recipe"]["name"] == module.recipe.name
    swinzoo.push(module, repo="me/x", dry_run=tmp_path / "pp")
    pretrainer = SimMIMPretrainer.from_pretrained("swin_n_64.simmim")
    swinzoo.save_model(pretrainer, tmp_path / "p.safetensors")
    assert isinstance(swinzoo.load_simmim(tmp_path / "p.safetensors"), swinzoo.SimMIM)
    # predict (and evaluate) take them as they take the model they hold
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    assert swinzoo.predict(module, tmp_path / "red.png", topk=1) == swinzoo.predict(module.model, tmp_path / "red.png",
                                                                                      topk=1)
    assert swinzoo.predict(torch.compile(module.model), tmp_path / "red.png", topk=1)[0]["predictions"]


def test_torch_compile_and_data_parallel_wrappers_are_unwrapped(tmp_path):
    model = classifier()
    for wrapped in (torch.compile(model), torch.nn.DataParallel(model)):
        swinzoo.save_model(wrapped, tmp_path / "w.safetensors")
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in file_keys(tmp_path / "w.safetensors"))
        assert torch.equal(logits64(swinzoo.load_model(tmp_path / "w.safetensors")), logits64(model))
        (tmp_path / "w.safetensors").unlink()
        swinzoo.convert(wrapped, tmp_path / "w.safetensors")
        assert torch.equal(logits64(swinzoo.load_model(tmp_path / "w.safetensors")), logits64(model))
        (tmp_path / "w.safetensors").unlink()
    provenance = swinzoo.read_checkpoint(torch.compile(model)).provenance
    assert "torch.compile" in provenance["in_memory"]["object"]
    state_dict = torch.compile(model).state_dict()  # a compiled model's state dict reads as a bare weight file does
    assert swinzoo.read_checkpoint(state_dict).config.num_classes == 3


def test_save_model_refuses_what_is_not_a_swinzoo_model(tmp_path):
    for thing in (3, {"a": "b"}, torch.nn.Linear(2, 2)):
        with pytest.raises(SwinzooError, match="SwinTransformer") as e:
            swinzoo.save_model(thing, tmp_path / "x.safetensors")
        assert "\n" not in str(e.value)
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------------------ dtype and weights
def test_a_bf16_model_is_written_as_it_holds_and_the_provenance_says_so(tmp_path):
    model = classifier().to(torch.bfloat16)
    swinzoo.convert(model, tmp_path / "b.safetensors")
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as f:
        assert f.get_tensor("head.weight").dtype == torch.bfloat16
    assert file_provenance(tmp_path / "b.safetensors")["in_memory"]["dtype"] == "bfloat16"
    swinzoo.export(model.to(torch.float16), to="timm", output=tmp_path / "t")  # timm's push writes what it holds too
    with safe_open(str(tmp_path / "t" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("head.fc.weight").dtype == torch.float16


def test_a_model_on_the_meta_device_is_refused_in_one_line(tmp_path):
    with torch.device("meta"):
        model = swinzoo.SwinTransformer(swinzoo.create_model("swin_n_64").config)
    for verb in (lambda: swinzoo.convert(model, tmp_path / "m.safetensors"),
                 lambda: swinzoo.save_model(model, tmp_path / "m.safetensors"),
                 lambda: swinzoo.push(model, repo="me/x", dry_run=tmp_path / "pp")):
        with pytest.raises(SwinzooError, match="meta device") as e:
            verb()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "pp").exists()


def test_non_finite_weights_are_refused_unless_allowed(tmp_path):
    model = classifier()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(SwinzooError, match="head.bias holds NaN"):
        swinzoo.convert(model, tmp_path / "n.safetensors")
    with pytest.raises(SwinzooError, match="head.bias holds NaN"):
        swinzoo.push(model, repo="me/x", dry_run=tmp_path / "pp")
    swinzoo.convert(model, tmp_path / "n.safetensors", allow_nonfinite=True)


# ------------------------------------------------------------------------------------------------ other libraries
def test_a_timm_model_object_reads_by_its_keys_and_keeps_its_logits(tmp_path):
    timm = pytest.importorskip("timm")
    theirs = randomize(timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4, num_classes=5,
                                         **SMALL)).eval()
    swinzoo.convert(theirs, tmp_path / "t.safetensors")
    ours = swinzoo.load_model(tmp_path / "t.safetensors")
    assert (logits64(ours) - logits64(theirs)).abs().max() <= 1e-6
    assert file_provenance(tmp_path / "t.safetensors")["in_memory"]["object"] == "SwinTransformer (timm)"


@pytest.mark.parametrize("pretrained_windows", [(0, 0, 0, 0), (3, 3, 4, 2)])
def test_a_timm_v2_model_object_reads_its_geometry_from_its_modules(pretrained_windows, tmp_path):
    """V2 weights do not say the window; a timm model object does (its attention modules), so no arch= is needed:
    it was refused with "pass arch=NAME", though timm's own push_to_hub takes the object as it is."""
    timm = pytest.importorskip("timm")
    theirs = randomize(timm.create_model("swinv2_tiny_window8_256", img_size=64, window_size=4, num_classes=5,
                                         pretrained_window_sizes=pretrained_windows, **SMALL)).eval()
    swinzoo.convert(theirs, tmp_path / "v2.safetensors")
    ours = swinzoo.load_model(tmp_path / "v2.safetensors")
    assert (ours.config.img_size, ours.config.window_size) == (64, 4)
    assert (logits64(ours) - logits64(theirs)).abs().max() <= 1e-6
    theirs.set_input_size(img_size=(96, 96), window_size=6)  # moved in memory: the object's geometry now
    swinzoo.convert(theirs, tmp_path / "moved.safetensors")
    ours = swinzoo.load_model(tmp_path / "moved.safetensors")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    assert (logits64(ours, x) - logits64(theirs, x)).abs().max() <= 1e-6


def test_a_transformers_model_object_reads_with_its_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=64, window_size=4, embed_dim=24, depths=[2, 2, 2, 2],
                                       num_heads=[1, 2, 4, 8], num_labels=5)
    theirs = randomize(transformers.Swinv2ForImageClassification(config)).eval()
    swinzoo.convert(theirs, tmp_path / "h.safetensors")
    ours = swinzoo.load_model(tmp_path / "h.safetensors")
    with torch.no_grad():
        expected = theirs.double()(pixel_values=X64.double()).logits
    assert (logits64(ours) - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("thing", [3, {"a": "b"}, torch.nn.Linear(2, 2), None], ids=["int", "dict", "linear", "none"])
def test_any_other_object_is_one_line_naming_what_is_accepted(thing, tmp_path):
    verbs = {
        "push": lambda: swinzoo.push(thing, repo="me/x", dry_run=tmp_path / "pp"),
        "export": lambda: swinzoo.export(thing, to="timm", output=tmp_path / "t"),
        "convert": lambda: swinzoo.convert(thing, tmp_path / "c.safetensors"),
        "read_checkpoint": lambda: swinzoo.read_checkpoint(thing),
        "load_model": lambda: swinzoo.load_model(thing),
    }
    for name, verb in verbs.items():
        with pytest.raises(SwinzooError) as e:
            verb()
        message = str(e.value)
        assert "\n" not in message and type(thing).__name__ in message, (name, message)
        assert "SwinTransformer" in message and "path" in message, (name, message)
    assert list(tmp_path.iterdir()) == []


PUSH_AND_LOAD = """
import torch, swinzoo
from tests.conftest import randomized
model = randomized(swinzoo.create_model("swin_n_64", num_classes=3)).eval()
module = torch.compile(model)
print(swinzoo.push(module, repo="acme/obj"))
again = swinzoo.load_model("hf-hub:acme/obj").eval()
x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
with torch.no_grad():
    assert (again.double()(x) - model.double()(x)).abs().max() <= 1e-6
assert again.provenance["in_memory"]["object"] == "torch.compile(SwinTransformer)", again.provenance
print("ok")
"""


def test_a_model_object_pushes_to_the_loopback_hub_and_loads_back(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from .hub_emulator import HubEmulator

    with HubEmulator(token="hf_test") as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_test", HF_HOME=str(tmp_path / "home"),
                   HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        run = subprocess.run([sys.executable, "-c", PUSH_AND_LOAD], env=env, capture_output=True, text=True,
                             timeout=300, cwd=Path(__file__).parents[1])
        assert run.returncode == 0 and run.stdout.endswith("ok\n"), run.stderr[-3000:]
        assert hub.calls.count("commit") == 1
        assert {"README.md", "config.json", "model.safetensors"} <= set(hub.files("acme/obj"))


def test_a_checkpoint_object_predicts_and_a_bf16_model_loads_as_float32(tmp_path):
    Image.new("RGB", (64, 64), (30, 200, 30)).save(tmp_path / "green.png")
    model = classifier()
    rows = swinzoo.predict(swinzoo.read_checkpoint(model), tmp_path / "green.png", topk=2)
    assert rows == swinzoo.predict(model, tmp_path / "green.png", topk=2)
    copy = swinzoo.load_model(model.to(torch.bfloat16))
    assert next(copy.parameters()).dtype == torch.float32
    assert copy.provenance["in_memory"]["dtype"] == "bfloat16"


def test_a_lightning_module_around_a_timm_model_gives_the_timm_model(tmp_path):
    timm = pytest.importorskip("timm")
    import lightning as L

    class TimmClassifier(L.LightningModule):  # the usual timm + Lightning script
        def __init__(self):
            super().__init__()
            self.model = randomize(timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4,
                                                     num_classes=5, **SMALL)).eval()

    module = TimmClassifier()
    swinzoo.convert(torch.compile(module), tmp_path / "t.safetensors")
    assert (logits64(swinzoo.load_model(tmp_path / "t.safetensors")) - logits64(module.model)).abs().max() <= 1e-6
    assert file_provenance(tmp_path / "t.safetensors")["in_memory"]["object"] == (
        "torch.compile(TimmClassifier.model = SwinTransformer (timm))")
