"""Graph exports: a checkpoint -> an ONNX model or a `torch.export` program (.pt2) with dynamic batch, height and
width. Write-only formats: what they hold is a computation, not weights swinzoo reads back.

The model runs on the export path (`swinzoo.models.traceable`): window padding, the shift rule, masks and gather
indices come from the input's shape inside the graph, so the exported file runs any size, not only the one it was
traced at (the failure of timm #1844 and Swin-Transformer #301). Both formats go through `torch.export` (the ONNX
one with `torch.onnx.export(dynamo=True)`, opset 18). Sizes are traced "size-obliviously": the tracer does not
specialise a size on whether it is 1 (e.g. a last stage that fits in one window at the sample size), which is the
only assumption the export path needs; every other size relation is computed in the graph.

A classifier with an absolute position embedding (`ape=True`) has one of fixed length: its height and width stay
at `img_size` (batch stays dynamic). A backbone resizes its embedding per input and stays fully dynamic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint
from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_path
from swinzoo.json_text import strict_dumps
from swinzoo.models import SwinBackbone, SwinTransformer
from swinzoo.models.traceable import traceable
from swinzoo.preprocess import Preprocess
from swinzoo.state_dicts import load_strict

GRAPH_FORMATS = ("onnx", "pt2")
ONNX_OPSET = 18
INPUT_NAME = "pixel_values"
MAX_SIZE = 16384  # the exported graph's declared bounds; anything a Swin model is run at fits
METADATA_KEY = "swinzoo"  # ONNX metadata_props / .pt2 extra file holding the config and provenance (JSON)


def output_names(config: SwinConfig) -> list[str]:
    """`logits` for a classifier, `features` (pooled) for a headless model (0 classes: a SimMIM encoder);
    `stage{i}` (NCHW, stride 4 * 2**i) per backbone output."""
    if config.is_backbone:
        return [f"stage{i}" for i in config.out_indices]
    return ["logits"] if config.num_classes > 0 else ["features"]


def min_size(config: SwinConfig) -> int:
    """The smallest height or width the graph takes: two tokens per axis in the last stage (64 px for patch 4 and
    four stages). A one-token axis would be a size-1 dimension, which the tracer may not treat like the others."""
    return 2 * config.patch_size * 2 ** (config.num_stages - 1)


def fixed_size(config: SwinConfig) -> bool:
    """Whether height and width are pinned at `img_size` (a classifier's absolute position embedding)."""
    return config.ape and not config.is_backbone


def build_module(checkpoint: Checkpoint) -> torch.nn.Module:
    """The float32 eval model of `checkpoint`, as exports run it."""
    config = checkpoint.config
    model = SwinBackbone(config) if config.is_backbone else SwinTransformer(config)
    load_strict(model, {k: v.float() for k, v in checkpoint.state_dict.items()}, "the export")
    return model.float().eval()


def dynamic_shapes(config: SwinConfig) -> tuple[dict, ...]:
    dims = {0: torch.export.Dim("batch", min=1, max=MAX_SIZE)}
    if not fixed_size(config):
        dims[2] = torch.export.Dim("height", min=min_size(config), max=MAX_SIZE)
        dims[3] = torch.export.Dim("width", min=min_size(config), max=MAX_SIZE)
    return (dims,)


@contextlib.contextmanager
def export_mode(model: torch.nn.Module):
    """The export path, no autograd, and size-oblivious tracing (see the module docstring)."""
    from torch.fx.experimental import _config as fx_config

    with traceable(model), torch.no_grad(), fx_config.patch(backed_size_oblivious=True), _quiet_torch():
        yield


@contextlib.contextmanager
def _quiet_torch():
    """The exporters' warnings and log lines (graph dumps, "Unable to find user code ...") are for PyTorch's
    developers; a failure reaches the user as one line (`_one_line`)."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:  # the exporters also print graphs and progress themselves
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def sample_input(config: SwinConfig) -> torch.Tensor:
    # batch 2 and the model's own size: neither is special to the tracer (size-oblivious tracing aside)
    return torch.randn(2, config.in_chans, config.img_size, config.img_size)


def metadata(checkpoint: Checkpoint, fmt: str) -> str:
    """What the exported file carries about itself: config, provenance, input and output names."""
    config = checkpoint.config
    return strict_dumps({"format": fmt, "config": config.to_dict(), "provenance": checkpoint.provenance,
                       "input": INPUT_NAME, "outputs": output_names(config),
                       # resolved, for a deployment without swinzoo (timm's data_config keys)
                       "preprocess": Preprocess.of(config).data_config(config.img_size, config.in_chans),
                       "dynamic": ["batch"] + ([] if fixed_size(config) else ["height", "width"]),
                       "min_size": min_size(config)}, default=str)


def export_program(model: torch.nn.Module, config: SwinConfig) -> torch.export.ExportedProgram:
    with export_mode(model), _one_line("pt2"):
        return torch.export.export(model, (sample_input(config),), dynamic_shapes=dynamic_shapes(config))


def write_pt2(checkpoint: Checkpoint, out: str | Path, overwrite: bool = True) -> str:
    program = export_program(build_module(checkpoint), checkpoint.config)
    # through a file object: given a path not ending in .pt2 (the user's name, in a temporary folder), torch logs a
    # warning naming the temporary
    with atomic_path(out, overwrite) as tmp, open(tmp, "wb") as f:
        torch.export.save(program, f, extra_files={METADATA_KEY: metadata(checkpoint, "pt2")})
    return "torch.export.load(OUT).module()(pixel_values)"


def write_onnx(checkpoint: Checkpoint, out: str | Path, overwrite: bool = True) -> str:
    config = checkpoint.config
    model = build_module(checkpoint)
    with export_mode(model), _one_line("onnx"):
        program = torch.onnx.export(model, (sample_input(config),), dynamo=True, opset_version=ONNX_OPSET,
                                    dynamic_shapes=dynamic_shapes(config), input_names=[INPUT_NAME],
                                    output_names=output_names(config), verbose=False)
    program.model.metadata_props[METADATA_KEY] = metadata(checkpoint, "onnx")
    with atomic_path(out, overwrite) as tmp:
        program.save(str(tmp))
    return f"onnxruntime.InferenceSession(OUT).run(None, {{'{INPUT_NAME}': images}})"


@contextlib.contextmanager
def _one_line(fmt: str):
    """An exporter failure as one line naming what failed (the exporters' own reports run to pages)."""
    try:
        yield
    except SwinzooError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.export and the ONNX exporter raise many unrelated types
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise SwinzooError(f"cannot export this model to {fmt}: {type(e).__name__}: {first[:300]}; export it to "
                           "a weight format instead (--to official, timm, hf) or report the failing op") from None


def write(checkpoint: Checkpoint, fmt: str, out: str | Path, overwrite: bool = True) -> str:
    """Write `checkpoint` as an `fmt` graph at `out`; returns how to run it. Not `overwrite`: a file another process
    wrote at `out` meanwhile is kept and this write refused (`atomic_path`)."""
    if fmt == "onnx":
        try:
            import onnxscript  # noqa: F401 - the dynamo ONNX exporter needs it (and onnx)
        except ImportError:
            raise SwinzooError("exporting to ONNX needs onnx and onnxscript: pip install 'swinzoo[onnx]'") from None
        return write_onnx(checkpoint, out, overwrite)
    if fmt == "pt2":
        return write_pt2(checkpoint, out, overwrite)
    raise SwinzooError(f"unknown graph format {fmt!r}; choose one of {', '.join(GRAPH_FORMATS)}")
