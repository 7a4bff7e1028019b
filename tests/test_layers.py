"""The package is layered: its import graph has no cycle, and only the reduction loops over the
blocks of a sample stream."""

import ast
import re
from pathlib import Path

import giantstep

PACKAGE = Path(giantstep.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The giantstep modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    edges = {name: imports(path, modules) - {name} for name, path in paths.items()}
    # A package's __init__ is imported with each of its modules: an edge to the package is an
    # edge to what its __init__ imports, and a module does not depend on its own package.
    for name in edges:
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    return edges


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [node, target]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_the_leaves_import_nothing_of_giantstep():
    edges = graph()
    # The streams draw their normals with giantstep.normals, which reads numpy's tables, into
    # arrays each thread reuses (giantstep.scratch).
    assert edges["giantstep.data"] == {"giantstep.normals", "giantstep.scratch"}
    assert edges["giantstep.normals"] == {"giantstep._ziggurat"}
    for leaf in (
        "giantstep._ziggurat",
        "giantstep.hermite",
        "giantstep.polynomial",
        "giantstep.linalg",
        "giantstep.errors",
        "giantstep.files",
        "giantstep.scratch",
    ):
        assert edges[leaf] == set(), (leaf, edges[leaf])


def test_only_the_reduction_loops_over_the_blocks_of_a_stream():
    loops = [
        f"{p.relative_to(PACKAGE)}:{i}"
        for p in PACKAGE.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bfor\b.*\bin\b.*\.blocks\(", line)
    ]
    assert loops and all(loop.startswith("reduction.py:") for loop in loops), loops
