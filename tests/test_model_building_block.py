"""swinzoo's models inside other people's code: eval caches after any optimizer, threads sharing a model, wrapped
or hooked sub-modules, FLOP counters, empty batches."""

import threading

import torch
from torch import nn

import swinzoo
from swinzoo.config import SwinConfig


def nano(version: int = 1) -> nn.Module:
    torch.manual_seed(0)
    cfg = SwinConfig(version=version, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=5)
    return swinzoo.SwinTransformer(cfg)


def fresh_copy(model: nn.Module) -> nn.Module:
    other = swinzoo.SwinTransformer(model.config).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_eval_caches_follow_a_fused_optimizer_step():
    """Fused optimizers write parameters without bumping their version counters: the cached attention terms and
    packed weights must not outlive the step all the same."""
    for version in (1, 2):
        model = nano(version).eval()
        x = torch.randn(2, 3, 32, 32)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
        with torch.no_grad():
            model(x)  # caches filled
        model(x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            torch.testing.assert_close(model(x), fresh_copy(model)(x), rtol=1e-5, atol=1e-5)


def test_threads_sharing_a_model_over_many_input_sizes():
    """More input sizes than the plan and term caches keep: their evictions race between threads."""
    model = nano().eval()
    sizes = [16 + 4 * i for i in range(24)]
    inputs = {s: torch.randn(1, 3, s, s) for s in sizes}
    with torch.no_grad():
        expected = {s: model(x) for s, x in inputs.items()}
    errors = []

    def work(k: int) -> None:
        try:
            for s in sizes[k % 3 :] + sizes[: k % 3]:
                with torch.no_grad():
                    torch.testing.assert_close(model(inputs[s]), expected[s], rtol=0, atol=0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race window is a few bytecodes
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]


class LoRA(nn.Module):
    """A peft-style wrapper: the base Linear frozen, a low-rank update trained."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base, self.weight, self.bias = base, base.weight, base.bias
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.normal_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


def test_a_wrapped_or_hooked_mlp_layer_is_called_in_training():
    model = nano().train()
    model.requires_grad_(False)
    for block in (b for stage in model.layers for b in stage.blocks):
        block.mlp.fc1 = LoRA(block.mlp.fc1)
    calls = []
    model.layers[0].blocks[0].mlp.fc2.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)  # the same stochastic-depth draws in both forwards (else equal only by luck)
    out = model(x)
    out.square().mean().backward()
    loras = [p for n, p in model.named_parameters() if ".up." in n or ".down." in n]
    assert loras and all(p.grad is not None for p in loras) and calls
    model.set_fast_path(False)  # the reference forward: same logits
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), out)


def test_hooks_on_block_parts_see_the_reference_tensors_in_eval():
    model = nano().eval()
    seen = {}
    for name in ("layers.0.blocks.1.attn", "layers.0.blocks.1.mlp", "layers.0.blocks.1.norm1", "layers.0.downsample"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: tuple(o.shape)}))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert seen == {"layers.0.blocks.1.attn": (8, 16, 16), "layers.0.blocks.1.mlp": (2, 8, 8, 16),
                    "layers.0.blocks.1.norm1": (2, 8, 8, 16), "layers.0.downsample": (2, 4, 4, 32)}, seen


def test_flop_counters_see_the_linear_layers():
    """Lightning's ModelSummary counts FLOPs with FlopCounterMode, which sees aten ops only: products sent to
    oneDNN (packed weights, AMD CPUs) would count as nothing. Large enough products for oneDNN here."""
    from torch.utils.flop_counter import FlopCounterMode

    model = nano().eval()
    x = torch.randn(8, 3, 64, 64)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    reference = FlopCounterMode(display=False)
    model.set_fast_path(False)
    with reference:
        model(x)
    linear_macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    assert counter.get_total_flops() >= 2 * linear_macs and counter.get_total_flops() == reference.get_total_flops()


def test_an_empty_batch_gives_empty_logits():
    model = nano().eval()
    with torch.no_grad():
        assert model(torch.randn(0, 3, 32, 32)).shape == (0, 5)


def test_training_after_inference_mode_at_a_new_input_size():
    """Lightning validates under torch.inference_mode(): the window plans and gather indices it builds for a new
    input size (here padded: 30 x 45 on 4-token windows) are cached, and a training step at that size saved them
    for backward, which an inference tensor cannot be ("Inference tensors cannot be saved for backward")."""
    for version in (1, 2):
        model = nano(version)
        x = torch.randn(2, 3, 30, 45)
        with torch.inference_mode():
            model.eval()(x)
        model.train()(x).square().sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
