"""The package's layers (docs/design.md): imports go one way, with no circles, and ``rvm``
stands alone. Every import counts, those inside functions too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer or any lower one; ``rvm`` is below all.
LAYERS = [
    ("rvm", ["rvm"]),
    ("base", ["nvpipe.errors", "nvpipe.frames", "nvpipe.job"]),
    ("platform", ["nvpipe.platform", "nvpipe.kernels", "nvpipe.model"]),
    ("sources and sinks", ["nvpipe.sources", "nvpipe.sinks"]),
    ("engine", ["nvpipe.engine"]),
    ("application", ["nvpipe.app", "nvpipe.api", "nvpipe.session", "nvpipe.inference",
                     "nvpipe.inference_utils", "nvpipe.examples", "nvpipe.__main__", "nvpipe"]),
]
MAX_TOP_LEVEL_MODULES = 12


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("nvpipe", "rvm", "kernels"):
        for path in (ROOT / top).rglob("*.py"):
            name = _module_name(path)
            if name.startswith("kernels"):  # installed and imported as nvpipe.kernels
                name = "nvpipe." + name
            if top == "nvpipe" and "kernels" in path.relative_to(ROOT).parts[1:2]:
                continue  # nvpipe/kernels links to kernels/: counted once, above
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts ``a.b`` where that is
    a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _layer(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/design.md")
    return rank


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_imports_follow_the_layer_order(graph):
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            # A package's __init__ importing its own modules is the package's surface.
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue
            if _layer(target) > _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} "
                             f"({LAYERS[_layer(target)][0]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_circles(graph):
    """Module-level graph, every import counted (a function-level import still ties two
    modules together)."""
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_rvm_stands_alone(graph):
    outside = {f"{m} -> {t}" for m, ts in graph.items() if m.split(".")[0] == "rvm"
               for t in ts if t.split(".")[0] != "rvm"}
    assert not outside, f"rvm imports nvpipe: {sorted(outside)}"


def test_the_package_top_stays_small():
    top = sorted(p.name for p in (ROOT / "nvpipe").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_checker_sees_a_circle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The two checks above fail where they should: a stand-in package with a circle and an
    engine module importing the application."""
    for name, text in {"nvpipe/__init__.py": "", "nvpipe/engine/__init__.py": "",
                       "nvpipe/app/__init__.py": "",
                       "nvpipe/engine/a.py": "from nvpipe.app import cli\nfrom . import b\n",
                       "nvpipe/engine/b.py": "def f():\n    from nvpipe.engine import a\n",
                       "nvpipe/app/cli.py": "", "rvm/__init__.py": "import nvpipe.errors\n",
                       "nvpipe/errors.py": "", "kernels/__init__.py": ""}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    modules = _modules()
    stand_in = {n: _imports(n, p, set(modules)) for n, p in modules.items()}
    with pytest.raises(AssertionError, match="nvpipe.engine.a .engine. imports nvpipe.app.cli"):
        test_imports_follow_the_layer_order(stand_in)
    with pytest.raises(AssertionError, match=r"circles: \[\['nvpipe.engine.a', 'nvpipe.engine.b'\]\]"):
        test_no_import_circles(stand_in)
    with pytest.raises(AssertionError, match="rvm -> nvpipe.errors"):
        test_rvm_stands_alone(stand_in)
