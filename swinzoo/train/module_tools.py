"""What swinzoo's LightningModules give Lightning's own tools beyond fitting: an example input built from the
model's config (ModelSummary's in / out sizes and FLOPs, `module.to_onnx(path)` without an input sample,
TensorBoard's graph), and a one-line refusal of `to_torchscript`, which cannot compile the model (TorchScript is
deprecated in torch and in Lightning 2.7) and otherwise fails deep inside TorchScript."""

from __future__ import annotations

import torch

from swinzoo.errors import SwinzooError
from swinzoo.train.sharded import fsdp_root


class ExampleInput:
    """`example_input_array` for a LightningModule: the one set on the module (as on any LightningModule), else
    `self.example_input()`, made at each read: it costs no memory, is never in a checkpoint, and follows the
    model's input size (`model.set_input_size`) and dtype (a `bf16-true` Trainer's). None under FSDP."""

    def example_input(self):
        """One batch of what `forward` takes, at the model's input size (batch 1)."""
        raise NotImplementedError

    def example_images(self, model: torch.nn.Module) -> torch.Tensor:
        """(1, in_chans, R, R) zeros for `model` (R its config's img_size), on its device, in its dtype."""
        cfg = model.config
        weight = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = weight.dtype if weight is not None else torch.float32
        return torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size, dtype=dtype, device=self.device)

    @property
    def example_input_array(self):
        if self._example_input_array is not None:
            return self._example_input_array
        if fsdp_root(self._trainer) is not None:
            # ModelSummary forwards the example through the module, not FSDP's wrapper: it would meet flat shards
            return None
        return self.example_input()

    @example_input_array.setter
    def example_input_array(self, example) -> None:
        self._example_input_array = example

    def traced_forward(self, *inputs):
        """`model(*inputs)` without autograd, for the trace of TensorBoard's graph (`TensorBoardLogger(log_graph=True)`,
        under Lightning's `_jit_is_scripting`): traced with autograd on, the model's two runs in torch.jit.trace's
        check make different graphs and the fit stops in its sanity check."""
        with torch.no_grad():
            return self.model(*inputs)

    def to_torchscript(self, *args, **kwargs):
        raise SwinzooError(f"{type(self).__name__}.to_torchscript: TorchScript cannot compile swinzoo's models (and "
                           "torch deprecates it): export with module.to_onnx(path), "
                           "torch.export.export(module.model.eval(), (images,)), or `swinzoo export CKPT --to pt2` "
                           "(or --to onnx)")
