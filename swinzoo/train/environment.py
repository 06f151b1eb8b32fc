"""What a run ran on, as resolved at its start: the library versions, the Python, and what Lightning made of
`--devices auto`, `--accelerator`, `--num-nodes` and the precision asked for (fp16 AMP asked for on a CPU runs as
bf16 autocast; `auto` picks by the CPU), with the GPU's name or the CPU's model. Recorded in OUT/run.json's
provenance (and so in the model file's) by a new run, and beside each resume in its `resumed` entry, so a run
continued on another machine or install says so.

A flat str -> str map: the model file's provenance travels in safetensors metadata, which holds strings.
"""

from __future__ import annotations

import platform
import sys

import lightning
import torch
import torchmetrics
import torchvision
from rich.markup import escape

from swinzoo.hardware import describe_cpu

# imported by a run only for some inputs: recorded when this process has them (`datasets`: hf: data). transformers
# and timm are not among them: swinzoo reads their formats itself, and torchmetrics imports transformers whenever
# it is installed, so its presence would say nothing about the run.
OPTIONAL = ("datasets",)


def run_environment(trainer) -> dict[str, str]:
    """The environment of a run whose Lightning Trainer is `trainer` (built, before or during fit)."""
    device = trainer.strategy.root_device
    env = {"swinzoo": sys.modules["swinzoo"].__version__,  # the package's own __init__ (imported above any module)
           "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "lightning": lightning.__version__, "torchmetrics": torchmetrics.__version__}
    for name in OPTIONAL:
        module = sys.modules.get(name)
        if module is not None:
            env[name] = str(getattr(module, "__version__", "unknown"))
    if device.type == "cuda":
        env["cuda"] = str(torch.version.cuda)
    env.update(accelerator=device.type, devices=str(trainer.num_devices), num_nodes=str(trainer.num_nodes),
               world_size=str(trainer.world_size), strategy=type(trainer.strategy).__name__,
               precision=str(trainer.precision), device=device_name(device))
    return env


def device_name(device: torch.device) -> str:
    """The GPU's name (e.g. 'NVIDIA H200'), or the CPU's model with what decides its precision (`describe_cpu`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return describe_cpu() if device.type == "cpu" else device.type


def print_rendezvous(console, trainer) -> None:
    """Where this node waits for the others: torch's rendezvous prints nothing while a node that was never started
    keeps the others waiting (for the process group's timeout, 30 minutes)."""
    env = trainer.strategy.cluster_environment
    try:
        where = f"{env.main_address}:{env.main_port}"
        node = env.node_rank()
    except (AttributeError, KeyError, ValueError, TypeError):  # an environment that resolves these only at launch
        return
    console.print(f"[bold]nodes[/bold] node {node} of {trainer.num_nodes} waits at {escape(where)} until every node "
                  "has started this run (Ctrl-C stops it)", soft_wrap=True, highlight=False)

