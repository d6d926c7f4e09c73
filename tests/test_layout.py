"""The two packages' imports, read from the source with ast (nothing is imported): the library never
imports the testbed, and no module imports itself back through a chain of module-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("lame", "lame_testbed")


def module_files(src: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``packages`` under ``src``."""
    out = {}
    for package in packages:
        for path in (src / package).rglob("*.py"):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _module_level(body: list[ast.stmt]):
    """The import statements run when the module is imported: not those in functions, nor under
    ``if TYPE_CHECKING:``; those in classes, ``if``, ``try`` and ``with`` blocks are."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _module_level(node.orelse)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _module_level(block)


def imported_names(name: str, path: Path, statements) -> set[str]:
    """Absolute dotted names the import statements of module ``name`` bring in (``from p import x``
    gives ``p.x``, which may be a module or a name in ``p``)."""
    out = set()
    for node in statements:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph(src: Path, packages: tuple[str, ...], module_level_only: bool = True) -> dict[str, set[str]]:
    """{module: the modules of ``packages`` it imports} (each name cut to the longest known module)."""
    modules = module_files(src, packages)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        statements = (_module_level(tree.body) if module_level_only else
                      (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))))
        targets = set()
        for target in imported_names(name, path, statements):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative depth-first search)."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path.pop())
            elif nxt in path:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_library_never_imports_the_testbed():
    """Not even inside a function: the testbed's verbs reach `lame` through the ``lame.commands`` entry
    point, which the CLI loads by name."""
    graph = import_graph(SRC, PACKAGES, module_level_only=False)
    into_testbed = {m: sorted(t for t in targets if t.split(".")[0] == "lame_testbed")
                    for m, targets in graph.items() if m.split(".")[0] == "lame"}
    assert {m: t for m, t in into_testbed.items() if t} == {}
    assert any(t.startswith("lame.") for t in graph["lame_testbed.commands"])  # the graph does see imports


def test_module_level_imports_have_no_cycle():
    graph = import_graph(SRC, PACKAGES)
    assert len(graph) > 100 and sum(map(len, graph.values())) > 200  # both packages were read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_cycle_through_relative_and_nested_imports_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "a.py").write_text("try:\n    from .sub.b import f\nexcept ImportError:\n    pass\n")
    (package / "sub" / "b.py").write_text("import os\n\nif True:\n    from ..c import g\n\ndef f():\n    pass\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                                  "def g():\n    from pkg import a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.c"},
                     "pkg.c": set()}
    assert find_cycle(graph) is None  # the way back to pkg.a is in a function and under TYPE_CHECKING
    (package / "c.py").write_text("from .a import x\n")
    assert find_cycle(import_graph(tmp_path, ("pkg",))) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
