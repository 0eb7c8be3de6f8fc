"""The import graph, read with `ast` from the sources: no cycle between files, the core never reaches up
into the flows or tasks, and Prefect stays in the layers that orchestrate.

Every import counts, also those inside functions: a lazy import is still a dependency between files.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the package each installs as (pyproject.toml's package-dir).
FOLDERS = {
    "posteval": "posteval",
    "flows": "posteval.flows",
    "tasks": "posteval.tasks",
    "evaluators": "posteval.evaluators",
}
# Besides flows, tasks and the CLI: the modules that emit events or hook into the Trainer.
PREFECT_ALLOWED = (
    "posteval.flows",
    "posteval.tasks",
    "posteval.cli",
    "posteval.automation",
    "posteval.integration",
)
UPWARD = ("posteval.flows", "posteval.tasks")


def _modules() -> dict[str, Path]:
    """Every module of the distribution by its installed name; migration versions are Alembic's, not ours."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).with_suffix("")
            if "versions" in relative.parts or relative.parts[:2] == ("db", "migrations"):
                continue
            parts = [p for p in relative.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """The absolute names ``path`` (module ``name``) imports, including each ``from X import Y`` as X.Y."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _edges(name: str) -> set[str]:
    """The modules of ours that module ``name`` depends on (a name imported from a package is the package)."""
    return {imported for imported in _imported(name, MODULES[name]) if imported in MODULES} - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_every_layer() -> None:
    """The graph is read from the right files (a typo in FOLDERS would make the other tests vacuous)."""
    assert "posteval.flows.post_training" in MODULES
    assert "posteval.tasks.model" in _edges("posteval.flows.post_training")
    assert "posteval.evaluators.base" in MODULES


def test_no_import_cycle_between_files() -> None:
    assert _cycles({name: _edges(name) for name in MODULES}) == []


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []


def test_nothing_in_the_core_imports_the_flows_or_tasks() -> None:
    offenders = sorted(
        f"{name} -> {target}"
        for name in MODULES
        if not _under(name, ("posteval.cli", *UPWARD))
        for target in _edges(name)
        if _under(target, UPWARD)
    )
    assert offenders == []


def test_prefect_is_imported_only_where_the_layers_orchestrate() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if not _under(name, PREFECT_ALLOWED)
        for target in _imported(name, path)
        if target == "prefect" or target.startswith("prefect.") or target.startswith("prefect_dask")
    )
    assert offenders == []


def test_no_module_is_over_400_lines() -> None:
    """A module does one thing; migration versions (Alembic's) and tests are not counted."""
    sources = [path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py")]
    sources += [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    long = sorted(
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sources
        if "versions" not in path.parts and (n := len(path.read_text().splitlines())) > 400
    )
    assert long == []


def _sqlalchemy_select_imports(path: Path) -> Iterator[str]:
    """How ``path`` gets hold of SQLAlchemy's ``select``: ``from sqlalchemy[.x] import select``, or a bare
    ``import sqlalchemy`` (whose ``sqlalchemy.select`` the walk cannot tell from other names)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (f"import {a.name}" for a in node.names if a.name == "sqlalchemy")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            yield from (f"from {node.module} import select" for a in node.names if a.name == "select")


def test_only_posteval_db_builds_select_queries() -> None:
    """Reads of the database are posteval.db's (posteval/db/queries.py, posteval/db/reads.py): SELECTs built
    elsewhere are how the same read came to live in compare, baseline, nightly, report and report_data at
    once, free to drift apart. So no module outside posteval.db imports ``select`` from SQLAlchemy, nor the
    bare ``sqlalchemy`` package. Other SQLAlchemy names stay allowed: baselines still write (``delete``) and
    type their session (``sqlalchemy.orm.Session``), and the settings parse URLs (``sqlalchemy.engine``)."""
    offenders = sorted(
        f"{name}: {found}"
        for name, path in MODULES.items()
        if not _under(name, ("posteval.db",))
        for found in _sqlalchemy_select_imports(path)
    )
    assert offenders == []
