"""The package's layout, checked by reading the source (no module is imported): the rule of
docs/ARCHITECTURE.md.

Every ``import`` and ``from ... import`` node of every module of ``boneage_core`` counts, at module level
or inside a function (relative imports resolved). The tests check that these edges form no cycle, that
they only go from a stage down to a lower one (:data:`LAYERS`), that every module stays short and has a
docstring, that the subpackages' ``__init__.py`` hold a docstring and nothing else, that every
``boneage_core`` import anywhere in the repository names a module and names that exist, that the app's
pages import no torch or SAM, and that docs/ARCHITECTURE.md names every module.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "boneage_core"

#: The stages, lowest first. A module may import its own stage and any stage of a lower layer, never one
#: of the same layer or above. ``boneage_core`` itself is the package's ``__init__`` (``__version__``).
LAYERS: list[tuple[str, ...]] = [
    ("boneage_core", "boneage_core.errors", "boneage_core.settings"),
    ("boneage_core.secret",),
    ("boneage_core.films", "boneage_core.clinical"),
    ("boneage_core.segment",),
    ("boneage_core.model",),
    ("boneage_core.evaluate",),
    ("boneage_core.review",),
    ("boneage_core.training",),
    ("boneage_core.hospital",),
    ("boneage_core.cli",),
]
#: Longest module allowed, in lines.
MAX_LINES = 450
#: Imports the app's pages must not make (the models are behind ``boneage_core``).
PAGE_FORBIDDEN = ("torch", "torchvision", "segment_anything", "mobile_sam", "timm", "pytorch_grad_cam")
#: The stages the app (``app/``, ``pages/``) may use: those below training and the command line.
APP_ALLOWED_UP_TO = "boneage_core.review"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """``dotted name -> file`` for every module of the package (packages by their ``__init__``)."""
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_package(name: str) -> bool:
    return name in modules() and modules()[name].name == "__init__.py"


def _imports(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for every import node of ``path``, anywhere in it.

    Relative imports are resolved against ``name`` (the importing module's dotted name).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def edges(path: Path, name: str) -> list[tuple[str, int]]:
    """The ``boneage_core`` modules that ``path`` imports: ``from pkg import sub`` counts as ``pkg.sub``."""
    out = []
    for target, names, line in _imports(path, name):
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules()]
        out += [(s, line) for s in subs] or [(target, line)]
    return out


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in edges(p, m) if t != m} for m, p in modules().items()}


def stage(name: str) -> str:
    """The stage of a module: ``boneage_core.films.read`` -> ``boneage_core.films``."""
    return ".".join(name.split(".")[:2])


def layer(name: str) -> int:
    s = stage(name)
    for i, members in enumerate(LAYERS):
        if s in members:
            return i
    raise AssertionError(f"{s} is in no layer of LAYERS: add it, and to docs/ARCHITECTURE.md")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_scan_sees_function_level_imports_and_resolves_relative_ones() -> None:
    g = graph()
    # segment/batch.py imports SAM's loader inside Segmenters.__post_init__ only.
    assert "boneage_core.segment.sam_model" in g["boneage_core.segment.batch"]
    assert "boneage_core" in g["boneage_core.segment.batch"]  # from .. import __version__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_only_go_down_the_stages() -> None:
    bad = []
    for name, path in modules().items():
        for target, line in edges(path, name):
            if stage(target) == stage(name):
                continue
            if layer(target) >= layer(name):
                bad.append(
                    f"{path.relative_to(ROOT)}:{line}: {stage(name)} (layer {layer(name)}) imports "
                    f"{target} (layer {layer(target)})"
                )
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_every_stage_is_in_a_layer() -> None:
    stages = {stage(m) for m in modules()}
    listed = {s for members in LAYERS for s in members}
    assert stages == listed


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_are_short_and_say_what_they_hold(name: str) -> None:
    path = modules()[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"
    assert ast.get_docstring(tree(path)), f"{path.relative_to(ROOT)} has no module docstring"


@pytest.mark.parametrize("name", sorted(n for n in modules() if _is_package(n) and n != PACKAGE))
def test_subpackages_hold_a_docstring_and_nothing_else(name: str) -> None:
    body = tree(modules()[name]).body
    doc = ast.get_docstring(tree(modules()[name])) or ""
    assert "May import" in doc, f"{name}/__init__.py must say what the stage may import"
    assert len(body) == 1, f"{name}/__init__.py re-exports or runs code: import from the modules instead"


def test_the_package_init_stays_light() -> None:
    body = tree(modules()[PACKAGE]).body
    assert not [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)]


def _repo_python_files() -> list[Path]:
    files = []
    for folder in ("boneage_core", "app", "pages", "tests", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


@cache
def _top_level_names(name: str) -> set[str]:
    out = set()
    for node in tree(modules()[name]).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def test_every_boneage_core_import_in_the_repository_exists() -> None:
    """Lazy imports run only on some paths: a stale one would fail there, not at import time."""
    bad = []
    for path in _repo_python_files():
        name = _module_name(path) if path.is_relative_to(ROOT / PACKAGE) else path.stem
        for target, names, line in _imports(path, name):
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if target not in modules():
                bad.append(f"{where}: no module {target}")
                continue
            for n in names:
                if f"{target}.{n}" not in modules() and n not in _top_level_names(target):
                    bad.append(f"{where}: {target} has no {n}")
    assert not bad, "\n".join(bad)


def test_the_app_imports_no_model_code_and_only_stages_up_to_review() -> None:
    bad = []
    for path in sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "app").glob("*.py")):
        for target, _, line in _imports(path, path.stem):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if path.parent.name == "pages" and top in PAGE_FORBIDDEN:
                bad.append(f"{where}: a page imports {target} (put that logic in boneage_core)")
            if top == PACKAGE and target != PACKAGE and layer(target) > layer(APP_ALLOWED_UP_TO):
                bad.append(f"{where}: the app imports {target}")
    assert not bad, "\n".join(bad)


def test_architecture_doc_names_every_module_and_no_other() -> None:
    """Each stage's row of the table in docs/ARCHITECTURE.md (``| `films/` | `read.py` (...) · ...``) names
    exactly its modules; the modules directly in the package are named somewhere in the page."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_/]+)/` \|(.*)$", doc, re.M)}
    problems = []
    for folder in sorted({p.parent for p in modules().values()}):
        files = {p.name for p in folder.glob("*.py")} - {"__init__.py"}
        if folder.name == PACKAGE:
            problems += [f"{f} is not named" for f in sorted(files) if f"`{f}`" not in doc]
            continue
        key = folder.relative_to(ROOT / PACKAGE).as_posix()  # a nested subpackage: `hospital/pacs/`
        named = set(re.findall(r"`([a-z_]+\.py)`", rows.get(key, "")))
        problems += [f"{key}/{f} is not in the {key}/ row" for f in sorted(files - named)]
        problems += [f"{key}/{f} is named but does not exist" for f in sorted(named - files)]
    problems += [f"no stage {r}/" for r in rows if not (ROOT / PACKAGE / r / "__init__.py").is_file()]
    assert not problems, "docs/ARCHITECTURE.md is out of date: " + "; ".join(problems)
    for members in LAYERS:
        for s in members:
            assert s.removeprefix(PACKAGE + ".") in doc
