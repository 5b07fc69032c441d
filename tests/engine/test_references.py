"""Every module, object and file the code and docs name exists: ``:mod:`` / ``:func:`` / ``:class:`` / ``:meth:`` /
``:data:`` / ``:attr:`` references in the engine's and app's docstrings and comments, dotted ``explorer.…`` names
and repository paths (``explorer/capture/trace.py``) in the README, the docs and the strings the app shows (a From
scratch caption once told users about ``explorer/scratch.py``, a module gone since the regroup).

References are resolved by importing, not by a list kept beside them: a module moved or renamed fails here until
every text that names it follows.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "explorer").rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"])
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

ROLE = re.compile(r":(mod|func|class|meth|data|attr):`~?([\w.]+)`")
# A repository path: a top-level folder of this repository, then path characters, ending in a name character.
PATH = re.compile(r"(?<![\w./~-])((?:explorer|pages|tests|benchmarks|notebooks|docs)/[\w./*-]*[\w*])")  # globs too
DOTTED = re.compile(r"`(explorer(?:\.\w+)+)(?:\([^`]*\))?`")  # `explorer.capture.trace`, `explorer.load(...)`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve_dotted(name: str) -> bool:
    """Does ``explorer.a.b.c`` name a module, or an attribute reached from the longest module prefix?"""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr) and not _declared(obj, attr):
                return False
            obj = getattr(obj, attr, None)
        return True
    return False


def _declared(cls: object, name: str) -> bool:
    """A dataclass field or annotated attribute without a class-level value (``Trace.tokens``), or one its methods
    set (``self.context_length = …``), counts as there."""
    if not inspect.isclass(cls):
        return False
    if any(name in getattr(k, "__annotations__", {}) for k in cls.__mro__):
        return True
    try:
        return re.search(rf"\bself\.{name}\s*[:=]", inspect.getsource(cls)) is not None
    except (OSError, TypeError):
        return False


def _resolve(role: str, target: str, module_name: str | None) -> bool:
    if target.startswith("explorer.") or target == "explorer":
        return _resolve_dotted(target)
    if module_name is None or module_name.startswith("pages") or module_name == "app":
        return False  # pages and app.py are scripts: name what they call in full
    module = importlib.import_module(module_name)
    head, *rest = target.split(".")
    if hasattr(module, head):  # a name of the module itself (`Stepper.back`, `head_stats`)
        return _resolve_dotted(f"{module_name}.{target}")
    if role in ("meth", "attr") and not rest:  # `add`, `result`: a method of a class defined in the module
        classes = [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module_name]
        return any(hasattr(c, head) or _declared(c, head) for c in classes)
    return False


def _references() -> list[tuple[str, str, str]]:
    """(where, kind, reference) for every reference in the sources and docs."""
    found = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        found += [(where, f"{role}", target) for role, target in ROLE.findall(text)]
        found += [(where, "path", p) for p in PATH.findall(text)]
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        found += [(where, f"{role}", target) for role, target in ROLE.findall(text)]
        found += [(where, "path", p) for p in PATH.findall(text)]
        found += [(where, "dotted", name) for name in DOTTED.findall(text)]
    return found


REFERENCES = _references()


def test_the_scan_finds_references():
    kinds = {kind for _, kind, _ in REFERENCES}
    assert {"mod", "func", "class", "path", "dotted"} <= kinds  # the patterns still match how the texts are written
    assert len(REFERENCES) > 200


@pytest.mark.parametrize("where", sorted({where for where, _, _ in REFERENCES}))
def test_every_reference_resolves(where):
    module_name = _module_name(ROOT / where) if where.endswith(".py") else None
    broken = []
    for _, kind, target in (r for r in REFERENCES if r[0] == where):
        if kind == "path":
            ok = any(ROOT.glob(target)) if "*" in target else (ROOT / target).exists()
        elif kind == "dotted":
            ok = _resolve_dotted(target)
        else:
            ok = _resolve(kind, target, module_name)
        if not ok:
            broken.append(f"{kind} {target}")
    assert not broken, f"{where} names what does not exist: {sorted(set(broken))}"


def test_a_stale_reference_is_caught(tmp_path):
    """The resolver itself: the names from before the regroup fail, their current homes pass."""
    assert not _resolve("mod", "explorer.recorder", None) and _resolve("mod", "explorer.capture.recorder", None)
    assert not _resolve("func", "explorer.intervention.patch_heads", None)
    assert _resolve("func", "explorer.capture.intervention.patch_heads", None)
    assert _resolve("meth", "Trace.attention", "explorer.capture.trace")
    assert not _resolve("meth", "Trace.attentionz", "explorer.capture.trace")
    assert PATH.findall("see `explorer/scratch.py` and explorer/capture/masks.py.") == [
        "explorer/scratch.py", "explorer/capture/masks.py"]
    assert not (ROOT / "explorer/scratch.py").exists()
