"""The export path (`swinzoo.models.traceable`): geometry from tensor ops gives the eager path's numbers, for
classifiers and detection backbones, V1 and V2, square, non-square and sizes that are multiples of neither the
patch nor the window. (Exporting through it to ONNX / torch.export is issue 15's next step.)"""

import pytest
import torch

from swinzoo.models import SwinBackbone, SwinTransformer
from swinzoo.models.swin import SwinStage
from swinzoo.models.traceable import traceable
from swinzoo.zoo import zoo_config

SIZES = [(224, 224), (256, 192), (250, 190), (61, 33)]


def tiny(name: str, backbone: bool):
    cfg = zoo_config(name).replace(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5,
                                   class_names=None)
    torch.manual_seed(0)
    model = SwinBackbone(cfg.replace(out_indices=(0, 1, 2, 3))) if backbone else SwinTransformer(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model.double().eval()


@pytest.mark.parametrize("backbone", [False, True], ids=["classifier", "backbone"])
@pytest.mark.parametrize("name", ["swin_t_224", "swinv2_t_256_w8"])
def test_export_path_matches_eager(name, backbone):
    model = tiny(name, backbone)
    for hw in SIZES:
        x = torch.randn(1, 3, *hw, dtype=torch.float64)
        with torch.no_grad():
            eager = model(x)
            with traceable(model):
                exported = model(x)
        eager = eager if isinstance(eager, tuple) else (eager,)
        exported = exported if isinstance(exported, tuple) else (exported,)
        for a, b in zip(eager, exported):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backbone", [False, True], ids=["classifier", "backbone"])
def test_traceable_takes_the_export_path_and_restores_the_switches(backbone, monkeypatch):
    from swinzoo.models import traceable as export_path

    calls = []
    real = export_path.stage_blocks
    monkeypatch.setattr(export_path, "stage_blocks", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    model = tiny("swin_t_224", backbone)
    before = [(s.fast_path, s.traceable) for s in model.modules() if isinstance(s, SwinStage)]
    with traceable(model), torch.no_grad():
        assert all(s.traceable and not s.fast_path for s in model.modules() if isinstance(s, SwinStage))
        model(torch.randn(1, 3, 64, 48, dtype=torch.float64))
    assert len(calls) == 4  # one per stage: the export path ran
    assert [(s.fast_path, s.traceable) for s in model.modules() if isinstance(s, SwinStage)] == before
