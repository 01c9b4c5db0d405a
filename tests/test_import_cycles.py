"""No import circle among glsr's modules: following the imports of any module (module level or inside a function,
as :mod:`test_layers` reads them) never leads back to it. Packages that re-export their submodules lazily (PEP 562
``__getattr__``) are edges too, so a submodule importing its own package's name counts."""
from __future__ import annotations

from typing import Dict, List, Set

from test_layers import imports_of, modules


def import_graph() -> Dict[str, Set[str]]:
    return {m: {t for _, t in imports_of(m) if t != m and t.startswith("glsr")} for m in modules()}


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    found = circles(import_graph())
    assert not found, f"import circles: {found}"
