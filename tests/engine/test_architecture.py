"""The architecture, enforced: no Streamlit in the engine, lower groups never import higher ones, no import cycles,
and pages stay short scripts. Imports are read from the source (every ``import``, also inside functions), so a cycle
hidden by a function-level import is still found; imports under ``if TYPE_CHECKING:`` are hints, not dependencies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "explorer"

# Lower ranks never import higher ones; groups of one rank do not import each other.
RANKS = {"i18n": 0, "errors": 1, "escape": 1, "capture": 2, "analysis": 3, "decoding": 3, "from_scratch": 4, "figures": 5, "ui": 6}
MAX_PAGE_LINES = 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Absolute names of everything ``path`` imports at run time (modules of this package resolved to modules)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "explorer" else None


GRAPH = {name: {m for m in _imports(path, _modules()) if m in _modules()} for name, path in _modules().items()}


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _group(m) != "ui"))
def test_engine_never_imports_streamlit(module):
    imported = _imports(_modules()[module], _modules())
    assert not any(m == "streamlit" or m.startswith("streamlit.") for m in imported), module


def test_every_engine_module_belongs_to_a_known_group():
    unknown = {m for m in _modules() if m != "explorer" and _group(m) not in RANKS}
    assert not unknown, f"modules outside the architecture's groups: {sorted(unknown)}"


def test_lower_groups_never_import_higher_ones():
    bad = []
    for module, targets in GRAPH.items():
        group = _group(module)
        if group is None:  # the package's own __init__ is the public facade over everything
            continue
        for target in targets:
            other = _group(target)
            if other is None or other == group:
                continue
            if RANKS[other] >= RANKS[group]:
                bad.append(f"{module} → {target}")
    assert not bad, "imports against the layering: " + ", ".join(sorted(bad))


def test_no_import_cycles():
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == "explorer":
                continue
            if state.get(nxt) == 1:
                cycles.append(" → ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} → {nxt}")
            elif nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_checks_see_real_imports():
    # Guards the checker itself: it must resolve relative imports to modules, or every check above passes vacuously.
    assert "explorer.capture.recorder" in GRAPH["explorer.capture.trace"]
    assert "explorer.capture.trace" in GRAPH["explorer.capture.model"]
    assert any(_group(t) == "capture" for t in GRAPH["explorer.analysis.stats"])


@pytest.mark.parametrize("page", sorted((ROOT / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_are_short_scripts(page):
    lines = len(page.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_PAGE_LINES, f"{page.name} has {lines} lines; move sections into explorer/ui/"


PAGE_NAMES = {p.stem for p in (ROOT / "pages").glob("*.py")}


def _page_of(module: str) -> str | None:
    """The page an ``explorer.ui`` module serves (``explorer.ui.heads``, ``explorer.ui.explain.…``), or None for the
    glue every page shares (state, resources, widgets, maps, …)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["explorer", "ui"] and parts[2] in PAGE_NAMES else None


def test_page_modules_never_import_each_other():
    """What two pages share lives in a shared module (explorer/ui/maps.py, …), never in one page's module."""
    bad = [f"{module} → {target}" for module, targets in GRAPH.items() if _group(module) == "ui"
           for target in targets if _page_of(target) is not None and _page_of(target) != _page_of(module)]
    assert not bad, "page modules imported from elsewhere: " + ", ".join(sorted(bad))
    assert _page_of("explorer.ui.heads") == "heads" and _page_of("explorer.ui.maps") is None  # the checker sees pages


def test_one_cache_helper():
    """Every st.cache_data goes through explorer/ui/caching.py, which keys traces and models by their fingerprints."""
    def uses(path: Path) -> bool:
        return any(isinstance(node, ast.Attribute) and node.attr == "cache_data"
                   for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))

    users = sorted(str(p.relative_to(ROOT)) for p in [*PACKAGE.rglob("*.py"), *(ROOT / "pages").glob("*.py")] if uses(p))
    assert users == ["explorer/ui/caching.py"], users
