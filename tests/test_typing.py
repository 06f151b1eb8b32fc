"""Type checkers (mypy, pyright) read swinzoo's annotations in user code: the package says so (py.typed), every public
function is fully annotated, and the types declared for `features_only` / `intermediates_only` are what runs.

mypy on a realistic user script (tests/typecheck/user_script.py) is the end-to-end check; it takes over a minute cold,
so it is run by hand (the command is in that file), not here."""

import ast
import inspect
import sys
import types
import typing
from pathlib import Path

import pytest
import torch

import swinzoo
from swinzoo import SwinBackbone, SwinTransformer

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_marker_ships():
    # without it, mypy skips swinzoo ("missing library stubs or py.typed marker") and every result is Any
    assert (Path(swinzoo.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data.get("swinzoo", []), "py.typed must be package data, or the wheel lacks it"


def test_type_checkers_see_the_exports_and_no_lazy_getattr():
    # what a checker resolves `swinzoo.NAME` to: the TYPE_CHECKING imports; a module __getattr__ it could see would
    # type every other name, a misspelt `swinzoo.lod_model(...)` too, as Any
    tree = ast.parse((ROOT / "swinzoo" / "__init__.py").read_text())
    assert "__getattr__" not in [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    checked = {alias.name: node.module for block in tree.body
               if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
               for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert checked == swinzoo._EXPORTS and sorted(checked) == sorted(swinzoo.__all__)


def type_hints(fn) -> dict:
    """`typing.get_type_hints`, with the names the function's module imports under TYPE_CHECKING, as a checker sees
    them."""
    module = sys.modules[fn.__module__]
    namespace = dict(vars(module))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            exec(compile(ast.Module(node.body, type_ignores=[]), module.__file__, "exec"), namespace)
    return typing.get_type_hints(fn, globalns=namespace)


def public_functions():
    """(name, function) for every function in `swinzoo.__all__`, and the public methods (and constructors) that
    classes in it define in swinzoo's own modules."""
    for name in swinzoo.__all__:
        obj = getattr(swinzoo, name)
        if not inspect.isclass(obj):
            yield name, obj
            continue
        for cls in obj.__mro__:
            if not cls.__module__.startswith("swinzoo") or issubclass(cls, BaseException):
                continue
            for attr, value in vars(cls).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                value = value.fget if isinstance(value, property) else value
                value = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if inspect.isfunction(value):
                    yield f"{name}.{attr}", value


PUBLIC = list(public_functions())


@pytest.mark.parametrize("name, fn", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_api_fully_annotated(name, fn):
    # an unannotated parameter or return is Any in the user's code: mistakes there go unseen
    hints = type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    missing = [p for p in [*params, "return"] if p not in hints]
    assert not missing, f"{name} lacks annotations for {missing}"


def declared(fn, parameter: str, value) -> tuple:
    """The concrete classes the overload of `fn` taking `parameter=value` (a Literal) declares it returns."""
    for overload in typing.get_overloads(fn):
        hints = type_hints(overload)
        if hints[parameter] == (type(None) if value is None else typing.Literal[value]):
            ret = hints["return"]
            args = typing.get_args(ret) if typing.get_origin(ret) in (typing.Union, types.UnionType) else (ret,)
            return tuple(typing.get_origin(a) or a for a in args if a is not typing.Any)
    raise AssertionError(f"{fn.__qualname__} has no overload for {parameter}={value!r}")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is Python 3.11+")
def test_declared_return_types_are_what_runs():
    # `SwinTransformer | SwinBackbone` made users narrow before calling either's methods; the overloads give the one
    # each call builds, and must not lie about it
    images = torch.rand(1, 3, 64, 64)
    for features_only in (True, False):
        model = swinzoo.create_model("swin_n_64", features_only=features_only)
        assert type(model) in declared(swinzoo.create_model, "features_only", features_only)
        assert declared(swinzoo.create_model, "features_only", features_only) == (
            (SwinBackbone,) if features_only else (SwinTransformer,))
    for features_only in (True, False, None):
        model = swinzoo.load_model("swin_n_64", features_only=features_only)
        assert type(model) in declared(swinzoo.load_model, "features_only", features_only)
    classifier = swinzoo.create_model("swin_n_64").eval()
    with torch.no_grad():
        for only in (True, False):
            out = classifier.forward_intermediates(images, intermediates_only=only)
            assert type(out) in declared(SwinTransformer.forward_intermediates, "intermediates_only", only)
    assert isinstance(swinzoo.create_transform(classifier)(torch.zeros(3, 64, 64, dtype=torch.uint8)), torch.Tensor)
