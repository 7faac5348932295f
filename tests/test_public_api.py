"""The packages' layering and public API, read from the source: each package states what it exports
(``__all__``) and exports it; the shared core imports nothing from the parts built on it; no
module imports itself back through others (no import circle)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgecloud", "edge_agent", "cloud_worker", "gateway", "edgecloud_tools", "protos")
ABOVE_THE_CORE = {"edge_agent", "cloud_worker", "gateway", "edgecloud_tools", "bench", "tests"}
ABOVE_THE_PARTS = {"edgecloud_tools", "bench", "tests"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.endswith("_pb2.py") or path.name.endswith("_pb2_grpc.py"):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, module: str) -> set[str]:
    """Modules ``path`` imports, at any depth of its code (lazy imports count too)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


MODULES = modules()


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_states_its_public_api_and_exports_it(package):
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{package} has no __all__"
    assert len(set(exported)) == len(exported), f"{package}.__all__ repeats a name"
    for name in exported:
        assert getattr(module, name, None) is not None, f"{package}.__all__ names {name!r}, which it lacks"


def test_the_shared_core_imports_nothing_above_it():
    offenders = {
        module: sorted(name for name in imports_of(path, module) if name.split(".")[0] in ABOVE_THE_CORE)
        for module, path in MODULES.items() if module.split(".")[0] == "edgecloud"
    }
    assert not {m: names for m, names in offenders.items() if names}


def test_the_product_parts_do_not_import_the_tooling():
    offenders = {
        module: sorted(name for name in imports_of(path, module) if name.split(".")[0] in ABOVE_THE_PARTS)
        for module, path in MODULES.items() if module.split(".")[0] in {"edge_agent", "cloud_worker", "gateway"}
    }
    assert not {m: names for m, names in offenders.items() if names}


def test_no_import_circles():
    graph = {module: {name for name in imports_of(path, module) if name in MODULES and name != module}
             for module, path in MODULES.items()}
    # A package's __init__ re-exporting its own modules is how Python packages work: not a circle.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not (module.startswith(t + ".") and t in MODULES)}
    visiting: list[str] = []
    done: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append(visiting[visiting.index(module):] + [module])
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not circles, circles
