"""fedlib's modules import one another without a cycle.

The graph is read with ``ast`` from every ``fedlib/**/*.py``: each ``import`` and
``from ... import`` anywhere in a module, inside functions too (a lazy import is
still a dependency). ``from . import x`` means module ``x`` when there is such a
file, else the package; importing a module of a subpackage also imports the
subpackage (its ``__init__``), as Python does. Third-party modules are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fedlib"


def module_name(path: Path, root: Path) -> str:
    """fedlib/flower/engine.py -> fedlib.flower.engine; fedlib/flower/__init__.py -> fedlib.flower."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the modules of the package under ``root`` that it imports}."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module
                imported |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        targets = set()
        for target in imported:
            parts = target.split(".")
            # fedlib.flower.engine runs fedlib.flower's __init__ first, unless the importer is inside it
            targets |= {
                m
                for m in (".".join(parts[:i]) for i in range(1, len(parts)))
                if m in files and not f"{name}.".startswith(f"{m}.")
            }
            if target in files and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle of ``graph`` once, as its nodes from the smallest name on."""
    found = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append(path)
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def show(cycle: list[str]) -> str:
    return " -> ".join([*cycle, cycle[0]])


def test_fedlib_has_no_import_cycle():
    graph = import_graph()
    assert {"fedlib.run.results", "fedlib.experiment", "fedlib.flower", "fedlib.flower.engine"} <= set(graph)
    cycles = find_cycles(graph)
    assert not cycles, f"fedlib has {len(cycles)} import cycle(s):\n" + "\n".join(map(show, cycles))


def test_the_flower_apps_do_not_depend_on_operations():
    # fedlib.deploy starts processes and patches Flower; the apps (fedlib.flower) must not need it.
    graph = import_graph()
    leaks = {m: sorted(t for t in graph[m] if t.startswith("fedlib.deploy")) for m in graph}
    assert not {m: t for m, t in leaks.items() if t and m.startswith("fedlib.flower")}


# ---------------------------------------------------------------- the checker checks itself


def test_find_cycles_finds_each_cycle_once_and_passes_an_acyclic_graph():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a", "d"}}
    assert sorted(map(show, find_cycles(graph))) == ["a -> b -> a", "a -> b -> c -> a", "d -> d"]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}) == []


def test_import_graph_resolves_relative_lazy_and_subpackage_imports(tmp_path):
    files = {
        "__init__.py": "",
        "a.py": "import os\nimport pkg.c\nfrom . import b, helper\n",
        "b.py": "def f():\n    from .sub.leaf import g  # lazy\n    return g\n",
        "c.py": "import numpy\n",
        "sub/__init__.py": "from .leaf import g\n",
        "sub/leaf.py": "from .. import a\nfrom ..c import h\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    graph = import_graph(tmp_path / "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg", "pkg.b", "pkg.c"},  # helper is no module: a name in the package
        "pkg.b": {"pkg.sub", "pkg.sub.leaf"},  # pkg.sub.leaf runs pkg.sub's __init__ first
        "pkg.c": set(),
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": {"pkg.a", "pkg.c"},
    }
    assert sorted(map(show, find_cycles(graph))) == [
        "pkg.a -> pkg.b -> pkg.sub -> pkg.sub.leaf -> pkg.a",
        "pkg.a -> pkg.b -> pkg.sub.leaf -> pkg.a",
    ]
