"""The `swinzoo` namespace: every exported name stays what `_EXPORTS` says, whatever was imported before it."""

import importlib
import pkgutil
import re
from pathlib import Path

import swinzoo


def test_no_exported_name_is_also_a_submodule():
    """Importing a submodule sets it as the package's attribute, hiding a lazily exported name of the same spelling
    (`import swinzoo.transfer` made `swinzoo.transfer(...)` a call of a module)."""
    submodules = {m.name for m in pkgutil.iter_modules(swinzoo.__path__)}
    assert not set(swinzoo.__all__) & submodules


def test_transfer_is_the_function_after_its_module_is_imported():
    importlib.import_module(swinzoo._EXPORTS["transfer"])
    ck = swinzoo.read_checkpoint("swin_n_64")
    sd, dst, report = swinzoo.transfer(ck.state_dict, ck.config, ck.config.replace(img_size=128, window_size=8))
    assert (dst.img_size, dst.window_size) == (128, 8) and report.interpolated


def test_the_return_types_the_readme_names_are_exported():
    """`-> Converted(...)`, `-> PretrainResult(...)`: a reader can import what the README says a call returns."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    api = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"-> ([A-Z]\w+)\(", api))
    assert {"Checkpoint", "Converted", "FinetuneResult", "PretrainResult"} <= named
    assert named <= set(swinzoo.__all__)
    from swinzoo.conversion import Converted
    from swinzoo.train.options import FinetuneResult
    from swinzoo.train.pretrain_options import PretrainResult

    assert (swinzoo.Converted, swinzoo.FinetuneResult, swinzoo.PretrainResult) == (Converted, FinetuneResult,
                                                                                   PretrainResult)
