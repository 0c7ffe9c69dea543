"""The package imports downward only: no import circle, and no module imports one of a higher layer (a function's
own imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monai_medspike"

#: lowest first; a module may import its own layer and the ones below
LAYERS = (
    ("utils", "errors", "distributed", "runs", "speed", "networks", "data", "losses", "metrics"),
    ("settings",),
    ("checkpoints",),
    ("handlers",),
    ("workflows",),
    ("bundle", "apps", "compare", "energy", "quickstart", "warmup"),
)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path], top_level_only: bool) -> set[str]:
    """The package modules that ``name`` imports (a ``from package import submodule`` counts as the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("monai_medspike"):
                out.add(target)
    return out


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_layers.py; add its top-level name to LAYERS")


def upward_imports(package: Path = PACKAGE) -> list[str]:
    known = modules(package)
    return sorted(
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in known.items()
        if name != "monai_medspike"
        for target in imports(name, path, known, top_level_only=False)
        if target != "monai_medspike" and layer(target) > layer(name)
    )


def circles(package: Path = PACKAGE) -> list[list[str]]:
    """The import circles (strongly connected components of the imports, a function's own included; Tarjan)."""
    known = modules(package)
    graph = {name: imports(name, path, known, top_level_only=False) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_its_own_layer_or_below():
    assert not upward_imports(), "\n".join(upward_imports())


def test_no_import_circle():
    assert not circles()


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    package = tmp_path / "monai_medspike"
    (package / "handlers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "utils.py").write_text("def f():\n    from monai_medspike.handlers import thing\n")
    (package / "handlers" / "__init__.py").write_text("thing = 1\n")
    (package / "runs.py").write_text("from monai_medspike import distributed\n")
    (package / "distributed.py").write_text("import monai_medspike.runs\n")
    assert circles(package) == [["monai_medspike.distributed", "monai_medspike.runs"]]
    assert upward_imports(package) == ["monai_medspike.utils (layer 0) imports monai_medspike.handlers (layer 3)"]
