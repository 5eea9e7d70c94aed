"""The shape of the package (issue 26): rooms that import only downward, no module
reaching into another's private names, and functions small enough to read.

The order below is the one ``docs/how-it-works.md`` draws; a module may import only
modules listed before it (TYPE_CHECKING and function-local imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import requests_tanium_session

ROOT = Path(requests_tanium_session.__file__).parent

#: Bottom to top.
LAYERS = [
    "exceptions",
    "protocol",
    "_closing",
    "_worker",
    "_origin",
    "_effects",
    "stats",
    "state",
    "_answer",
    "stores",
    "_flight",
    "_policy",
    "_drive",
    "http_client",
    "versions",
    "_face",
    "session_id",
    "auth",
    "httpx",
    "aiohttp",
    "__init__",
    "testing",
    "cli",
    "__main__",
]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _imported(path: Path, tree: ast.AST) -> set[str]:
    """The package's own modules that ``path`` imports (relative or absolute)."""
    found: set[str] = set()
    inside_testing = path.parent.name == "testing"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0:
                if not base.startswith("requests_tanium_session"):
                    continue
                parts = base.split(".")[1:]
            elif node.level == 2 or (node.level == 1 and not inside_testing):
                parts = base.split(".") if base else []
            else:  # a sibling inside testing/
                continue
            if parts and parts[0]:
                found.add(parts[0])
            else:  # from . import x
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_has_a_place_in_the_layers() -> None:
    assert {_module(p) for p in _sources()} <= set(LAYERS)


def test_modules_import_only_downward() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward: list[str] = []
    for path in _sources():
        me = _module(path)
        for other in _imported(path, ast.parse(path.read_text())):
            if other != me and rank.get(other, -1) >= rank[me]:
                upward.append(f"{path.relative_to(ROOT)} imports {other}")
    assert upward == []


def _private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: module-level, in its classes, and on ``self``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_uses_another_modules_private_names() -> None:
    trees = {p: ast.parse(p.read_text()) for p in _sources()}
    defined = {p: _private_names(t) for p, t in trees.items()}
    found: list[str] = []
    for path, tree in trees.items():
        theirs = set().union(*(names for p, names in defined.items() if p != path)) - defined[path]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                found += [
                    f"{path.name}: imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                    and not a.name.startswith("__")
                    and not (ROOT / f"{a.name}.py").exists()
                ]
            if isinstance(node, ast.Attribute) and node.attr in theirs:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert found == []


def _complexity(function: ast.AST) -> int:
    """McCabe's number: one, plus one per branch, loop, handler and boolean operand."""
    score = 1
    for node in ast.walk(function):
        if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While)):
            score += 1
        elif isinstance(node, (ast.ExceptHandler, ast.With, ast.AsyncWith, ast.Assert)):
            score += isinstance(node, ast.ExceptHandler)
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            score += 1 + len(node.ifs)
        elif isinstance(node, ast.match_case) if hasattr(ast, "match_case") else False:
            score += 1
    return score


def _functions() -> list[tuple[str, ast.AST]]:
    found = []
    for path in _sources():
        if path.name == "cli.py" or path.parent.name == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{path.name}:{node.name}", node))
    return found


@pytest.mark.parametrize("limit", [60])
def test_no_function_is_longer_than_sixty_lines(limit: int) -> None:
    long = {
        name: node.end_lineno - node.lineno + 1  # type: ignore[attr-defined]
        for name, node in _functions()
        if node.end_lineno - node.lineno + 1 > limit  # type: ignore[attr-defined]
    }
    assert long == {}


def test_no_function_is_more_complex_than_fifteen() -> None:
    complex_ = {name: _complexity(node) for name, node in _functions() if _complexity(node) > 15}
    assert complex_ == {}
