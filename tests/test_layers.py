"""Dependencies point down: every import in the package (module level or inside a function, absolute or relative,
or an ``importlib.import_module`` of a name the source spells out) goes to a lower layer or stays inside its own
unit. The layers, bottom first:

0. conventions and data: schemes, geometry, box conventions, shapes, artifact metadata and formats, image
   normalization, paths, atomic writes, file checksums, procedural faces, the shipped models' files (the top-level
   ``glsr/*.py`` modules below);
1. ``glsr.models``; 2. ``glsr.runtime``; 3. ``glsr.train`` and ``glsr.export`` (peers: neither imports the
   other); 4. ``glsr.bench``; 5. the command line: ``glsr.cli``, ``glsr.pipeline`` and each subpackage's ``cli``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import glsr

PACKAGE = Path(glsr.__file__).resolve().parent
BOTTOM = {"glsr", "glsr.artifacts", "glsr.atomic", "glsr.boxes", "glsr.digest", "glsr.formats", "glsr.geometry",
          "glsr.imaging", "glsr.metadata", "glsr.paths", "glsr.pose", "glsr.procedural", "glsr.schemes", "glsr.shapes",
          "glsr.shipped"}
SUBPACKAGE_RANK = {"glsr.models": 1, "glsr.runtime": 2, "glsr.train": 3, "glsr.export": 3, "glsr.bench": 4}
TOP = 5
OUTSIDE = {"benchmarks": TOP + 1}
"""Top-level packages of the checkout that are not installed with glsr (results and one-off studies): the library
never imports them."""


def unit_and_rank(module: str) -> Tuple[str, int]:
    """``(unit, layer)`` of a ``glsr`` module: its subpackage (or itself, for top-level modules) and rank."""
    parts = module.split(".")
    if parts[0] in OUTSIDE:
        return parts[0], OUTSIDE[parts[0]]
    if len(parts) >= 3 and parts[2] == "cli" or module in ("glsr.cli", "glsr.pipeline", "glsr.__main__"):
        return module, TOP
    unit = ".".join(parts[:2])
    if unit in SUBPACKAGE_RANK:
        return unit, SUBPACKAGE_RANK[unit]
    if module in BOTTOM:
        return module, 0
    raise AssertionError(f"{module} has no layer: add it to the layers of tests/test_layers.py")


def modules() -> List[str]:
    out = []
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = ("glsr",) + f.relative_to(PACKAGE).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def source_of(module: str) -> str:
    rel = module.split(".")[1:]
    path = PACKAGE.joinpath(*rel, "__init__.py") if is_package(module) else PACKAGE.joinpath(*rel).with_suffix(".py")
    return path.read_text()


def imports_of(module: str) -> Iterator[Tuple[int, str]]:
    """``(line, imported glsr module)`` of ``module``'s source (see :func:`imports_in`)."""
    return imports_in(source_of(module), module)


def imports_in(source: str, module: str) -> Iterator[Tuple[int, str]]:
    """``(line, imported glsr module)`` for every import of ``source`` (the text of ``module``), wherever it
    stands: ``import`` statements, absolute or relative, and ``importlib.import_module`` calls whose module name
    is a string the module spells out (a literal, an f-string's fixed prefix, or the strings a name of the module
    is assigned or iterates over)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package(module) else module.split(".")[:-1]
                base = ".".join(package[:len(package) - (node.level - 1)] + ([base] if base else []))
            names = [base + "." + a.name for a in node.names]  # a module, or a name in one (resolve() trims)
        elif isinstance(node, ast.Call) and _call_name(node.func) in ("import_module", "__import__") and node.args:
            names = list(_strings(node.args[0], tree))
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("glsr", *OUTSIDE):
                yield node.lineno, resolve(name)


def is_package(module: str) -> bool:
    """Whether ``module`` is a package (its source is an ``__init__.py``)."""
    return PACKAGE.joinpath(*module.split(".")[1:], "__init__.py").is_file()


def _call_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _strings(expr: ast.expr, tree: ast.Module, depth: int = 0) -> Iterator[str]:
    """The module names an ``import_module`` argument can be, as far as the source spells them out."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield expr.value.partition(":")[0]
    elif isinstance(expr, ast.JoinedStr):
        fixed = expr.values[0] if expr.values else None
        if isinstance(fixed, ast.Constant) and isinstance(fixed.value, str):
            yield fixed.value.rstrip(".")
    elif isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
        for e in expr.elts:
            yield from _strings(e, tree, depth)
    elif isinstance(expr, ast.Dict):
        for e in expr.values:
            yield from _strings(e, tree, depth)
    elif isinstance(expr, ast.Subscript):
        yield from _strings(expr.value, tree, depth)
    elif isinstance(expr, ast.Name) and depth < 3:  # what the name is assigned, or iterates over
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets):
                yield from _strings(node.value, tree, depth + 1)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.target.id == expr.id and node.value is not None:
                yield from _strings(node.value, tree, depth + 1)
            elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name) \
                    and node.target.id == expr.id:
                yield from _strings(node.iter, tree, depth + 1)


def resolve(name: str) -> str:
    """The module an import names (``glsr.models.network.GLSRNet`` -> ``glsr.models.network``)."""
    known = set(modules())
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def violations(module: str, imports: List[Tuple[int, str]]) -> List[str]:
    """Imports of ``module`` that go up or sideways (modules of the bottom and of the top layer may import
    each other; a subpackage imports itself freely)."""
    unit, rank = unit_and_rank(module)
    bad = []
    for line, target in imports:
        t_unit, t_rank = unit_and_rank(target)
        if t_unit == unit or (t_rank == rank and rank in (0, TOP)):
            continue
        if t_rank >= rank:
            bad.append(f"line {line}: {target} (layer {t_rank}) from layer {rank}")
    return bad


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    bad = violations(module, list(imports_of(module)))
    assert not bad, f"{module} imports upwards or sideways: " + "; ".join(bad)


@pytest.mark.parametrize("module, target", [
    ("glsr.runtime.backends", "glsr.export.onnx_export"),   # runtime reading metadata through the exporter
    ("glsr.export.parity", "glsr.train.evaluate"),          # peers
    ("glsr.train.augment", "glsr.bench.timing"),
    ("glsr.geometry", "glsr.models.network"),               # bottom importing a model
    ("glsr.models.network", "glsr.cli"),
    ("glsr.pipeline", "benchmarks"),                        # the checkout's studies are not part of the library
    ("glsr.cli", "benchmarks"),
])
def test_the_check_refuses_an_upward_import(module, target):
    assert violations(module, [(1, target)])


def test_the_check_allows_downward_imports():
    assert not violations("glsr.export.parity", [(1, "glsr.runtime.processing"), (2, "glsr.procedural")])
    assert not violations("glsr.pipeline", [(1, "glsr.cli"), (2, "glsr.bench.run")])


@pytest.mark.parametrize("module, source, target", [
    ("glsr.runtime.backends", "from glsr.export.onnx_export import read_onnx", "glsr.export.onnx_export"),
    ("glsr.runtime.backends", "def f():\n    from ..export import onnx_export", "glsr.export.onnx_export"),
    ("glsr.runtime.backends", "from ..bench.timing import time_callable", "glsr.bench.timing"),
    ("glsr.models", "from .. import pipeline", "glsr.pipeline"),
    ("glsr.geometry", "from .models import network", "glsr.models.network"),
    ("glsr.train.augment", "import importlib\nimportlib.import_module('glsr.bench.run')", "glsr.bench.run"),
    ("glsr.formats", "from importlib import import_module\nHOME = {'x': 'glsr.export.exporter'}\n"
                     "def f(n):\n    return import_module(HOME[n])", "glsr.export.exporter"),
    ("glsr.models.network", "import importlib\nfor m in ('glsr.cli',):\n    importlib.import_module(m)", "glsr.cli"),
    ("glsr.bench.run", "from benchmarks.studies import glue_study", "benchmarks"),
    ("glsr.runtime.io", "import importlib\ndef f(n):\n    return importlib.import_module(f'glsr.train.{n}')",
     "glsr.train"),
])
def test_the_check_reads_every_spelling_of_an_import(module, source, target):
    """Relative imports and ``importlib`` calls are imports too: the test finds them, and refuses them upwards."""
    found = list(imports_in(source, module))
    assert [t for _, t in found] == [target]
    assert violations(module, found)


def test_every_module_has_a_layer():
    for m in modules():
        unit_and_rank(m)


def test_no_command_writes_into_the_package_by_default():
    """The library never writes into its own source tree: no output option of any ``glsr`` command defaults to a
    folder inside the package or the shipped models (``glsr ship`` needs ``-o``; the maintainers' tools that write
    ``models/`` live in ``benchmarks/``)."""
    import argparse

    from glsr.cli import build_parser
    from glsr.paths import CHECKOUT

    own = [PACKAGE.resolve(), (CHECKOUT / "models").resolve()]
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    outputs = 0
    for name, command in sub.choices.items():
        for action in command._actions:
            if not ({"-o", "--out", "--json", "--md", "--plot"} & set(action.option_strings)):
                continue
            outputs += 1
            default = action.default
            if default in (None, argparse.SUPPRESS):
                continue
            where = (CHECKOUT / str(default)).resolve()
            assert not any(where == d or d in where.parents for d in own), (name, action.option_strings, default)
    assert outputs >= 6  # predict, train, eval, ship, export, bench, pipeline name their outputs
