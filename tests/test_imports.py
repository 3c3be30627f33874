"""Data flows one way, dsl -> compiler -> runtime -> archc, and no module imports itself
back through others: read from the sources with `ast` (function-level imports count)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"dsl": 0, "compiler": 1, "runtime": 2, "archc": 3}

# imports against the flow still to be removed: the list only shrinks, a new one fails
KNOWN_BACKWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_file(parts: list[str]) -> str | None:
    for cand in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return str(cand.relative_to(ROOT))
    return None


def imports() -> nx.DiGraph:
    g = nx.DiGraph()
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            src = str(path.relative_to(ROOT))
            pkg = list(path.relative_to(ROOT).parent.parts)
            g.add_node(src)
            for node in ast.walk(ast.parse(path.read_text(), src)):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
                    if pkg and pkg[0] != "archc" and node.level > len(pkg):
                        base = []         # ...x from a stage folder: archc.x, a sibling stage
                    mod = base + (node.module.split(".") if node.module else [])
                    targets = [mod + [a.name] for a in node.names] + [mod]
                    for t in targets:
                        f = _module_file(t[1:] if t[:1] == ["archc"] and t[1:2] and
                                         t[1] in STAGES and t[1] != "archc" else t)
                        if f is not None and f != src:
                            g.add_edge(src, f)
                            break
    return g


def test_stages_import_only_earlier_stages():
    backward = {(a, b) for a, b in imports().edges
                if STAGES[a.split("/")[0]] < STAGES[b.split("/")[0]]
                or (a.startswith("runtime/") and b.startswith("compiler/"))}
    assert backward - KNOWN_BACKWARD == set(), "a stage imports a later one"
    assert KNOWN_BACKWARD - backward == set(), "fixed: remove it from KNOWN_BACKWARD"


def test_no_import_cycles():
    g = imports()
    # a package's __init__ collecting its family files is not a cycle of knowledge
    g.remove_edges_from([(a, b) for a, b in g.edges if b.endswith("__init__.py")
                         and a.startswith(b.rsplit("/", 1)[0] + "/")])
    cycles = {frozenset(c) for c in nx.simple_cycles(g) if len(c) > 1}
    assert cycles - KNOWN_CYCLES == set(), "a new import cycle"
    assert KNOWN_CYCLES - cycles == set(), "fixed: remove it from KNOWN_CYCLES"
