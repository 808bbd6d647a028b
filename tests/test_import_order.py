"""Imports run one way: svrt_errors <- kernels <- svrt_data <- pipelines <- svrt_model <- cli.

The checker reads every module of those packages with :mod:`ast` (no module is imported), collects
every import statement, module-level or inside a function (a lazy import is still a dependency), with
relative imports resolved, and fails on

- an import against the order: a module may import only from its own package or packages to its left;
- a cycle between modules, counting lazy imports.

The graph has one edge per module an import statement names: ``from a.b import c`` names ``a.b.c`` when
that is a module, else ``a.b``. Parent packages that Python initialises on the way are not edges (their
``__init__`` modules are checked in their own right). Imports of anything outside these packages
(numpy, torch, ...) are ignored.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORDER = ("svrt_errors", "kernels", "svrt_data", "pipelines", "svrt_model", "cli")


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``source`` (in file ``path``, at ``line``) needs ``target``."""

    source: str
    path: str
    line: int
    target: str
    lazy: bool

    def where(self) -> str:
        kind = "function-level" if self.lazy else "module-level"
        return f"{self.path}:{self.line}: {self.source} imports {self.target} ({kind})"


def discover(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """``module name -> file`` of every ``.py`` file under the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module (``name`` itself for outside modules)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in modules:
            return prefix
    return name


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function or lambda body (lazy imports)."""
    lazy = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lazy


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path) -> list[Import]:
    """Every dependency of module ``name`` (file ``path``) on the modules in ``modules``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy = _function_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    rel = path.relative_to(root).as_posix()
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name, modules) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                if node.level - 1 > len(base) - 1:
                    raise ValueError(f"{rel}:{node.lineno}: relative import beyond the top-level package")
                base = base[: len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            for a in node.names:
                sub = f"{full}.{a.name}"
                targets.append(sub if sub in modules else _known(full, modules))
        for target in targets:
            if target in modules:
                out.append(Import(name, rel, node.lineno, target, id(node) in lazy))
    return sorted(out, key=lambda i: (i.line, i.target))


def build_graph(root: Path, packages: Sequence[str]) -> tuple[dict[str, Path], list[Import]]:
    modules = discover(root, packages)
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, modules, root)]
    return modules, edges


def order_violations(edges: Iterable[Import], order: Sequence[str]) -> list[str]:
    """Imports of a package to the right of the importer's own package in ``order``."""
    rank = {pkg: i for i, pkg in enumerate(order)}
    out = []
    for e in edges:
        src, dst = e.source.split(".")[0], e.target.split(".")[0]
        if rank[dst] > rank[src]:
            allowed = ", ".join(order[: rank[src] + 1])
            out.append(f"{e.where()}: {src} may import only from {allowed} (order {' <- '.join(order)})")
    return out


def cycles(edges: Iterable[Import]) -> list[list[Import]]:
    """One cycle (as its edges) per strongly connected component that has one (Tarjan's algorithm)."""
    succ: dict[str, dict[str, Import]] = {}
    for e in edges:
        succ.setdefault(e.source, {}).setdefault(e.target, e)
        succ.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (a few hundred)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    found = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        if len(comp) == 1 and start not in succ[start]:
            continue
        # breadth-first from start back to start inside the component: a shortest cycle through it
        prev: dict[str, Import] = {}
        frontier = [start]
        seen = {start}
        closing = None
        while frontier and closing is None:
            nxt = []
            for v in frontier:
                for w, e in sorted(succ[v].items()):
                    if w == start:
                        closing = e
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = e
                        nxt.append(w)
                if closing is not None:
                    break
            frontier = nxt
        path = [closing]
        while path[0].source != start:
            path.insert(0, prev[path[0].source])
        found.append(path)
    return found


def describe_cycle(path: list[Import]) -> str:
    chain = " -> ".join([path[0].source] + [e.target for e in path])
    return f"import cycle {chain}:\n    " + "\n    ".join(e.where() for e in path)


# -- the repository ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo_graph() -> tuple[dict[str, Path], list[Import]]:
    return build_graph(REPO, ORDER)


def test_every_package_is_walked(repo_graph) -> None:
    modules, edges = repo_graph
    for pkg in ORDER:
        assert pkg in modules, f"{pkg}/__init__.py not found"
    # the walk sees lazy imports: kernels.deform_conv picks its CUDA path inside deform_conv2d
    assert any(e.source == "kernels.deform_conv" and e.target == "kernels.deform_conv_cuda" and e.lazy
               for e in edges)


def test_imports_follow_the_package_order(repo_graph) -> None:
    _, edges = repo_graph
    problems = order_violations(edges, ORDER)
    assert not problems, "imports against the order:\n" + "\n".join(problems)


def test_library_never_imports_tests_benchmarks_or_scripts(repo_graph) -> None:
    modules, _ = repo_graph
    bad = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(REPO)}:{node.lineno}: {name} imports {n}" for n in names
                    if n.split(".")[0] in ("tests", "benchmarks", "scripts")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules(repo_graph) -> None:
    _, edges = repo_graph
    found = cycles(edges)
    assert not found, "\n".join(describe_cycle(c) for c in found)


# -- the checker itself, on a synthetic tree ------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_flags_an_upward_import_with_file_and_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": "import os\n\n\ndef f():\n    from high.b import g\n    return g\n",
        "high/__init__.py": "",
        "high/b.py": "from low.a import f\n\n\ndef g():\n    return f\n",
    })
    _, edges = build_graph(root, ("low", "high"))
    problems = order_violations(edges, ("low", "high"))
    assert problems == ["low/a.py:5: low.a imports high.b (function-level): low may import only from low "
                        "(order low <- high)"]


def test_checker_finds_a_cycle_through_a_lazy_relative_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/x.py": "from . import y\n",
        "pkg/sub/y.py": "def f():\n    from ..z import h\n    return h\n",
        "pkg/z.py": "from pkg.sub.x import *  # noqa\n",
        "pkg/alone.py": "from .sub import x\nimport numpy\n",
    })
    modules, edges = build_graph(root, ("pkg",))
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.sub.x", "pkg.sub.y"), ("pkg.sub.y", "pkg.z"), ("pkg.z", "pkg.sub.x"), ("pkg.alone", "pkg.sub.x")}
    found = cycles(edges)
    assert len(found) == 1
    text = describe_cycle(found[0])
    assert text.splitlines()[0] == "import cycle pkg.sub.x -> pkg.sub.y -> pkg.z -> pkg.sub.x:"
    assert "pkg/sub/y.py:2: pkg.sub.y imports pkg.z (function-level)" in text
    assert order_violations(edges, ("pkg",)) == []


def test_checker_finds_two_modules_importing_each_other_and_self_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "k/__init__.py": "",
        "k/a.py": "from k.b import x\n",
        "k/b.py": "def x():\n    import k.a\n",
        "k/c.py": "from k import c\n",
        "k/d.py": "from k.a import x\n",
    })
    _, edges = build_graph(root, ("k",))
    found = sorted(describe_cycle(c).splitlines()[0] for c in cycles(edges))
    assert found == ["import cycle k.a -> k.b -> k.a:", "import cycle k.c -> k.c:"]
