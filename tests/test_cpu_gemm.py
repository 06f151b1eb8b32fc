"""fp32 products through oneDNN (`models/cpu_gemm.py`): the switch, and the same values and gradients as aten's
products (against float64 autograd), from one Linear up to a training step of a whole model."""


import pytest
import torch
import torch.nn.functional as F

from swinzoo import SwinTransformer
from swinzoo.config import SwinConfig
from swinzoo.models import cpu_gemm

from .conftest import randomized, read_at_import

needs_onednn = pytest.mark.skipif(not cpu_gemm.onednn_available(), reason="this torch has no oneDNN")


@pytest.fixture
def backend():
    """Set a backend for one test; the process's own choice comes back afterwards."""
    with cpu_gemm.using(cpu_gemm.requested()):
        yield cpu_gemm.set_backend


def two_stage_model(version: int) -> SwinTransformer:
    """A 64 px, window 4, two-stage model with randomized weights, small enough for a test, large enough to pack."""
    cfg = SwinConfig(version=version, img_size=64, window_size=4, embed_dim=48, depths=(2, 2), num_heads=(2, 4),
                     pretrained_window_sizes=(0, 0), num_classes=10, drop_path_rate=0.0)
    return randomized(SwinTransformer(cfg), scale=0.05)


def fp32_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest deviation relative to the largest value: fp32 rounding of a sum is ~1e-7 of it."""
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@needs_onednn
@pytest.mark.parametrize("vendor, family, flags, chosen, weight_grads, packs", [
    ("AuthenticAMD", 26, "avx2 avx512f", "onednn", "onednn", True),  # Zen 5
    ("AuthenticAMD", 25, "avx2 avx512f", "onednn", "aten", True),  # Zen 4: AVX-512 on 256-bit units
    ("AuthenticAMD", 25, "avx2", "aten", "aten", False),  # Zen 3
    ("GenuineIntel", 6, "avx2 avx512f amx_bf16", "aten", "aten", True),  # MKL, but packed eval products by oneDNN
    ("GenuineIntel", 6, "avx2", "aten", "aten", False)])
def test_auto_takes_onednn_on_amd_with_avx512(vendor, family, flags, chosen, weight_grads, packs, backend,
                                              monkeypatch):
    monkeypatch.setattr(cpu_gemm, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(cpu_gemm, "cpu_family", lambda: family)
    monkeypatch.setattr(cpu_gemm, "cpu_flags", lambda: frozenset(flags.split()))
    onednn_calls = []
    real = cpu_gemm._onednn
    monkeypatch.setattr(cpu_gemm, "_onednn", lambda *args: onednn_calls.append(1) or real(*args))
    grad, x = torch.randn(512, 256), torch.randn(512, 384)  # 50M multiply-adds: above either class's threshold
    small = torch.randn(64, 256)  # 4M: oneDNN's call pays on Zen 5, not on Zen 4
    backend("auto")
    assert (cpu_gemm.backend(), cpu_gemm.weight_grad_backend(), cpu_gemm.packs_fp32()) == (chosen, weight_grads, packs)
    assert ("packed weights" in cpu_gemm.describe()) == (packs and chosen == "aten")
    assert cpu_gemm.applies(small, grad, small.numel() * 256) == (chosen == "onednn" and weight_grads == "onednn")
    cpu_gemm.linear(x, torch.randn(256, 384))
    assert bool(onednn_calls) == (chosen == "onednn")
    onednn_calls.clear()
    assert fp32_error(cpu_gemm.weight_grad(grad, x), grad.double().t() @ x.double()) < 1e-6
    assert bool(onednn_calls) == (weight_grads == "onednn")
    for asked in ("onednn", "aten"):  # as set, every product
        backend(asked)
        assert cpu_gemm.backend() == cpu_gemm.weight_grad_backend() == asked
        assert cpu_gemm.packs_fp32() == (asked == "onednn")
        onednn_calls.clear()
        cpu_gemm.weight_grad(grad, x)
        assert bool(onednn_calls) == (asked == "onednn")


def test_unknown_backend_is_refused(backend):
    with pytest.raises(ValueError, match="onednn, aten"):
        backend("mkl")


@pytest.mark.parametrize("value, chosen", [("aten", "aten"), ("bogus", None)])
def test_environment_variable(value, chosen):
    code = "from swinzoo.models import cpu_gemm; print(cpu_gemm.requested(), cpu_gemm.backend())"
    printed, err = read_at_import(code, cpu_gemm.BACKEND_ENV, value)
    if chosen:
        assert printed == ["aten", chosen]
    else:  # a value it does not know: a warning naming the variable, and "auto"
        assert printed[0] == "auto" and cpu_gemm.BACKEND_ENV in err


@pytest.mark.parametrize("value, packing", [("0", "False"), ("1", "True"), ("", "True"), ("bogus", "True")])
def test_weight_packing_environment_variable(value, packing):
    code = "from swinzoo.models import cpu_gemm; print(cpu_gemm.weight_packing())"
    printed, err = read_at_import(code, cpu_gemm.PACK_ENV, value)
    assert printed == [packing]
    assert (cpu_gemm.PACK_ENV in err) == (value == "bogus")


@needs_onednn
@pytest.mark.parametrize("shape, k, n, with_bias, frozen", [((2, 300, 96), 96, 288, True, None),
                                                            ((700, 384), 384, 96, False, None),
                                                            ((4, 25, 25, 96), 96, 96, True, "x"),
                                                            ((900, 64), 64, 192, True, "weight")])
def test_linear_matches_float64_autograd(shape, k, n, with_bias, frozen, backend):
    backend("onednn")
    torch.manual_seed(0)
    x, w, b = torch.randn(*shape[:-1], k), torch.randn(n, k) / k**0.5, torch.randn(n)
    grad = torch.randn(*shape[:-1], n)
    ref = [t.double().requires_grad_(name != frozen) for t, name in ((x, "x"), (w, "weight"), (b, "bias"))]
    F.linear(ref[0], ref[1], ref[2] if with_bias else None).backward(grad.double())
    ours = [t.clone().requires_grad_(name != frozen) for t, name in ((x, "x"), (w, "weight"), (b, "bias"))]
    y = cpu_gemm.linear(ours[0], ours[1], ours[2] if with_bias else None)
    assert type(y.grad_fn).__name__ == "OneDnnLinearBackward"
    y.backward(grad)
    assert fp32_error(y, F.linear(*[t.detach() for t in ref[:2]], ref[2].detach() if with_bias else None)) < 1e-6
    for mine, theirs, name in zip(ours, ref, ("x", "weight", "bias")):
        if name == frozen or (name == "bias" and not with_bias):
            assert mine.grad is None
        else:
            assert fp32_error(mine.grad, theirs.grad) < 1e-6, name


@needs_onednn
def test_small_products_float64_bf16_and_autocast_stay_on_aten(backend):
    backend("onednn")
    w = torch.randn(96, 96, requires_grad=True)
    assert type(cpu_gemm.linear(torch.randn(49, 96), w).grad_fn).__name__ == "MmBackward0"  # 0.45M MACs
    assert type(cpu_gemm.linear(torch.randn(400, 96), w).grad_fn).__name__ == "OneDnnLinearBackward"
    big = torch.randn(4000, 96)
    assert not cpu_gemm.applies(big.double(), w.double(), 10**9)
    assert not cpu_gemm.applies(big.bfloat16(), w.bfloat16(), 10**9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm.applies(big, w, 10**9)
        assert cpu_gemm.linear(big, w).dtype == torch.bfloat16  # autocast's own Linear
    backend("aten")
    assert not cpu_gemm.applies(big, w, 10**9)


@needs_onednn
def test_empty_batch_gives_zero_gradients(backend):
    backend("onednn")
    w, b = torch.randn(300, 8000, requires_grad=True), torch.randn(300, requires_grad=True)
    cpu_gemm.OneDnnLinear.apply(torch.randn(0, 8000, requires_grad=True), w, b).sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@needs_onednn
@pytest.mark.parametrize("n, k", [(96, 288), (384, 96), (192, 192), (96, 96)])  # oneDNN's orders, MKL's square
@pytest.mark.parametrize("accumulate", [None, torch.float32, torch.bfloat16])
def test_weight_grad_orders_and_accumulation(n, k, accumulate, backend):
    backend("onednn")
    dtype = accumulate or torch.float32
    grad, x = torch.randn(3000, n, dtype=dtype), torch.randn(3000, k, dtype=dtype)
    want = grad.double().t() @ x.double()
    if accumulate is None:
        got = cpu_gemm.weight_grad(grad, x)
    else:  # into an fp32 total, as the MLP node sums its chunks (bf16 products under autocast)
        start = torch.randn(n, k)
        got = cpu_gemm.weight_grad(grad, x, accumulate=start.clone())
        want = want + start.double()
    assert got.shape == (n, k) and got.dtype == torch.float32 and got.is_contiguous()
    assert fp32_error(got, want) < (1e-6 if dtype == torch.float32 else 1e-2)


@needs_onednn
@pytest.mark.parametrize("version", [1, 2])
def test_training_step_and_inference_equal_to_aten(version, backend):
    """A whole model, fp32: logits and every parameter gradient through oneDNN equal aten's up to fp32 rounding
    (the sums run in another order), in training (autograd nodes, the MLP node's chunks) and in eval (fast path)."""
    model = two_stage_model(version)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    results = {}
    for name in ("aten", "onednn"):
        backend(name)
        model.zero_grad(set_to_none=True)
        model.train()
        F.cross_entropy(model(x), y).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        with torch.inference_mode():
            logits = model.eval()(x)
        results[name] = logits, grads
    (ref_logits, ref_grads), (logits, grads) = results["aten"], results["onednn"]
    assert fp32_error(logits, ref_logits.double()) < 1e-5
    for n, g in grads.items():
        assert fp32_error(g, ref_grads[n].double()) < 1e-4, n


@needs_onednn
def test_export_traces_aten_linear_with_a_free_batch(backend):
    """torch.export sees aten's linear (a graph other runtimes know), and no guard on the batch from the size test."""
    backend("onednn")
    layer = cpu_gemm.Linear(512, 512)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.export.export(layer, (torch.randn(64, 512),), dynamic_shapes=({0: batch},), strict=False)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert targets == {"aten.linear.default"}
    assert program.module()(torch.randn(3, 512)).shape == (3, 512)


@pytest.fixture
def packing():
    """Set weight packing for one test; the process's setting comes back afterwards."""
    before = cpu_gemm.weight_packing()
    yield cpu_gemm.set_weight_packing
    cpu_gemm.set_weight_packing(before)


def float64_linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return F.linear(x.double(), layer.weight.double(), layer.bias.double())


@needs_onednn
def test_packed_weight_is_the_same_product_and_follows_the_weights(backend, packing):
    """Eval mode, no autograd: the packed weight gives the plain weight's product, and is packed again after an
    in-place update, `load_state_dict` or `.data = ...`; training mode, the switch and the aten backend keep the
    plain weight."""
    backend("onednn")
    packing(True)
    layer = cpu_gemm.Linear(192, 768).eval()
    x = torch.randn(2107, 192)
    with torch.no_grad():
        got = layer(x)
        assert layer.packed.tensor is not None and layer.packed.tensor.is_mkldnn
        packing(False)
        assert fp32_error(layer(x), got.double()) < 1e-6  # bit-equal on Zen 5: only the weight's layout differs
        packing(True)
        assert fp32_error(got, float64_linear(x, layer)) < 1e-6
        layer.weight.mul_(-2)  # an optimizer step would do this in place
        assert fp32_error(layer(x), float64_linear(x, layer)) < 1e-6
        layer.load_state_dict({"weight": torch.randn(768, 192), "bias": torch.randn(768)})
        assert fp32_error(layer(x), float64_linear(x, layer)) < 1e-6
        layer.weight.data = torch.randn(768, 192)
        assert fp32_error(layer(x), float64_linear(x, layer)) < 1e-6
        packed = layer.packed.tensor
        layer.eval()  # code that calls eval() before every call keeps its packed weight
        layer(x)
        assert layer.packed.tensor is packed
        layer.train()
        assert layer.packed.tensor is None
        layer(x)
        assert layer.packed.tensor is None
    layer.eval()
    layer(x).sum().backward()  # autograd records: the plain weight, whose gradient this is
    assert layer.packed.tensor is None and layer.weight.grad is not None
    with torch.no_grad():
        layer(x)
        assert layer.packed.tensor is not None
        packing(False)  # switched off: the layer drops its copy at its next call
        assert fp32_error(layer(x), float64_linear(x, layer)) < 1e-6
    assert layer.packed.tensor is None
    backend("aten")  # MKL multiplies fp32 there: no packed copy
    packing(True)
    with torch.no_grad():
        assert fp32_error(layer(x), float64_linear(x, layer)) < 1e-6
    assert layer.packed.tensor is None


@needs_onednn
def test_models_holding_packed_weights_copy_pickle_and_convert(backend, packing):
    """An eval model that has packed its weights deep-copies, pickles (`torch.save` of the module) and converts
    with `.double()` / `.to()`: the copies pack again, the converted model computes at its new dtype."""
    import copy
    import pickle

    backend("onednn")
    packing(True)
    model = two_stage_model(2).eval()
    x = torch.randn(8, 3, 64, 64)
    with torch.inference_mode():
        logits = model(x)
    assert any(m.packed.tensor is not None for m in model.modules() if isinstance(m, cpu_gemm.Linear))
    loaded = pickle.loads(pickle.dumps(model))  # what torch.save of the module runs through
    for clone in (copy.deepcopy(model), loaded):
        assert all(m.packed.tensor is None for m in clone.modules() if isinstance(m, cpu_gemm.Linear))
        with torch.inference_mode():
            assert torch.equal(clone(x), logits)
    with torch.inference_mode():
        as_double = model.double()(x.double())
    assert fp32_error(logits, as_double) < 1e-5


@needs_onednn
def test_inference_tensor_weights_run_unpacked(backend, packing):
    """A layer made inside `torch.inference_mode()` has no version counter to key a cache on: it runs unpacked."""
    backend("onednn")
    packing(True)
    with torch.inference_mode():
        layer = cpu_gemm.Linear(192, 768).eval()
        x = torch.randn(2107, 192)
        got = layer(x)
    assert layer.packed.tensor is None
    assert fp32_error(got, float64_linear(x, layer)) < 1e-6


@needs_onednn
@pytest.mark.parametrize("version, fp32_backend, bf16_model", [(1, "onednn", False), (2, "onednn", False),
                                                               (1, "aten", False), (2, "aten", False),
                                                               (1, "onednn", True), (2, "aten", True)])
def test_bf16_inference_packs_bf16_weights(version, fp32_backend, bf16_model, backend, packing):
    """Under CPU autocast an eval model packs bf16 weights (the cast autocast makes at every call, made once) and
    gives autocast's own logits; V2's qkv takes its q/v bias through the same packed product. A bf16 model
    (`.bfloat16()`, no autocast) packs its weights as they are. Whichever library multiplies fp32 (aten: Intel
    CPUs), torch's bf16 products are oneDNN's, so bf16 packs on both backends."""
    if not cpu_gemm.onednn_bf16_supported():
        pytest.skip("this CPU has no oneDNN bf16")
    backend(fp32_backend)
    model = two_stage_model(version).eval()
    x = torch.randn(8, 3, 64, 64)
    if bf16_model:
        model, x = model.bfloat16(), x.bfloat16()
    logits = {}
    for pack in (False, True):
        packing(pack)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=not bf16_model):
            logits[pack] = model(x).float()
    linears = [m for m in model.modules() if isinstance(m, cpu_gemm.Linear)]
    packed = [m.packed.tensor for m in linears if m.packed.tensor is not None]
    assert packed and all(t.dtype == torch.bfloat16 for t in packed)
    assert model.layers[0].blocks[0].attn.qkv.packed.tensor is not None
    # bit-equal on Zen 5; elsewhere oneDNN may pick another kernel for the plain weight: within bf16 rounding
    assert fp32_error(logits[True], logits[False].double()) < 2**-8
    with torch.inference_mode():
        as_double = model.double()(x.double())
    assert fp32_error(logits[True], as_double) < 2**-4  # bf16 activations through two stages
