"""The house rules of the source tree, checked statically (README "Where things are").

- no import circle between Krabby modules, counting imports inside functions too (a lazy import hides a
  circle from the interpreter, not from a reader);
- no runtime module over 500 lines;
- layering: krabby.hal never imports krabby.parkour (one named exception), jetson/ never imports a kit/ package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "exts" / "krabby.hal", REPO / "exts" / "krabby.parkour")
MAX_LINES = 500
# krabby-hal-server-isaac runs the parkour inference client in-process; its path is public (README), so it
# imports krabby.parkour lazily inside main() (DESIGN §2 exception, named in krabby/hal/isaac/main.py).
HAL_IMPORTS_PARKOUR_ALLOWED = {"krabby.hal.isaac.main"}


def _modules() -> dict[str, Path]:
    mods = {}
    for root in ROOTS:
        for path in sorted((root / "krabby").rglob("*.py")):
            if "tests" in path.relative_to(root).parts:
                continue  # Kit-side test modules (run by omni.kit.test only)
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every krabby module this file imports, anywhere in it (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            if t in MODULES and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package_edges(name: str) -> set[str]:
    """Importing a module imports its parent packages' __init__ too; a package is not a circle with its children."""
    return {m for m in GRAPH[name] if not name.startswith(m + ".")}


def test_no_import_circles():
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "active"
        stack.append(node)
        for nxt in sorted(_package_edges(node)):
            if state.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_imports():
    """Guard for the test above: an import inside a function counts (deploy/profile.py imports the server lazily)."""
    assert "krabby.hal.server" in GRAPH["krabby.hal.deploy.profile"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_runtime_module_over_500_lines(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(REPO)} has {lines} lines; split it along a seam"


def test_hal_never_imports_parkour():
    offenders = sorted(
        name for name, deps in GRAPH.items()
        if name.startswith("krabby.hal") and name not in HAL_IMPORTS_PARKOUR_ALLOWED
        and any(d.startswith("krabby.parkour") for d in deps)
    )
    assert not offenders, f"krabby.hal modules importing krabby.parkour: {offenders}"


def test_jetson_never_imports_kit():
    for path in sorted((REPO / "jetson").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(".kit" in n or n.startswith(("omni", "carb", "pxr", "isaacsim")) for n in names), \
                f"{path.relative_to(REPO)} imports {names}"
