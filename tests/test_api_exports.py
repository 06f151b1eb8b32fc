"""The `swinzoo` namespace: every exported name stays what `_EXPORTS` says, whatever was imported before it."""

import importlib
import pkgutil

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
