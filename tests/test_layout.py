"""The code's layout holds: no import cycle among tenure's modules, no module too
large to read, and the shipped example needs nothing private (no database)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src"
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "tenure").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every tenure module ``name`` imports, at the top, lazily or for type checking."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    yield full
                elif base in known:
                    yield base


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_tenures_modules() -> None:
    known = modules()
    graph = {name: set(imports(name, path, known)) - {name} for name, path in known.items()}
    # The root package re-exports the public API; a module importing it by name
    # (``from tenure import X``) is an edge to it like any other.
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in (SRC / "tenure").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_shipped_example_uses_only_the_public_api() -> None:
    private = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in (ROOT / "examples").rglob("*.py")
        for line in path.read_text().splitlines()
        if "import" in line and ("tenure._" in line or "from tenure._" in line)
    ]
    assert private == []


def test_no_untyped_row_leaves_the_store() -> None:
    import typing

    from tenure._store import Store
    from tenure._store.worker import AsyncStore

    untyped = []
    for cls in (Store, AsyncStore):
        for name, fn in vars(cls).items():
            if name.startswith("_") or not callable(fn):
                continue
            returned = typing.get_type_hints(fn).get("return")
            if returned is typing.Any or "tuple[typing.Any, ...]" in str(returned):
                untyped.append(f"{cls.__name__}.{name} -> {returned}")
    assert untyped == []


def test_the_unit_tier_runs_alone_with_no_database_to_reach(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # No server answers on port 1, and the embedded server cannot start under a file.
    (tmp_path / "file").write_text("")
    nowhere = "postgresql://postgres@127.0.0.1:1/test"
    env = {
        **os.environ,
        "TENURE_TEST_DATABASE_URL": nowhere,
        "TENURE_DATABASE_URL": nowhere,
        "TENURE_EMBEDDED_DIR": str(tmp_path / "file" / "pg"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "unit", "-p", "no:cacheprovider",
         "-k", "not unit_tier_runs_alone", "tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "error" not in done.stdout.splitlines()[-1]


def test_every_test_is_in_exactly_one_tier() -> None:
    import subprocess
    import sys

    from tests.conftest import TIERS

    def collected(*args: str) -> int:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
             *args, "tests"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        ).stdout.splitlines()[-1]  # fmt: skip
        return int(out.split("/")[0].split()[0]) if "/" in out else int(out.split()[0])

    assert sum(collected("-m", tier) for tier in TIERS) == collected()
