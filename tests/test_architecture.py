"""The layers of the core library (docs/architecture.md), checked on the source.

Every import statement of ``bcp_core`` and ``bcp_demo`` is read with :mod:`ast` (imports inside
functions included), so a new import that reaches up a layer, closes a cycle, or reads the
``BCP_*`` settings below the entry points, fails here.
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
    "bcp_core.values": 0,  # what counts as a number, a whole number, a blank cell
    "bcp_core.config": 1,
    "bcp_core.fileio": 1,
    "bcp_core.output_safety": 1,
    "bcp_core.formatting": 1,  # percentages and intervals for people, "n/a" when undefined
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
    "bcp_core.settings": 4,  # the BCP_* environment, read by the entry points only (see below)
    "bcp_core.cli": 5,
    "bcp_core.__main__": 6,
}
#: The modules of the core that may import bcp_core.settings: itself and the CLI, its entry point.
#: Below them settings arrive as values (docs/architecture.md, "Settings at the edge").
SETTINGS_READERS = ("bcp_core.settings", "bcp_core.cli", "bcp_core.__main__")
#: The demo generator sits beside the core and may use only its bottom layers.
DEMO_MAY_IMPORT = (
    "bcp_core.errors",
    "bcp_core.values",
    "bcp_core.config",
    "bcp_core.fileio",
    "bcp_core.data",
)


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


@pytest.mark.parametrize(
    "name", sorted(n for n in SOURCES if n.startswith("bcp_core") and n not in SETTINGS_READERS)
)
def test_only_the_entry_points_read_the_settings(name):
    """A module below the CLI receives the values it needs (arguments, ``TrainingLimits``):
    one that read the environment itself could fail on a setting its caller never uses."""
    assert "bcp_core.settings" not in imports_of(SOURCES[name]), (
        f"{name} imports bcp_core.settings: take the value as an argument and let the CLI or "
        "the dashboard read it"
    )


def test_the_settings_check_can_fail(tmp_path):
    """The checker itself: each way of importing the settings is seen, inside a function too."""
    for line in (
        "from bcp_core import settings",
        "import bcp_core.settings",
        "from bcp_core.settings import max_upload_pixels",
    ):
        module = tmp_path / "m.py"
        module.write_text(f"def f():\n    {line}\n")
        assert "bcp_core.settings" in imports_of(module), line


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


#: docs/architecture.md: "dashboard/widgets.py holds only what two pages or more use"; what one
#: page needs beyond its file lives in dashboard/views/<page>.py.
WIDGETS = ROOT / "dashboard" / "widgets.py"
MIN_WIDGET_USERS = 2


def public_names(path: Path) -> set[str]:
    """The public top-level functions, classes and constants a module defines."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def names_used_from(path: Path, module: str) -> set[str]:
    """The names ``path`` takes from ``module``: ``from module import x`` and, after
    ``import module`` or ``from package import leaf``, the attributes read of it."""
    package, _, leaf = module.rpartition(".")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used: set[str] = set()
    aliases: set[str] = set()  # the local names the module itself is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == module:
            used.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package:
            aliases.update(alias.asname or alias.name for alias in node.names if alias.name == leaf)
        elif isinstance(node, ast.Import):
            aliases.update(
                alias.asname or alias.name for alias in node.names if alias.name == module
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            if base in aliases:
                used.add(node.attr)
    return used


def widget_users(widgets: Path, modules: list[Path]) -> dict[str, set[str]]:
    """Each public name of ``widgets`` and the modules among ``modules`` that use it."""
    users: dict[str, set[str]] = {name: set() for name in public_names(widgets)}
    for path in modules:
        if path == widgets:
            continue
        for name in names_used_from(path, "dashboard.widgets") & users.keys():
            users[name].add(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name)
    return users


UI_MODULES = [
    *sorted((ROOT / "pages").glob("*.py")),
    *sorted((ROOT / "dashboard").rglob("*.py")),
    ROOT / "streamlit_app.py",
]


@pytest.mark.parametrize("name", sorted(public_names(WIDGETS)))
def test_shared_widgets_are_shared(name):
    """A widget one page uses belongs in that page's view (dashboard/views/<page>.py)."""
    users = widget_users(WIDGETS, UI_MODULES)[name]
    assert len(users) >= MIN_WIDGET_USERS, (
        f"dashboard.widgets.{name} is used by {sorted(users) or 'no module'}: move it to the "
        "view of the page that uses it (dashboard/views/), or delete it"
    )


def test_the_widget_check_can_fail(tmp_path):
    """The checker itself: each way of using a widget is seen, and one user is too few."""
    widgets = tmp_path / "widgets.py"
    widgets.write_text(
        "import streamlit as st\nLIMIT = 3\n\ndef a():\n    pass\n\ndef _b():\n    pass\n"
    )
    assert public_names(widgets) == {"a", "LIMIT"}
    pages = []
    for i, line in enumerate(
        (
            "from dashboard.widgets import a",
            "from dashboard import widgets\nwidgets.a()",
            "import dashboard.widgets\ndashboard.widgets.LIMIT",
            "def f():\n    from dashboard.widgets import a as shown",
        )
    ):
        page = tmp_path / f"p{i}.py"
        page.write_text(line + "\n")
        pages.append(page)
    users = widget_users(widgets, pages)
    assert users == {"a": {"p0.py", "p1.py", "p3.py"}, "LIMIT": {"p2.py"}}
    assert [n for n, u in users.items() if len(u) < MIN_WIDGET_USERS] == ["LIMIT"]
