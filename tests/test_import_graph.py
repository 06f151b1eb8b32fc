"""The layers of swinzoo, read from the source: every import of a project module (at module level, inside functions
and under TYPE_CHECKING alike) goes down the ladder or sideways within a layer, never up, and never in a cycle.

    errors, config, zoo, preprocess -> models -> weight_transfer, geometric_interp, io -> converters -> sources,
    hub(_http), upload, conversion -> train, evaluation, bench -> commands, cli (and the package's own lazy `swinzoo`
    namespace)
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (layer, module prefixes); a module belongs to the first layer with a prefix that is it or one of its packages
LAYERS = [
    (0, ("swinzoo.errors", "swinzoo.settings", "swinzoo.config", "swinzoo.zoo", "swinzoo.preprocess",
         "swinzoo.hardware", "swinzoo.run_folder", "swinzoo.live_display", "swinzoo.hard_stop",
         "swinzoo.json_text", "swinzoo.weight_files")),
    (1, ("swinzoo.models",)),
    (2, ("swinzoo.weight_transfer", "swinzoo.geometric_interp", "swinzoo.io", "swinzoo.file_kinds",
         "swinzoo.state_dicts", "swinzoo.pickled_configs")),
    (3, ("swinzoo.converters",)),
    (4, ("swinzoo.sources", "swinzoo.hub", "swinzoo.hub_http", "swinzoo.upload", "swinzoo.model_card",
         "swinzoo.conversion")),
    (5, ("swinzoo.train", "swinzoo.evaluation", "swinzoo.eval_precision", "swinzoo.accuracy_plot", "swinzoo.plot",
         "swinzoo.bench", "swinzoo.bench_plot", "swinzoo.data", "swinzoo.recipes", "swinzoo.per_class",
         "swinzoo.prediction")),
    (6, ("swinzoo.commands", "swinzoo.cli", "swinzoo.__main__", "swinzoo")),
]
# where each installed package's files live in the repository (pyproject's package-dir)
PACKAGE_DIRS = {"swinzoo": ROOT / "swinzoo", "swinzoo.converters": ROOT / "converters",
                "swinzoo.recipes": ROOT / "recipes"}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> int:
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "swinzoo"):
            return layer
    assert module == "swinzoo", f"{module} has no layer: add it to LAYERS in {__file__}"
    return 6


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # `from pkg import sub` imports the module pkg.sub when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) - {"swinzoo"} for name, path in modules.items()}


def test_every_module_has_a_layer_and_nothing_imports_upward():
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, deps in graph().items() for b in sorted(deps) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_library_never_imports_the_cli():
    offenders = [a for a, deps in graph().items() if layer_of(a) < 6 and any(d.startswith("swinzoo.commands")
                                                                              or d == "swinzoo.cli" for d in deps)]
    assert offenders == []


def test_the_graph_is_read_correctly():
    """The reader sees imports inside functions and relative imports (else the tests above could not fail)."""
    g = graph()
    assert "swinzoo.converters.common" in g["swinzoo.converters.timm"]
    assert "swinzoo.models.fast_path" in g["swinzoo.models.swin"]  # `from swinzoo.models import fast_path`
    assert "swinzoo.train.run" in g["swinzoo.commands.finetune"]
    assert {"swinzoo.converters", "swinzoo.hub"} <= g["swinzoo.sources"]  # `from swinzoo import converters, hub`


def test_public_names_resolve():
    import swinzoo

    assert sorted(swinzoo.__all__) == sorted(swinzoo._EXPORTS)
    for name in swinzoo.__all__:
        assert getattr(swinzoo, name) is not None, name
