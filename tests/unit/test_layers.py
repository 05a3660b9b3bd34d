"""The package's layering, read from the source: no import cycles, and each layer imports only
what it may (the connected side never the secure side's code, emulators never a client, nothing
below the CLI a terminal library)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "airgap"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module → the airgap modules it imports (at any level, type-checking blocks included)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _is_package_init(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def test_no_import_cycles_between_modules() -> None:
    graph = _imports()
    # A package's __init__ re-exporting its own modules is not a cycle of the design.
    pruned = {
        name: {m for m in deps if not (_is_package_init(m) and name.startswith(m + "."))}
        for name, deps in graph.items()
    }
    cycles = [sorted(group) for group in _strongly_connected(pruned) if len(group) > 1]
    assert cycles == []


def test_each_layer_imports_only_what_it_may() -> None:
    rules = {
        "airgap.outside": ("airgap.inside", "airgap.cli", "airgap.emulators"),
        "airgap.inside": ("airgap.outside", "airgap.cli", "airgap.emulators"),
        "airgap.emulators": ("airgap.outside", "airgap.inside", "airgap.cli"),
        "airgap.model": ("airgap.outside", "airgap.inside", "airgap.cli", "airgap.emulators"),
        "airgap.formats": ("airgap.outside", "airgap.inside", "airgap.cli", "airgap.emulators"),
        "airgap.bundle": ("airgap.outside", "airgap.inside", "airgap.cli", "airgap.emulators"),
        "airgap.devices": ("airgap.outside", "airgap.inside", "airgap.cli", "airgap.emulators"),
    }
    broken = [
        f"{name} imports {dep}"
        for name, deps in _imports().items()
        for layer, forbidden in rules.items()
        if name == layer or name.startswith(layer + ".")
        for dep in deps
        if any(dep == f or dep.startswith(f + ".") for f in forbidden)
    ]
    assert broken == []


def test_nothing_below_the_cli_imports_typer_or_rich() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich")
            ]
    assert offenders == []


def test_the_cycle_finder_finds_what_it_should() -> None:
    groups = _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()})
    assert sorted(sorted(g) for g in groups if len(g) > 1) == [["a", "b", "c"]]
