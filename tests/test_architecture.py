"""The layers of the core library (docs/architecture.md), checked on the source.

Every import statement of ``bcp_core`` and ``bcp_demo`` is read with :mod:`ast` (imports inside
functions included), so a new import that reaches up a layer, or closes a cycle, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each part of the core: a module may import its own package and lower layers only.
LAYERS = {
    "bcp_core": 0,  # the package's own __init__ (a docstring and the version)
    "bcp_core.errors": 0,
    "bcp_core.config": 1,
    "bcp_core.fileio": 1,
    "bcp_core.settings": 1,  # the BCP_* environment settings
    "bcp_core.output_safety": 1,
    "bcp_core.access": 1,  # modes, roles and permissions (pure rules)
    "bcp_core.audit": 1,  # the append-only audit log
    "bcp_core.quiet": 1,  # TensorFlow imported without its start-up lines (entry points)
    "bcp_core.data": 2,
    "bcp_core.imaging": 2,
    "bcp_core.evaluation": 2,
    "bcp_core.model": 3,
    "bcp_core.plots": 3,
    "bcp_core.inference": 4,
    "bcp_core.runs": 4,  # the application layer: training runs as the CLI and dashboard start them
    "bcp_core.cli": 5,
    "bcp_core.__main__": 6,
}
#: The demo generator sits beside the core and may use only its bottom layers.
DEMO_MAY_IMPORT = ("bcp_core.errors", "bcp_core.config", "bcp_core.fileio", "bcp_core.data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` gives x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def owner(name: str) -> str | None:
    """The ``LAYERS`` key that ``name`` belongs to (longest match), or None."""
    keys = [k for k in LAYERS if name == k or name.startswith(k + ".")]
    return max(keys, key=len) if keys else None


SOURCES = {
    module_name(p): p
    for package in ("bcp_core", "bcp_demo")
    for p in sorted((ROOT / package).rglob("*.py"))
}
GRAPH = {
    name: {i for i in imports_of(path) if i in SOURCES and i != name}
    for name, path in SOURCES.items()
}


@pytest.mark.parametrize("name", sorted(n for n in SOURCES if n.startswith("bcp_core")))
def test_core_modules_import_only_their_package_and_lower_layers(name):
    mine = owner(name)
    assert mine is not None, f"{name} has no layer in LAYERS: add it"
    for target in GRAPH[name]:
        theirs = owner(target)
        if theirs is None or target == "bcp_core" or theirs == mine:
            continue  # the demo generator has its own test
        assert LAYERS[theirs] < LAYERS[mine], f"{name} imports {target}, a layer above or beside it"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_no_module_imports_the_ui(name):
    ui = {"streamlit", "dashboard", "pages"}
    bad = {i for i in imports_of(SOURCES[name]) if i.split(".")[0] in ui}
    assert not bad, f"{name} imports the UI: {sorted(bad)}"


def test_only_the_cli_reaches_the_demo_generator():
    users = {n for n, targets in GRAPH.items() if any(t.startswith("bcp_demo") for t in targets)}
    assert {u for u in users if u.startswith("bcp_core")} <= {"bcp_core.cli"}


def test_the_demo_generator_uses_only_the_bottom_of_the_core():
    for name in (n for n in SOURCES if n.startswith("bcp_demo")):
        for target in (t for t in GRAPH[name] if t.startswith("bcp_core")):
            ok = target == "bcp_core" or target.startswith(DEMO_MAY_IMPORT)
            assert ok, f"{name} imports {target}"


def test_there_is_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(GRAPH):
        if start not in state:
            visit(start, [start])


def test_the_layer_check_can_fail(tmp_path):
    """The checker itself: an upward import in a module is seen."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from bcp_core.inference.predict import predict_one\n")
    assert "bcp_core.inference.predict" in imports_of(module)
    assert LAYERS[owner("bcp_core.inference.predict")] > LAYERS[owner("bcp_core.data.index")]


#: docs/architecture.md: "Pages stay under 150 lines" (the entry point too): work belongs in
#: bcp_core, and what one page needs beyond its file in dashboard/views/.
MAX_PAGE_LINES = 150


@pytest.mark.parametrize(
    "page", [*sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]
)
def test_pages_stay_thin(page):
    lines = len(page.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_PAGE_LINES, f"{page.name} has {lines} lines: move work out of the page"
