"""The fast path: the inference block (chunks of mask-grouped windows) and the training block against a dense
reference, any input size, the eval term cache,
torch.compile without graph breaks, bf16 autocast."""

import math

import pytest
import torch

from swinzoo import SwinTransformer
from swinzoo.config import SwinConfig
from swinzoo.models import attention, fast_path, layers
from swinzoo.models.attention import (
    ScaledUnitRows,
    SoftmaxAttention,
    softmax_rows,
    softmax_rows_backward,
    split_heads,
)
from swinzoo.models.layers import Mlp
from swinzoo.models.windows import WindowPlan

from .conftest import randomized, read_at_import


def tiny(version: int = 1, img_size: int = 56, window: int = 7, **kw) -> SwinConfig:
    kw = {"depths": (2, 2), "num_heads": (2, 4), **kw}
    return SwinConfig(version=version, img_size=img_size, window_size=window, embed_dim=16,
                      pretrained_window_sizes=(0, 0), num_classes=5, drop_path_rate=0.0, **kw)


def dense_reference(block, x: torch.Tensor) -> torch.Tensor:
    """Attention branch of a block computed densely over the real tokens only (float64).

    Written from the semantics, not from the plan code: pad the grid to the window multiple, roll by -shift
    along every axis that spans more than one window, and let a real token attend to the real tokens in its
    window and shift region, with the bias of their in-window offset.
    """
    attn, win = block.attn, block.window
    b, h, w, c = x.shape
    hp, wp = math.ceil(h / win) * win, math.ceil(w / win) * win
    sh = block.shift if hp > win else 0
    sw = block.shift if wp > win else 0
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, col = ((i - sh) % hp).reshape(-1), ((j - sw) % wp).reshape(-1)  # rolled-grid coordinates

    def region(v, size, s):
        return torch.zeros_like(v) if not s else (v >= size - win).long() + (v >= size - s).long()

    same = ((r[:, None] // win == r[None, :] // win) & (col[:, None] // win == col[None, :] // win)
            & (region(r, hp, sh)[:, None] == region(r, hp, sh)[None, :])
            & (region(col, wp, sw)[:, None] == region(col, wp, sw)[None, :]))
    pos = (r % win) * win + col % win
    q, k, v, scale = attn.qkv_heads(x.reshape(b, h * w, c))
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    logits = q @ k.transpose(-1, -2) * scale + attn.position_bias()[:, pos[:, None], pos[None, :]]
    logits = logits.masked_fill(~same, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    return attn.proj(out).view(b, h, w, c)


def dense_block(block, x: torch.Tensor) -> torch.Tensor:
    """The whole block around `dense_reference`: V1 pre-norm, V2 res-post-norm residuals."""
    if block.post_norm:
        x = x + block.norm1(dense_reference(block, x))
        return x + block.norm2(block.mlp(x))
    x = x + dense_reference(block, block.norm1(x))
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("hw", [(14, 14), (10, 17), (5, 9), (16, 12)])
@pytest.mark.parametrize("path", ["fast-path-chunks", "reference-autograd", "reference-no-grad"])
def test_block_matches_dense_reference(version, shifted, hw, path, monkeypatch):
    model = randomized(SwinTransformer(tiny(version)).double().eval())
    block = model.layers[0].blocks[int(shifted)]
    # a few windows per chunk, so that runs split inside mask groups as they do on big batches
    monkeypatch.setattr(fast_path, "CPU_CHUNK_BYTES", 8 * 64 * 49 * 3)
    grad = path == "reference-autograd"
    x = torch.randn(3, *hw, 16, dtype=torch.float64, requires_grad=grad)
    plan = WindowPlan(*hw, block.window, block.shift)
    with torch.set_grad_enabled(grad):
        if path == "fast-path-chunks":
            into, _, back, _ = plan.indices(3, x.device, grouped=True)
            rows = fast_path.block_forward(block, plan.pad(x).reshape(-1, 16), into, plan, 3)
            ours = rows.index_select(0, back).view_as(x)
        else:
            ours = block(x, plan)
    with torch.no_grad():
        torch.testing.assert_close(ours, dense_block(block, x), rtol=0, atol=1e-10)
    if grad:  # the gathers' backward (a gather with the inverse index) against autograd's own
        ours.square().sum().backward()
        mine = x.grad.clone()
        x.grad = None
        dense_block(block, x).square().sum().backward()
        torch.testing.assert_close(mine, x.grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("hw", [(56, 56), (40, 68), (60, 36), (52, 44)])
def test_inference_stages_match_the_autograd_path(version, hw, monkeypatch):
    """Whole model: inference stages (tokens kept in window order across blocks, patch merging fused into the
    last gather on even grids, padded rows never reset) against the training-path blocks, on grids that are on
    the window grid, padded, and odd at a merge (60 x 36 -> 15 x 9 patches -> 8 x 5)."""
    model = randomized(SwinTransformer(tiny(version, depths=(3, 2), num_heads=(2, 4))).double().eval())
    monkeypatch.setattr(fast_path, "CPU_CHUNK_BYTES", 8 * 64 * 49 * 3)  # several runs per block
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        fast = model(x)
        model.set_fast_path(False)
        reference = model(x)
    with torch.enable_grad():
        slow = model(x)
    assert slow.grad_fn is not None
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("version", [1, 2])
def test_cpu_inference_in_image_groups_matches_one_call(version, monkeypatch):
    """Patch tokens over CPU_GROUP_BYTES run in groups of images (the last one short): the reference's logits."""
    model = randomized(SwinTransformer(tiny(version)).double().eval())
    monkeypatch.setattr(fast_path, "CPU_GROUP_BYTES", 2 * 14 * 14 * 16 * 8)  # two 56 px float64 images
    x = torch.randn(5, 3, 56, 56, dtype=torch.float64)
    calls, conv_forward = [], model.patch_embed.proj.forward

    def counted(images):  # not a hook: a hook turns the grouping off
        calls.append(images.shape[0])
        return conv_forward(images)

    monkeypatch.setattr(model.patch_embed.proj, "forward", counted)
    with torch.inference_mode():
        grouped = model(x)
        assert calls == [2, 2, 1]
        model.set_fast_path(False)
        reference = model(x)
    assert calls[3:] == [5]
    torch.testing.assert_close(grouped, reference, rtol=0, atol=1e-10)


def test_image_groups_only_where_nothing_can_tell(monkeypatch):
    model = SwinTransformer(tiny(1)).eval()
    monkeypatch.setattr(fast_path, "CPU_GROUP_BYTES", 3 * 14 * 14 * 16 * 4)  # three 56 px fp32 images
    x = torch.randn(4, 3, 56, 56)
    with torch.inference_mode():
        assert fast_path.image_groups(model, x) == 3
        assert fast_path.image_groups(model, x[:3]) is None  # one group: the whole batch
        assert fast_path.image_groups(model, torch.randn(4, 3, 50, 50)) == 3  # padded to the patch grid
        assert fast_path.image_groups(model, torch.randn(4, 3, 64, 64)) == 2
        handle = model.layers[1].register_forward_hook(lambda m, i, o: None)  # a hook sees the whole batch once
        assert fast_path.image_groups(model, x) is None
        handle.remove()
        model.layers[0].fast_path = False
        assert fast_path.image_groups(model, x) is None
        model.layers[0].fast_path = True
    with torch.no_grad():
        assert fast_path.image_groups(model.train(), x) is None
    assert fast_path.image_groups(model.eval(), x) is None  # autograd on


def test_fast_path_switch_decides_which_code_runs(monkeypatch):
    """On: inference runs the fast path's stage (one attention call per mask group); off: the reference blocks,
    called as modules. A hook anywhere in a stage's blocks or patch merging also takes the reference, whose
    tensors the hook expects."""
    from swinzoo.models import fast_path

    model = SwinTransformer(tiny(1)).eval()
    stages, real = [], fast_path.stage_forward
    monkeypatch.setattr(fast_path, "stage_forward", lambda stage, x: stages.append(stage) or real(stage, x))
    x = torch.randn(1, 3, 56, 56)
    with torch.inference_mode():
        model(x)
        assert stages == list(model.layers)
        stages.clear()
        handle = model.layers[0].blocks[0].mlp.fc2.register_forward_hook(lambda *a: None)
        model(x)
        assert stages == list(model.layers[1:])
        handle.remove()
        stages.clear()
        model.set_fast_path(False)
        model(x)
        assert stages == []
    assert not any(m.recompute_gelu for m in model.modules() if isinstance(m, Mlp))


def test_block_forward_hooks_fire_in_eval_with_the_same_logits():
    """The stage's inference path runs blocks without calling them; a hook on a block switches it to calling them."""
    model = randomized(SwinTransformer(tiny(1)).double().eval())
    x = torch.randn(2, 3, 56, 56, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        seen = []
        handle = model.layers[0].blocks[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
        hooked = model(x)
        handle.remove()
    assert seen == [torch.Size([2, 14, 14, 16])]
    torch.testing.assert_close(hooked, ref, rtol=0, atol=1e-10)


def test_inference_chunks_balance_runs_and_split_them_by_group():
    plan = WindowPlan(14, 14, 7, 3)  # 2 x 2 windows: four mask groups of one window each
    runs = plan.chunks(batch=3, max_windows=5)  # 12 windows in runs of at most 5: 4 + 4 + 4
    assert [(a, b) for a, b, _ in runs] == [(0, 196), (196, 392), (392, 588)]
    assert [segments for _, _, segments in runs] == [((0, 3, 0), (3, 4, 1)), ((0, 2, 1), (2, 4, 2)),
                                                     ((0, 1, 2), (1, 4, 3))]


def test_plan_groups_shifted_windows_by_mask():
    plan = WindowPlan(56, 56, 7, 3)  # interior, bottom edge, right edge, corner
    assert sorted(plan.group_sizes) == [1, 7, 7, 49] and not plan.padded
    assert WindowPlan(56, 56, 7, 0).group_sizes == (64,)


@pytest.mark.parametrize("version", [1, 2])
def test_on_grid_input_same_logits_through_any_size_path(version):
    """A model configured for 2x the size runs a native-size input through the dynamic geometry: same logits."""
    native = randomized(SwinTransformer(tiny(version, img_size=112)).double().eval())
    bigger = SwinTransformer(tiny(version, img_size=224)).double().eval()
    bigger.load_state_dict(native.state_dict())
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(bigger(x), native(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("version", [1, 2])
def test_any_size_inputs(version):
    model = randomized(SwinTransformer(tiny(version)).eval())
    with torch.no_grad():
        for size in [(56, 56), (60, 90), (33, 47), (120, 64)]:
            out = model(torch.randn(2, 3, *size))
            assert out.shape == (2, 5) and torch.isfinite(out).all(), size


def test_padding_is_masked_not_attended():
    """10 x 11 tokens in 7-windows: the padded run equals the dense reference over real tokens only (above),
    and differs from running the same tokens zero-padded as if the zeros were real (torchvision's padding)."""
    model = randomized(SwinTransformer(tiny(1)).double().eval())
    block = model.layers[0].blocks[0]
    x = torch.randn(1, 10, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        masked = block.attention_branch(x, WindowPlan(10, 11, 7, 0))
        grown = torch.nn.functional.pad(x, (0, 0, 0, 3, 0, 4))  # 14 x 14: on the grid, the zeros count as tokens
        zeros_attended = block.attention_branch(grown, WindowPlan(14, 14, 7, 0))
        torch.testing.assert_close(masked, dense_reference(block, x), rtol=0, atol=1e-10)
    assert (masked - zeros_attended[:, :10, :11]).abs().max() > 1e-3


def test_eval_term_cache_follows_weights():
    model = randomized(SwinTransformer(tiny(1)).eval())
    attn = model.layers[0].blocks[1].attn
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        model(x)
        cached = dict(attn.term_cache.terms)
        assert cached
        model(x)
        assert all(attn.term_cache.terms[k] is v for k, v in cached.items())  # reused, not rebuilt
        attn.relative_position_bias_table.add_(1.0)  # what an optimizer step does: in place
        after = model(x)
    fresh = SwinTransformer(tiny(1)).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, fresh(x))
    model.train()
    assert not attn.term_cache.terms
    model(x).sum().backward()  # training: no cache, gradients reach the bias table
    assert attn.relative_position_bias_table.grad.abs().sum() > 0
    assert not attn.term_cache.terms


def test_edits_through_param_data_are_seen_after_train_then_eval():
    """torch does not count in-place edits through `param.data`, so the eval caches (term, packed weights) cannot
    see them; docs/performance.md's remedy, train() then eval(), must give the edited model's logits."""
    cfg = tiny(2).replace(embed_dim=64)  # wide enough for packed Linear weights
    model = randomized(SwinTransformer(cfg).eval())
    x = torch.randn(2, 3, 56, 56)
    fresh = SwinTransformer(cfg).eval()
    with torch.no_grad():
        model(x)
        for p in model.parameters():
            p.data.mul_(0.9)
        fresh.load_state_dict(model.state_dict())
        expected = fresh(x)
        assert not torch.allclose(model(x), expected)  # unseen: what docs/performance.md warns of
        model.train()
        model.eval()
        torch.testing.assert_close(model(x), expected)


def test_v2_cache_survives_dtype_moves():
    model = randomized(SwinTransformer(tiny(2)).eval())
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        f32 = model(x)
        f64 = model.double()(x.double())
    torch.testing.assert_close(f64.float(), f32, rtol=0, atol=1e-4)
    assert f64.dtype == torch.float64


@pytest.mark.parametrize("version", [1, 2])
def test_model_converted_in_inference_mode_runs_uncached(version):
    """Parameters made inside inference_mode have no version counter for the term cache to key on."""
    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        converted = SwinTransformer(tiny(version)).eval()
        converted.load_state_dict(model.state_dict())
        torch.testing.assert_close(converted(x), expected, rtol=0, atol=0)
        assert not converted.layers[0].blocks[1].attn.term_cache.terms


@pytest.mark.parametrize("version", [1, 2])
def test_bf16_autocast_cpu(version):
    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("version", [1, 2])
def test_float16_with_padded_windows_stays_finite(version, fast):
    """Padded tokens are zeros, and V2 has no k bias: their keys are zero vectors, which F.normalize's eps (1e-12,
    0 in float16) turned into 0/0 = NaN keys, and every logit of the window NaN. A half model and a float16
    training step on a padded grid stay finite and near the float32 result."""
    model = randomized(SwinTransformer(tiny(version)))
    x = torch.randn(2, 3, 60, 90)
    model.set_fast_path(fast)
    with torch.no_grad():
        ref = model.eval()(x)
        half = model.half()(x.half()).float()
    assert torch.isfinite(half).all()
    assert (half - ref).abs().max() < 0.02 * ref.abs().max() + 0.02
    out = model.train()(x.half())
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.fixture
def cpu_attention():
    """`fast_path.set_cpu_attention`, put back as it was after the test."""
    before = fast_path.cpu_attention()
    yield fast_path.set_cpu_attention
    fast_path.set_cpu_attention(before)


@pytest.mark.parametrize("choice", ["eager", "sdpa"])
@pytest.mark.parametrize("autocast", [False, True])
def test_eval_attention_on_cpu_is_the_chosen_kernel(autocast, choice, cpu_attention):
    """'eager': two products and one softmax per run; 'sdpa': torch's fused CPU kernel, no softmax of its own."""
    cpu_attention(choice)
    model = SwinTransformer(tiny(1)).eval()
    x = torch.randn(1, 3, 56, 56)
    with (torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
          torch.profiler.profile() as prof):
        model(x)
    names = {e.key for e in prof.key_averages()}
    fused = any("scaled_dot_product" in name for name in names)
    if choice == "eager":
        assert "aten::_softmax" in names and "aten::matmul" in names and not fused
    else:
        assert fused and "aten::_softmax" not in names
    assert "aten::roll" not in names


@pytest.mark.parametrize("value, chosen", [("eager", "eager"), ("SDPA", "sdpa"), ("auto", "auto"), ("", "auto"),
                                           ("flash", "auto")])
def test_cpu_attention_environment_variable(value, chosen):
    code = "from swinzoo.models import fast_path; print(fast_path.cpu_attention())"
    printed, err = read_at_import(code, fast_path.ATTENTION_ENV, value)
    assert printed == [chosen]
    assert (fast_path.ATTENTION_ENV in err) == (value == "flash")  # a warning, then the default
    with pytest.raises(ValueError, match="use one of auto, eager, sdpa"):
        fast_path.set_cpu_attention("flash")


@pytest.mark.parametrize("version", [1, 2])
def test_cpu_sdpa_inference_matches_the_reference(version, cpu_attention):
    """SDPA on the CPU: fp32 as the reference up to the order of the sums; under bf16 autocast with the fp32 term
    (the kernel keeps its logits in fp32), as near the fp32 output as the reference's bf16. An empty batch (no runs
    of windows) and FlopCounterMode (which does not count the fused kernel: the products run instead) work too."""
    from torch.utils.flop_counter import FlopCounterMode

    cpu_attention("sdpa")
    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 60, 90)  # padded windows: the fused kernel sees the -100 mask of padding too
    counters = [FlopCounterMode(display=False) for _ in range(2)]
    with torch.inference_mode():
        assert model(x[:0]).shape == (0, 5)
        fused = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused_bf16 = model(x).float()
        model(x[..., :56, :56])  # V2's CPB table made and cached for this grid, outside the counters
        with counters[0]:
            model(x[..., :56, :56])
        cpu_attention("eager")
        with counters[1]:
            model(x[..., :56, :56])
        model.set_fast_path(False)
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference_bf16 = model(x).float()
    assert counters[0].get_total_flops() == counters[1].get_total_flops()
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5 * reference.abs().max().item())
    bf16_error = (reference_bf16 - reference).abs().max()
    assert 0 < (fused_bf16 - reference).abs().max() <= 2 * bf16_error


@pytest.mark.parametrize("version", [1, 2])
def test_bf16_autocast_fast_path_computes_what_the_reference_computes(version, cpu_attention):
    """Under bf16 autocast the reference makes bf16 logits, adds the fp32 term, takes the softmax in fp32 and
    multiplies v in bf16; the fast path's eager attention does the same (an fp32 term, not the bf16 residual
    stream's dtype), so it lands on the reference's bf16 output, not merely near fp32."""
    cpu_attention("eager")
    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 56, 56)
    with torch.inference_mode():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x).float()
            model.set_fast_path(False)
            reference = model(x).float()
    bf16_error = (reference - fp32).abs().max()
    assert bf16_error > 0  # the check below would hold trivially otherwise
    assert (fast - reference).abs().max() <= 0.1 * bf16_error


@pytest.mark.parametrize("n", [16, 36, 49, 64, 144])
def test_softmax_attention_either_layout_is_the_formula(n):
    """Keys-major logits (N up to 16 or not a multiple of 16) and query-major ones compute the same attention."""
    torch.manual_seed(n)
    windows, heads, d = 6, 2, 8
    q, k, v = (torch.randn(windows, heads, n, d, dtype=torch.float64) for _ in range(3))
    term = torch.randn(2, heads, n, n, dtype=torch.float64)
    segments = ((0, 2, 1), (2, 6, 0))  # two runs of windows, each with its group's term
    expected = torch.cat([torch.softmax(q[a:b] * 0.5 @ k[a:b].transpose(-2, -1) + term[g], -1) @ v[a:b]
                          for a, b, g in segments])
    assert fast_path.keys_major(q) == (n in (16, 36, 49))
    out = fast_path.softmax_attention(q.clone(), k, v, term, segments, 0.5)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert not fast_path.keys_major(q.to(torch.bfloat16))  # bf16 keeps the reference's q k^T


@pytest.mark.parametrize("choice", ["eager", "sdpa"])
def test_cpu_runs_of_windows_count_bf16_activations_as_fp32_where_eager_attention_holds_fp32_logits(
        choice, cpu_attention):
    """Eager attention keeps a run's logits and softmax in fp32 under autocast: a bf16 run holds as many windows as an
    fp32 one. SDPA holds no logits: a bf16 run is counted in bf16 bytes, twice the windows (under autocast the
    activations the MLP makes are bf16 whatever the residual stream's dtype)."""
    cpu_attention(choice)
    hidden = 384 * 49
    fp32 = fast_path._max_windows(torch.empty(1), hidden)
    bf16 = fast_path._max_windows(torch.empty(1, dtype=torch.bfloat16), hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = [fast_path._max_windows(torch.empty(1, dtype=d), hidden) for d in (torch.float32, torch.bfloat16)]
    double = fast_path._max_windows(torch.empty(1, dtype=torch.float64), hidden)
    assert fp32 == fast_path.CPU_CHUNK_BYTES // (4 * hidden) and double == fp32 // 2
    assert bf16 == autocast[0] == autocast[1] == (fp32 if choice == "eager" else 2 * fp32)


@pytest.mark.parametrize("version", [1, 2])
def test_cpu_sdpa_reads_unpacked_heads_for_the_same_bits(version, cpu_attention, monkeypatch):
    """The CPU's SDPA takes q, k, v as strided views of the qkv output (no packing copy); the eager products and
    other devices take them packed. The same logits either way, in fp32 and under bf16 autocast."""
    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 60, 90)
    windows = torch.empty(4, 49, 8)
    cpu_attention("eager")
    assert fast_path.packs_heads(windows) and fast_path.packs_heads(windows.to("meta"))
    cpu_attention("sdpa")
    assert not fast_path.packs_heads(windows) and fast_path.packs_heads(windows.to("meta"))
    assert fast_path.packs_heads(windows.double())  # float64 is always eager
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_path.packs_heads(windows)  # the products are bf16 whatever the stream's dtype
    outs = []
    for packed in (False, True):
        if packed:
            monkeypatch.setattr(fast_path, "packs_heads", lambda x: True)
        with torch.inference_mode():
            fp32 = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs.append((fp32, model(x)))
    for strided, packed in zip(*outs):
        assert torch.equal(strided, packed)


@pytest.mark.parametrize("amx", [False, True])
def test_auto_cpu_attention_is_sdpa_on_amx_only(amx, cpu_attention, monkeypatch):
    """'auto' (the default): SDPA for fp32 and bf16 on CPUs with AMX, where it took 0.87-0.99x the eager time (fp32)
    and lands as near the reference as the eager products (test_cpu_sdpa_inference_matches_the_reference); eager
    for float64 everywhere, and for fp32 and bf16 elsewhere."""
    monkeypatch.setattr(fast_path, "SDPA_ON_CPU", amx)
    cpu_attention("auto")
    q = torch.empty(1, 1, 49, 32)
    assert fast_path.eager_attention(q) == (not amx) and fast_path.eager_attention(q.bfloat16()) == (not amx)
    assert fast_path.eager_attention(q.double())
    assert fast_path.describe_cpu_attention() == ("auto: sdpa for fp32 and bf16" if amx else "auto: eager")
    cpu_attention("eager")
    assert fast_path.eager_attention(q) and fast_path.eager_attention(q.bfloat16())
    cpu_attention("sdpa")
    assert not fast_path.eager_attention(q) and not fast_path.eager_attention(q.bfloat16())
    assert fast_path.eager_attention(q.double()) and fast_path.describe_cpu_attention() == "sdpa"


@pytest.mark.parametrize("version", [1, 2])
def test_sdpa_attention_of_other_devices_matches_the_cpu_one(version, monkeypatch):
    """Off the CPU the fast path calls SDPA once per mask group; forced here on the CPU, in float64."""
    model = randomized(SwinTransformer(tiny(version, depths=(3, 2), num_heads=(2, 4))).double().eval())
    monkeypatch.setattr(fast_path, "CPU_CHUNK_BYTES", 8 * 64 * 49 * 3)  # several runs, several groups per run
    x = torch.randn(2, 3, 56, 56, dtype=torch.float64)
    with torch.inference_mode():
        eager = model(x)
        monkeypatch.setattr(fast_path, "eager_attention", lambda q: False)
        with torch.profiler.profile() as prof:
            fused = model(x)
    assert any("scaled_dot_product" in e.key for e in prof.key_averages())
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-10)


compile_ok = pytest.mark.skipif(not hasattr(torch, "compile") or not hasattr(torch, "_dynamo"),
                                reason="torch.compile unavailable")


@compile_ok
@pytest.mark.parametrize("version", [1, 2])
def test_compile_without_graph_breaks_and_parity(version):
    import torch._dynamo

    model = randomized(SwinTransformer(tiny(version)).eval())
    x = torch.randn(2, 3, 56, 56)
    torch._dynamo.reset()
    with torch.no_grad():
        ref = model(x)
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fullgraph: a break is an error
        torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-5)
    # training step under compile: same loss and gradients as eager
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)


@compile_ok
def test_compiled_inference_compiles_once():
    """Under torch.compile the fast path steps aside (its per-plan caches are Python state dynamo would guard on):
    repeated inference calls reuse the first graph instead of recompiling until the recompile limit."""
    import torch._dynamo

    model = randomized(SwinTransformer(tiny(1)).eval())
    x = torch.randn(2, 3, 56, 56)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        outs = [compiled(x) for _ in range(3)]
        torch.testing.assert_close(outs[-1], model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_rows", [None, 3])
@pytest.mark.parametrize("frozen", ["none", "weights", "input"])
def test_mlp_gelu_recompute_matches_autograd(frozen, chunk_rows, monkeypatch):
    """The training MLP node (GELU recomputed in backward, run over row chunks) gives autograd's own gradients,
    with one chunk and with several (10 rows in chunks of 3: the last one ragged)."""
    if chunk_rows is not None:
        monkeypatch.setattr(layers, "TRAIN_CHUNK_BYTES", chunk_rows * 32 * 8)  # hidden 32 wide, float64
    torch.manual_seed(0)
    mlp = Mlp(8, 32).double().train()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=frozen != "input")
    mlp.requires_grad_(frozen != "weights")
    assert mlp.recompute_applies(x)
    out = mlp(x)
    assert out.grad_fn.name() == "MlpGeluRecomputeBackward"
    wrt = [t for t in (x, *mlp.parameters()) if t.requires_grad]
    grads = torch.autograd.grad(out.sin().sum(), wrt)
    plain = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    expected = torch.autograd.grad(plain.sin().sum(), wrt)
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-14)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-13)


def test_mlp_gelu_recompute_on_the_cpu_only():
    """A GPU step that stores the GELU ran faster (H200): the node is the CPU's; elsewhere autograd's MLP."""
    mlp = Mlp(8, 32).train()
    assert mlp.recompute_applies(torch.empty(2, 8))
    assert not mlp.recompute_applies(torch.empty(2, 8, device="meta"))


def test_mlp_gelu_recompute_on_no_rows():
    """An empty batch gives autograd's empty input gradient and zero weight and bias gradients."""
    mlp = Mlp(8, 32).double().train()
    x = torch.randn(0, 5, 8, dtype=torch.float64, requires_grad=True)
    out = mlp(x)
    assert out.grad_fn.name() == "MlpGeluRecomputeBackward" and out.shape == (0, 5, 8)
    grads = torch.autograd.grad(out.sum(), (x, *mlp.parameters()))
    assert grads[0].shape == (0, 5, 8)
    for g, p in zip(grads[1:], mlp.parameters(), strict=True):
        assert g.shape == p.shape and not g.any()


@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_mlp_gelu_recompute_under_bf16_autocast(chunk_rows, monkeypatch):
    """Under autocast the node computes in bf16 as autocast's Linear would (bf16 output, fp32 input and weight
    gradients): the same bf16 products as the plain path under autocast, only the weight-gradient sums over
    chunks are taken in fp32."""
    if chunk_rows is not None:
        monkeypatch.setattr(layers, "TRAIN_CHUNK_BYTES", chunk_rows * 64 * 2)  # hidden 64 wide, bf16
    torch.manual_seed(0)
    mlp = Mlp(16, 64).train()
    x = torch.randn(2, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mlp.recompute_applies(x)
        out = mlp(x)
        plain = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    assert out.grad_fn.name() == "MlpGeluRecomputeBackward" and out.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(out, plain, rtol=0, atol=0)  # the same bf16 GEMMs and GELU
    wrt = [x, *mlp.parameters()]
    grads = torch.autograd.grad(out.float().sin().sum(), wrt)
    expected = torch.autograd.grad(plain.float().sin().sum(), wrt)
    for t, g, e in zip(wrt, grads, expected, strict=True):
        assert g.dtype == t.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2 * float(e.abs().max()))


@pytest.mark.parametrize("used", ["qkv", "qv", "k"])
def test_split_heads_gradient_matches_autograd(used):
    """SplitHeads writes the head gradients into one (B, N, 3C) tensor; heads that get no gradient are zeros."""
    torch.manual_seed(0)
    qkv = torch.randn(4, 6, 3 * 12, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(4, 3, 6, 4, dtype=torch.float64) for _ in range(3)]

    def loss(parts):
        return sum((p * w).sum() for name, p, w in zip("qkv", parts, weights) if name in used)

    q, k, v = split_heads(qkv, 3)
    assert q.grad_fn.name() == "SplitHeadsBackward" and q.shape == (4, 3, 6, 4)
    (grad,) = torch.autograd.grad(loss((q, k, v)), qkv)
    reference = qkv.view(4, 6, 3, 3, 4).permute(2, 0, 3, 1, 4).unbind(0)
    (expected,) = torch.autograd.grad(loss(reference), qkv)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    for ours, ref in zip((q, k, v), reference):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.mark.parametrize("with_scale", [True, False])
def test_scaled_unit_rows_match_normalize_autograd(with_scale):
    """V2's cosine q / k as one autograd node: values and gradients (x and the per-head scale) equal autograd
    through F.normalize(x) * scale in float64, a zero row (clamped norm) included. x comes as a strided view of
    (B, N, heads, d) memory, as from the qkv output; the result is contiguous, ready for the attention products."""
    torch.manual_seed(0)
    tokens_major = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    tokens_major[0, 2, 1] = 0.0
    tokens_major.requires_grad_()
    x = tokens_major.transpose(1, 2)
    scale = torch.rand(3, 1, 1, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    ref = torch.nn.functional.normalize(x, dim=-1)
    ref = ref * scale if with_scale else ref
    ours = ScaledUnitRows.apply(x, scale if with_scale else None)
    assert ours.grad_fn.name() == "ScaledUnitRowsBackward"
    assert ours.is_contiguous()
    wrt = (tokens_major, scale) if with_scale else (tokens_major,)
    for a, b in zip(torch.autograd.grad(ours, wrt, g), torch.autograd.grad(ref, wrt, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)  # the zero row's gradient is ~1e12: relative
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [6, 16])  # softmax into a new buffer, or in place (`softmax_rows`)
@pytest.mark.parametrize("groups, scale, frozen_term", [(1, 0.3, False), (4, 1.0, False), (4, 0.3, True)])
def test_softmax_attention_node_matches_autograd(groups, scale, frozen_term, n):
    """The training attention node (logits, term and softmax in one buffer, the logits' gradient made from the
    probabilities', in place where that pays) gives autograd's values and gradients in float64, with the term
    broadcast over runs of windows or not."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 3, n, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    term = torch.randn(groups, 3, n, n, dtype=torch.float64, requires_grad=not frozen_term)
    g = torch.randn(8, 3, n, 4, dtype=torch.float64)
    ours = SoftmaxAttention.apply(q, k, v, term, scale)
    assert ours.grad_fn.name() == "SoftmaxAttentionBackward"
    logits = ((q * scale) @ k.transpose(-2, -1)).view(-1, groups, 3, n, n) + term
    ref = logits.softmax(-1).view(8, 3, n, n) @ v
    wrt = [t for t in (q, k, v, term) if t.requires_grad]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-15)
    for a, b in zip(torch.autograd.grad(ours, wrt, g), torch.autograd.grad(ref, wrt, g), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_floored_logits_make_no_denormal_probabilities():
    """Under the official -100 mask fp32 softmax makes probabilities of ~e^-100, denormal floats (below 2^-126);
    with each logit floored at its row's max - 80 the smallest is ~e^-80 / N, a normal float."""
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 49, 49)
    logits[..., 20:] -= 100.0
    tiny = torch.finfo(torch.float32).tiny

    def denormals(p):
        return int(((p > 0) & (p < tiny)).sum())

    assert denormals(logits.softmax(-1)) > 0  # the check below would hold trivially otherwise
    floored = attention.floor_logits_(logits.clone(), -1)
    assert denormals(floored.softmax(-1)) == 0 and (floored.softmax(-1) > 0).all()
    assert denormals(attention.floor_logits_(logits.transpose(-2, -1).clone(), -2).softmax(-2)) == 0
    assert torch.equal(floored.softmax(-1)[..., :20], logits.softmax(-1)[..., :20])


@pytest.mark.parametrize("version", [1, 2])
def test_logit_floor_keeps_every_bit_of_outputs_and_gradients(version, monkeypatch):
    """The floor (fp32 on the CPU, `attention.FLOOR_LOGITS`) changes probabilities below e^-80 of their row's
    largest only: shifted and padded windows, eval outputs, training outputs and every gradient are the same bits.
    The training node's probabilities below 1e-30 are 0 (no denormals in its backward either)."""
    model = randomized(SwinTransformer(tiny(version, depths=(2, 2), num_heads=(2, 4))))
    x = torch.randn(2, 3, 60, 90)
    runs = {}
    for floor in (False, True):
        monkeypatch.setattr(attention, "FLOOR_LOGITS", floor)
        with torch.inference_mode():
            runs[floor] = [model.eval()(x)]
        model.train()
        out = model(x)
        runs[floor] += [out.detach(), *torch.autograd.grad(out.square().sum(), list(model.parameters()))]
    assert all(torch.equal(a, b) for a, b in zip(runs[False], runs[True], strict=True))
    q, k, v = (torch.randn(2, 2, 49, 8, requires_grad=True) for _ in range(3))
    term = torch.zeros(1, 2, 49, 49)
    term[..., 25:] = -100.0
    SoftmaxAttention.apply(q, k, v, term, 0.3).sum().backward()
    assert v.grad[..., 25:, :].abs().max() == 0  # no key past the mask got any probability


@pytest.mark.parametrize("n, in_place", [(49, False), (64, True), (144, True)])
def test_softmax_rows_in_place_where_it_pays(n, in_place):
    """On the CPU the softmax and its backward run in place only on rows a multiple of 16 long, with torch's
    values either way."""
    torch.manual_seed(n)
    x, g = torch.randn(2, 3, n, n), torch.randn(2, 3, n, n)
    expected = torch.softmax(x, -1)
    buffer = x.clone()
    probs = softmax_rows(buffer)
    assert (probs.data_ptr() == buffer.data_ptr()) == in_place
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)
    grad = g.clone()
    grad_logits = softmax_rows_backward(grad, probs)
    assert (grad_logits.data_ptr() == grad.data_ptr()) == in_place
    leaf = x.clone().requires_grad_()
    (reference,) = torch.autograd.grad(torch.softmax(leaf, -1), leaf, g)
    torch.testing.assert_close(grad_logits, reference, rtol=0, atol=0)


def test_softmax_attention_node_bf16_with_fp32_term():
    """Under bf16 the node adds the fp32 term and takes the softmax in fp32, then multiplies in bf16: the values
    and gradients of autograd through the same mixed-precision expression, to bf16 accuracy."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 3, 6, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    term = torch.randn(4, 3, 6, 6, requires_grad=True)
    g = torch.randn(8, 3, 6, 4, dtype=torch.bfloat16)
    ours = SoftmaxAttention.apply(q, k, v, term, 0.5)
    logits = ((q * 0.5) @ k.transpose(-2, -1)).view(-1, 4, 3, 6, 6) + term
    ref = logits.softmax(-1).to(torch.bfloat16).view(8, 3, 6, 6) @ v
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    wrt = (q, k, v, term)
    for t, a, b in zip(wrt, torch.autograd.grad(ours, wrt, g), torch.autograd.grad(ref, wrt, g), strict=True):
        assert a.dtype == t.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2 * float(b.abs().max()))


def test_v2_training_gradients_under_bf16_autocast_follow_fp32():
    """A V2 training step under bf16 autocast (the fused cosine node computes its norms in fp32) gives the fp32
    step's gradients to bf16 accuracy."""
    model = randomized(SwinTransformer(tiny(2)).train())
    x = torch.randn(2, 3, 56, 56)
    model(x).square().mean().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    # bf16 accuracy: with one thread torch's bf16 kernels put the norm biases' gradients ~5-6% off (timm's alike),
    # with two ~2-3%; all the gradients together ~1%
    got = {name: p.grad for name, p in model.named_parameters() if name in ref}
    for name, grad in ref.items():
        assert (got[name] - grad).norm() <= 0.08 * grad.norm() + 1e-6, name
    flat_ref, flat_got = (torch.cat([g[n].flatten() for n in ref]) for g in (ref, got))
    assert (flat_got - flat_ref).norm() <= 0.02 * flat_ref.norm()
