"""The project's import graph has no cycle, counting imports inside functions too (issue 19).

Every module of the project's packages is parsed with `ast` (nothing is imported), each import is
resolved to the project module it names (relative imports included; `from pkg import name` is
`pkg.name` when that is a module, else `pkg`), and any strongly connected component of more than
one module fails the test with its members.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("s3core", "orchestrator", "search_spaces", "bench")


def project_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return modules[name].name == "__init__.py"


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its source (module level or in a function)."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    package = name if _is_package(modules, name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from pkg import module` names the module; `from pkg import attribute` the package
            targets = [f"{root}.{alias.name}" if f"{root}.{alias.name}" in modules else root for alias in node.names]
        for target in targets:
            # the longest project module the dotted name starts with (a package's attribute -> the package)
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, modules) for name in modules}


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checker itself: a cycle through a function-level relative import is found."""
    modules = {"pkg": tmp_path / "__init__.py", "pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    modules["pkg"].write_text("")
    modules["pkg.a"].write_text("from pkg.b import thing\n")
    modules["pkg.b"].write_text("def f():\n    from .a import other\n")
    graph = {name: imports_of(name, modules) for name in modules}
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    modules["pkg.b"].write_text("import numpy\n")
    assert cycles({name: imports_of(name, modules) for name in modules}) == []


def lazy_imports_without_a_reason(modules: dict[str, Path]) -> list[str]:
    """Imports inside functions with no comment saying why: on the statement, or on a comment line
    above it within its run of imports and blank lines."""
    bad = []
    for name, path in modules.items():
        text = path.read_text().split("\n")
        for fn in ast.walk(ast.parse("\n".join(text))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                explained, above = "#" in text[node.end_lineno - 1], node.lineno - 2
                while not explained and above >= 0:
                    line = text[above].strip()
                    if line.startswith("#") or (line.startswith(("import ", "from ")) and "#" in line):
                        explained = True
                    elif line and not line.startswith(("import ", "from ")):
                        break
                    above -= 1
                if not explained:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {text[node.lineno - 1].strip()}")
    return bad


def test_every_import_inside_a_function_says_why():
    """Imports inside functions only where they keep a heavy or optional dependency out of a
    module's import (torch out of the report, Ray out of planning, a measured child process's
    imports), each with a comment saying so."""
    bad = lazy_imports_without_a_reason(project_modules())
    assert not bad, "imports inside functions without a reason:\n" + "\n".join(bad)


def test_the_project_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "orchestrator.report" in graph and "s3core.pipeline" in graph
    found = cycles(graph)
    assert not found, "import cycles (functions included): " + "; ".join(" <-> ".join(c) for c in found)
