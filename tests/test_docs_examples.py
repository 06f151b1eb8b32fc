"""The Python examples of the README and docs/ as written: every call names public API with a signature that takes
its arguments, and the README's blocks run offline (the nano models, `shapes`), where a zoo model that needs a
download fails with the one offline error naming its Hub repo. Shortened only by `max_steps` (and one validation
batch), so the docs cannot drift from the code. The recipes, SWINZOO_* variables and extras the docs name exist (the
shell commands: tests/test_docs_commands.py)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo import settings
from swinzoo.hub import zoo_repo
from swinzoo.models.simmim import SimMIM
from swinzoo.train.module import SwinClassifier
from swinzoo.train.options import FinetuneOptions
from swinzoo.train.pretrain_options import PretrainOptions
from swinzoo.train.recipes import packaged_recipes
from swinzoo.train.simmim_module import SimMIMPretrainer
from swinzoo.zoo import get_entry, is_zoo_name
from tests.conftest import DOCS, ROOT, fixture_pth

# the variables the examples call methods on, and what they hold
INSTANCES = {"model": swinzoo.SwinTransformer, "backbone": swinzoo.SwinBackbone, "simmim": SimMIM,
             "module": SwinClassifier, "pretrainer": SimMIMPretrainer}
OPTIONS = {"finetune": FinetuneOptions, "pretrain": PretrainOptions}  # their **options are these fields
RECIPE_NAME = re.compile(r"^(nano|finetune|nano_\w+|simmim_\w+|swin(v2)?_\d+k?to\d+)$")  # spans naming a recipe


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block."""
    blocks, lines = [], path.read_text().split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            blocks.append((i + 1, "\n".join(lines[i + 1:end])))
    return blocks


def resolve(func: ast.expr, names: dict):
    """The object an example calls: `swinzoo.X`, an imported name, or a method of a variable in INSTANCES."""
    chain = []
    while isinstance(func, ast.Attribute):
        chain.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in {**names, **INSTANCES}:
        return None
    obj = INSTANCES.get(func.id, names.get(func.id))
    if not chain and func.id in INSTANCES:  # `backbone(images)` calls the instance: its forward
        chain = ["forward"]
    for attr in chain:
        obj = getattr(obj, attr)
    return obj


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_call_in_a_python_example_exists_with_that_signature(path):
    blocks = python_blocks(path)
    names: dict = {"swinzoo": swinzoo}
    for _, code in blocks:  # the imports of a page hold for its later blocks
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                exec(compile(ast.Module([node], []), str(path), "exec"), names)
    for line, code in blocks:
        for node in ast.walk(ast.parse(code)):
            if not isinstance(node, ast.Call) or (target := resolve(node.func, names)) is None:
                continue
            where = f"{path.name}:{line + node.lineno}: {ast.unparse(node)[:80]}"
            obj, signature = target, inspect.signature(target)
            # a method looked up on the class (or Lightning's restricted classmethod) lists self / cls too
            unbound = next(iter(signature.parameters), None) in ("self", "cls")
            if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and \
                    node.func.value.id == "swinzoo":
                assert node.func.attr in swinzoo.__all__, where
            keywords = {k.arg: None for k in node.keywords if k.arg is not None}
            args = [None] * (len(node.args) + unbound)
            bind = signature.bind_partial if len(keywords) < len(node.keywords) else signature.bind
            bind(*args, **keywords)  # TypeError: the docs call it with arguments it does not take
            if getattr(obj, "__name__", None) in OPTIONS and obj.__module__.startswith("swinzoo.train"):
                fields = {f.name for f in dataclasses.fields(OPTIONS[obj.__name__])}
                assert set(keywords) - {"console"} <= fields, where
        for name, fields in re.findall(r"-> (\w+)\(([^)]*)\)", code):  # `# -> Converted(output, config, ...)`
            assert {f.name for f in dataclasses.fields(getattr(swinzoo, name))} >= \
                   {f.strip() for f in fields.split(",")} - {"..."}, name


def needs_download(node: ast.stmt) -> str | None:
    """The Hub repo of the first zoo name in `node` whose weights are not in the package, when `node` loads
    weights (`create_model` without pretrained=True builds fresh ones)."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "create_model" \
                and not any(k.arg == "pretrained" for k in call.keywords):
            return None
    for const in ast.walk(node):
        if isinstance(const, ast.Constant) and isinstance(const.value, str) and is_zoo_name(const.value):
            try:
                entry, tag = get_entry(const.value)
                weights = entry.weights_for(tag)
            except swinzoo.SwinzooError:  # a file named after a model: swin_tiny_patch4_window7_224.pth
                continue
            if weights.package_path() is None:
                return zoo_repo(const.value).removeprefix("hf-hub:")
    return None


def run_block(code: str, namespace: dict) -> dict[int, object]:
    """Each statement in turn; an offline failure is expected exactly where a statement needs a download (or a file
    one of those would have written). Returns the values of the expression statements by line."""
    values, unmade = {}, set()
    for node in ast.parse(code).body:
        repo = needs_download(node)
        literals = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        try:
            if isinstance(node, ast.Expr):
                values[node.lineno] = eval(compile(ast.Expression(node.value), "<docs>", "eval"), namespace)
            else:
                exec(compile(ast.Module([node], []), "<docs>", "exec"), namespace)
        except swinzoo.SwinzooError as e:
            if repo is not None:
                assert "HF_HUB_OFFLINE is set" in str(e) and repo in str(e), (ast.unparse(node), str(e))
            else:
                assert literals & unmade and "does not exist" in str(e), (ast.unparse(node), str(e))
            unmade |= literals
        else:
            assert repo is None, f"{ast.unparse(node)} ran offline: the docs need no download for {repo}"
    return values


def shortened(run, **options):
    def short(*args, **kwargs):
        return run(*args, **{**kwargs, **options})
    return short


def test_the_readme_python_api_runs_offline(tmp_path, monkeypatch, hub_home):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (80, 64), "red").save("img.png")
    shutil.copy(fixture_pth("swin_v1_tiny_w7_224"), "swin_tiny_patch4_window7_224.pth")
    short = {"max_steps": 2, "trainer": {"limit_val_batches": 1}, "num_workers": 0}
    monkeypatch.setattr(swinzoo, "finetune", shortened(swinzoo.finetune, **short))
    monkeypatch.setattr(swinzoo, "pretrain", shortened(swinzoo.pretrain, **short))
    (_, api), = [b for b in python_blocks(ROOT / "README.md") if "swinzoo.list_models(" in b[1]]
    ns: dict = {}
    values = run_block(api, ns)
    lines = api.split("\n")
    for line, value in values.items():  # `# -> FinetuneResult(out, metrics)`: what the call returned
        for name in re.findall(r"-> (\w+)\(", lines[line - 1]):
            assert type(value).__name__ == name, lines[line - 1]
    evaluated, = [v for line, v in values.items() if "swinzoo.evaluate(" in lines[line - 1]]
    assert set(evaluated) >= {"top1", "top5", "n"}  # {"top1", "top5", "n", ...}
    assert (ns["features"].ndim, ns["features"].shape[1:3]) == (4, (7, 7))  # (B, H/32, W/32, C)
    assert ns["pooled"].shape == (1, ns["features"].shape[-1]) and len(ns["maps"]) == 4
    images = torch.rand(2, 3, 64, 64)
    loss, reconstruction = ns["simmim"](images, ns["simmim"].mask_generator()(len(images)))  # the comment's call
    assert loss.ndim == 0 and reconstruction.shape == images.shape


def test_the_readme_lightning_example_runs(tmp_path, monkeypatch):
    """"Your own Lightning Trainer", with 2 steps in place of 1000 and `shapes` as the user's data."""
    from torch.utils.data import DataLoader

    from swinzoo.train.data import SwinDataModule

    class Shapes(SwinDataModule):  # the user's data module: with test and predict loaders
        def test_dataloader(self):
            return self.val_dataloader()

        def predict_dataloader(self):
            return self.val_dataloader()

    tested, test = [], L.Trainer.test  # what trainer.test returns: the example discards it
    monkeypatch.setattr(L.Trainer, "test", lambda self, *args, **kwargs: tested.append(test(self, *args, **kwargs)))
    monkeypatch.chdir(tmp_path)
    (_, code), = [b for b in python_blocks(ROOT / "README.md") if "SwinClassifier.from_pretrained" in b[1]]
    assert code.count("max_steps=1000") == 2
    ns = {"my_datamodule": Shapes("shapes", 96, 8, recipe="nano_finetune", train_size=16, val_size=8, num_workers=0),
          "my_image_loader": DataLoader(torch.rand(16, 3, 64, 64), batch_size=8)}
    exec(code.replace("max_steps=1000", "max_steps=2"), ns)
    assert [tuple(b.shape) for b in ns["logits"]] == [(8, 10)]  # (B, 10) per batch
    assert {"test/top1", "test/top5", "test/loss"} <= set(tested[0][0])  # logs test/top1, test/top5, test/loss


def test_every_recipe_the_docs_name_is_packaged():
    """`--recipe nano`, `recipe="nano_finetune"`, recipes/X.yaml and a span shaped like a recipe name (`swin_224to384`)
    name a recipe swinzoo ships."""
    packaged = set(packaged_recipes())
    named = []
    for path in DOCS:
        text = path.read_text()
        named += [(path.name, m) for m in re.findall(r"`([a-z0-9_]+)`", text) if RECIPE_NAME.match(m)]
        named += [(path.name, m) for m in re.findall(r"--recipe[ =]([^\s`\]\"]+)", text) if not re.search(r"[./]", m)]
        named += [(path.name, m) for m in re.findall(r"recipe=\"(\w+)\"", text)]
        named += [(path.name, m) for m in re.findall(r"recipes/(\w+)\.yaml", text)]
    assert named
    missing = [f"{where}: {name}" for where, name in named if name not in packaged and name.upper() != name]
    assert not missing, missing


def test_every_environment_variable_the_docs_name_is_read():
    """Each SWINZOO_* a user may set is one `settings` knows; each NAME=VALUE shown takes that value; swinzoo's own
    (`_SWINZOO_*`) are set somewhere in the code."""
    code = "\n".join(p.read_text() for p in (ROOT / "swinzoo").rglob("*.py"))
    problems = []
    for path in DOCS:
        text = path.read_text()
        for m in re.finditer(r"(?<![\w$])(_?SWINZOO_[A-Z0-9_]*[A-Z0-9])(?:=([\w.-]+))?", text):
            name, value = m.groups()
            if name.startswith("_"):
                if f'"{name}"' not in code:
                    problems.append(f"{path.name}: {name} is not in the code")
            elif name not in settings.DOCUMENTED:
                problems.append(f"{path.name}: {name} is not one of {settings.DOCUMENTED}")
            elif value and name in settings.CHOICES and value.lower() not in settings.CHOICES[name]:
                problems.append(f"{path.name}: {name}={value} not among {settings.CHOICES[name]}")
    assert not problems, problems


def test_every_extra_the_docs_and_errors_name_exists():
    """`pip install "swinzoo[onnx]"`, `pip install -e ".[hf]"`, and the extras the error messages tell users to
    install, are extras of pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; requires-python allows 3.10

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    texts = [(p.name, p.read_text()) for p in DOCS]
    texts += [(str(p.relative_to(ROOT)), p.read_text()) for folder in ("swinzoo", "converters", "benchmarks")
              for p in sorted((ROOT / folder).rglob("*.py"))]
    named = [(where, extra) for where, text in texts
             for group in re.findall(r"(?:swinzoo|\.)\[([a-z][\w,-]*)\]", text) for extra in group.split(",")]
    assert {extra for _, extra in named} >= {"hf", "onnx", "bench", "test"}
    assert not [f"{where}: [{extra}]" for where, extra in named if extra not in extras]
