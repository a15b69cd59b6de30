"""Architecture checks: sepkit's import layering, no import cycle, and size limits.

Dependencies point one way. The tiers, top to bottom (numbers as in failure messages;
``a, b`` = same tier, may import each other; ``a | b`` = same tier, independent)::

    top          1. sepkit.cli, sepkit.__main__, sepkit._recipe
                 2. sepkit.pretrained, sepkit.tf_separation, sepkit.streaming,
                    sepkit.dropin_sklearn
    estimator    3. sepkit.separator
                 4. sepkit._mne_mixin, sepkit._mne_scores
                 5. sepkit.serialization
    families     6. sepkit.methods
                 7. sepkit.train | sepkit.preprocessing
    bottom       8. sepkit.models, sepkit.datasets, sepkit.viz, sepkit.artifacts, sepkit.metrics
                 9. sepkit.io, sepkit.windows, sepkit.functional, sepkit.functional_tf,
                   sepkit.functional_ica
                10. sepkit._check, sepkit._atomic, sepkit._version, sepkit._lazy

A module may import modules of its own tier (unless the tier is marked independent:
then only its own package) and of the tiers below it. ``sepkit/__init__.py`` re-exports
the public API and may import anything; no module inside the package may import the
package root. The one upward import allowed is ``sepkit.train.__main__ ->
sepkit.cli.train``: ``python -m sepkit.train`` is a script that nothing imports.

The import graph is built here from the source with :mod:`ast`, counting *every* import
statement: module level, inside functions and methods (a function-level import hides a
cycle from the interpreter, not from the architecture), and inside ``if TYPE_CHECKING:``
blocks (type-only imports are dependencies of the code's meaning too; we count them, as
grimp/import-linter do with ``exclude_type_checking_imports = false``).
The same layers are written as import-linter contracts in ``pyproject.toml``
(``[tool.importlinter]``); ``test_import_linter_contracts`` runs them.

Cycles are checked between modules and, as import-linter's ``acyclic_siblings`` does,
between the sibling subpackages of every package. Layers listed here that do not exist
yet are skipped until they do.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sepkit"
PACKAGE_DIR = ROOT / PACKAGE

# Tiers, top to bottom: (module prefixes, independent). Modules of an independent tier may
# not import each other's packages; those of a non-independent tier may. Keep in step with
# the layers contract in pyproject.toml.
LAYERS: list[tuple[tuple[str, ...], bool]] = [
    (("sepkit.cli", "sepkit.__main__", "sepkit._recipe"), False),
    (
        ("sepkit.pretrained", "sepkit.tf_separation", "sepkit.streaming", "sepkit.dropin_sklearn"),
        False,
    ),
    (("sepkit.separator",), False),
    (("sepkit._mne_mixin", "sepkit._mne_scores"), False),
    (("sepkit.serialization",), False),
    (("sepkit.methods",), False),
    (("sepkit.train", "sepkit.preprocessing"), True),
    (
        (
            "sepkit.models",
            "sepkit.datasets",
            "sepkit.data",
            "sepkit.viz",
            "sepkit.artifacts",
            "sepkit.metrics",
        ),
        False,
    ),
    (
        (
            "sepkit.io",
            "sepkit.windows",
            "sepkit.functional",
            "sepkit.functional_tf",
            "sepkit.functional_ica",
            "sepkit.registry",
        ),
        False,
    ),
    (("sepkit._check", "sepkit._atomic", "sepkit._version", "sepkit._lazy"), False),
]

# (importer, imported) -> reason. Exact module names.
ALLOWED_UPWARD_IMPORTS: dict[tuple[str, str], str] = {
    ("sepkit.train.__main__", "sepkit.cli.train"): (
        "`python -m sepkit.train` is a script entry point that nothing imports; it reuses "
        "the `sepkit train` command-line parser instead of keeping a second copy"
    ),
}

MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 80

# Qualified name (module + __qualname__, e.g. "sepkit.separator.IVAESeparator.fit") ->
# why it may exceed the limit. Empty unless necessary; an entry that no longer exceeds
# its limit (or no longer exists) fails the test, so the list cannot go stale.
SIZE_ALLOWLIST: dict[str, str] = {
    "sepkit.separator.IVAESeparator.__init__": (
        "scikit-learn's get_params/clone need one explicit keyword per setting and __init__ "
        "only stores them (one line each); the 41 settings are the public API, kept as the "
        "issue asked. Family-only settings without a keyword go through fit_params."
    ),
}


# --------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: str  # relative to the package's parent directory
    lineno: int
    scope: str  # qualified name of the enclosing function/class, "" at module level
    type_checking: bool
    via: str = ""  # the module-level import, when importer/imported are collapsed packages

    @property
    def where(self) -> str:
        ctx = []
        if self.scope:
            ctx.append(f"in {self.scope}")
        if self.type_checking:
            ctx.append("under TYPE_CHECKING")
        if self.via:
            ctx.append(self.via)
        return f"{self.path}:{self.lineno}" + (f" ({', '.join(ctx)})" if ctx else "")


def _module_name(path: Path, package_dir: Path, package: str) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def discover_modules(package_dir: Path, package: str) -> list[tuple[str, Path]]:
    """(module name, source file) for every ``.py`` file under ``package_dir``.

    A name can appear twice while a module becomes a package (``train.py`` beside
    ``train/__init__.py``): both files are read.
    """
    return [
        (_module_name(p, package_dir, package), p)
        for p in sorted(package_dir.rglob("*.py"))
        if "__pycache__" not in p.parts
    ]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    """Collects every import statement with its enclosing scope and TYPE_CHECKING flag."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.type_checking = 0
        self.found: list[tuple[ast.Import | ast.ImportFrom, str, bool]] = []

    def _scoped(self, node: ast.AST, name: str, local: bool) -> None:
        self.scope.append(name)
        if local:
            self.scope.append("<locals>")
        self.generic_visit(node)
        del self.scope[-2 if local else -1 :]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name, local=True)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name, local=False)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _record(self, node: ast.Import | ast.ImportFrom) -> None:
        scope = ".".join(s for s in self.scope if s != "<locals>")
        self.found.append((node, scope, self.type_checking > 0))

    visit_Import = _record  # type: ignore[assignment]
    visit_ImportFrom = _record  # type: ignore[assignment]


def _resolve(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]
) -> list[str]:
    """Absolute module names an import statement refers to (inside or outside the package)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base_parts = importer.split(".") if is_package else importer.split(".")[:-1]
        up = node.level - 1
        if up > len(base_parts) - 1:
            return []  # beyond the top-level package: not ours to judge
        base_parts = base_parts[: len(base_parts) - up]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        # `from pkg import submodule` imports the submodule; `from mod import name` the module.
        targets.append(candidate if candidate in modules else base)
    return targets


def build_import_graph(package_dir: Path, package: str = PACKAGE) -> dict[str, list[Edge]]:
    """Importer -> its edges to other modules of ``package`` (self-imports dropped)."""
    files = discover_modules(package_dir, package)
    modules = {name for name, _path in files}
    graph: dict[str, list[Edge]] = {m: [] for m in modules}
    for importer, path in files:
        collector = _ImportCollector()
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(package_dir.parent).as_posix()
        for node, scope, type_checking in collector.found:
            targets = _resolve(node, importer, path.name == "__init__.py", modules)
            for target in dict.fromkeys(targets):
                if target != importer and (target == package or target.startswith(package + ".")):
                    graph[importer].append(
                        Edge(importer, target, rel, node.lineno, scope, type_checking)
                    )
    return graph


# --------------------------------------------------------------------------- cycles


def _strongly_connected_components(adjacency: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adjacency.get(v, ())):
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
            components.append(sorted(component))

    for v in sorted(adjacency):
        if v not in index:
            visit(v)
    return components


def _shortest_cycle(adjacency: dict[str, set[str]], members: set[str]) -> list[str]:
    best: list[str] = []
    for start in sorted(members):
        parent = {start: ""}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if start in adjacency.get(v, ()):
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                if not best or len(path) < len(best):
                    best = path
                break
            for w in sorted(adjacency.get(v, ()) & members):
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
    return best


def find_cycles(graph: dict[str, list[Edge]], what: str = "modules") -> list[str]:
    """One report per strongly connected component of more than one module."""
    adjacency: dict[str, set[str]] = {m: set() for m in graph}
    edges: dict[tuple[str, str], list[Edge]] = {}
    for importer, out in graph.items():
        for e in out:
            adjacency[importer].add(e.imported)
            adjacency.setdefault(e.imported, set())
            edges.setdefault((importer, e.imported), []).append(e)
    reports = []
    for component in _strongly_connected_components(adjacency):
        if len(component) < 2:
            continue
        members = set(component)
        cycle = _shortest_cycle(adjacency, members)
        lines = [
            f"cycle among {len(component)} {what}: {', '.join(component)}",
            "  shortest cycle: " + " -> ".join([*cycle, cycle[0]]),
        ]
        lines.append("  imports inside the cycle:")
        for (a, b), found in sorted(edges.items()):
            if a in members and b in members:
                where = "; ".join(e.where for e in found)
                lines.append(f"    {a} -> {b}: {where}")
        reports.append("\n".join(lines))
    return reports


def find_sibling_cycles(
    graph: dict[str, list[Edge]],
    ignore: dict[tuple[str, str], str] = ALLOWED_UPWARD_IMPORTS,
) -> list[str]:
    """Cycles between the children of each package, a subpackage standing for all its modules.

    Stricter than module cycles (``a.x -> b.y -> a.z`` is a cycle between packages ``a``
    and ``b``); the same rule as import-linter's ``acyclic_siblings`` contract, which
    ignores the same allowed imports (``sepkit.train.__main__ -> sepkit.cli.train`` makes
    ``train -> cli -> train`` at package level, but no module imports the script back).
    """
    modules = set(graph) | {e.imported for out in graph.values() for e in out}
    packages = {".".join(m.split(".")[:i]) for m in modules for i in range(1, len(m.split(".")))}
    reports = []
    for package in sorted(packages):
        prefix = package + "."

        def child(module: str, prefix: str = prefix) -> str | None:
            if not module.startswith(prefix):
                return None
            return prefix + module[len(prefix) :].split(".")[0]

        collapsed: dict[str, list[Edge]] = {}
        for out in graph.values():
            for e in out:
                a, b = child(e.importer), child(e.imported)
                if a and b and a != b and (e.importer, e.imported) not in ignore:
                    via = f"{e.importer} -> {e.imported}"
                    collapsed.setdefault(a, []).append(replace(e, importer=a, imported=b, via=via))
        reports += [f"in {package}: {r}" for r in find_cycles(collapsed, "siblings")]
    return reports


# --------------------------------------------------------------------------- layers


def _owner(module: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        if module == name or module.startswith(name + "."):
            return name
    return None


def layer_of(
    module: str, layers: list[tuple[tuple[str, ...], bool]] = LAYERS
) -> tuple[int, str] | None:
    """(tier index, top to bottom; the layer name) of ``module``; the root is tier -1."""
    if module == PACKAGE:
        return -1, PACKAGE
    for i, (names, _independent) in enumerate(layers):
        owner = _owner(module, names)
        if owner is not None:
            return i, owner
    return None


def layer_violations(
    graph: dict[str, list[Edge]],
    layers: list[tuple[tuple[str, ...], bool]] = LAYERS,
    allowed: dict[tuple[str, str], str] = ALLOWED_UPWARD_IMPORTS,
) -> list[str]:
    violations = []
    for importer in sorted(graph):
        for e in graph[importer]:
            if (e.importer, e.imported) in allowed:
                continue
            src, dst = layer_of(e.importer, layers), layer_of(e.imported, layers)
            if src is None or dst is None:
                continue  # reported by test_every_module_has_a_layer
            (src_tier, src_name), (dst_tier, dst_name) = src, dst
            if src_tier == -1 or src_name == dst_name:
                continue
            if dst_tier == -1:
                why = "imports the package root, which re-exports everything"
            elif dst_tier < src_tier:
                why = f"tier {src_tier + 1} ({src_name}) imports tier {dst_tier + 1} ({dst_name})"
            elif dst_tier == src_tier and layers[src_tier][1]:
                why = f"{src_name} and {dst_name} must be independent"
            else:
                continue
            violations.append(f"{e.where}: {e.importer} -> {e.imported}: {why}")
    return violations


# --------------------------------------------------------------------------- sizes


def _code_lines(source: str) -> set[int]:
    """Line numbers holding code: blank and comment-only lines excluded."""
    lines: set[int] = set()
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def measure_definitions(path: Path, module: str) -> list[tuple[str, str, int, int]]:
    """(qualified name, "class"/"function", size, first line) of every def and class.

    Size counts the lines holding code from the ``def``/``class`` line (decorators
    excluded) to the last line, without blank lines, comment-only lines and docstrings
    (the definition's own and those of the methods and functions nested in it). Nested
    functions count towards their enclosing function and are measured on their own too.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    counted = _code_lines(source) - _docstring_lines(tree)
    found: list[tuple[str, str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                qualname = f"{prefix}{child.name}"
                size = sum(1 for n in range(child.lineno, child.end_lineno + 1) if n in counted)
                found.append((f"{module}.{qualname}", kind, size, child.lineno))
                walk(child, qualname + ("." if kind == "class" else ".<locals>."))
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def size_problems(
    package_dir: Path, allowlist: dict[str, str], package: str = PACKAGE
) -> list[str]:
    """Classes/functions over their limit and not allow-listed, then stale allow-list entries."""
    oversized: dict[str, list[str]] = {}
    for module, path in discover_modules(package_dir, package):
        rel = path.relative_to(package_dir.parent).as_posix()
        for qualname, kind, size, lineno in measure_definitions(path, module):
            limit = MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES
            if size > limit:
                oversized.setdefault(qualname, []).append(
                    f"{rel}:{lineno}: {kind} {qualname} has {size} lines (> {limit})"
                )
    problems = [
        desc for name, descs in oversized.items() if name not in allowlist for desc in descs
    ]
    problems += [
        f"{name} is in SIZE_ALLOWLIST but no longer over its limit: remove it"
        for name in sorted(set(allowlist) - set(oversized))
    ]
    return problems


# --------------------------------------------------------------------------- tests on sepkit


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Edge]]:
    return build_import_graph(PACKAGE_DIR)


def test_no_import_cycle(graph):
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) in sepkit:\n" + "\n".join(cycles)


def test_no_cycle_between_sibling_packages(graph):
    cycles = find_sibling_cycles(graph)
    assert not cycles, f"{len(cycles)} cycle(s) between sibling packages:\n" + "\n".join(cycles)


def test_imports_respect_layers(graph):
    violations = layer_violations(graph)
    assert not violations, (
        f"{len(violations)} import(s) against sepkit's layers "
        "(see tests/test_architecture.py for the order):\n" + "\n".join(violations)
    )


def test_every_module_has_a_layer(graph):
    missing = sorted(m for m in graph if layer_of(m) is None)
    assert not missing, (
        "modules in no layer (add them to LAYERS here and to the layers contract in "
        f"pyproject.toml): {', '.join(missing)}"
    )


def test_size_limits():
    problems = size_problems(PACKAGE_DIR, SIZE_ALLOWLIST)
    assert not problems, (
        f"classes over {MAX_CLASS_LINES} or functions over {MAX_FUNCTION_LINES} code lines "
        "(docstrings, comments and blank lines not counted); split them or add them to "
        "SIZE_ALLOWLIST with a reason:\n" + "\n".join(problems)
    )


def test_import_linter_contracts():
    """The contracts in pyproject.toml's [tool.importlinter], run by import-linter."""
    pytest.importorskip("importlinter", reason="import-linter is not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",  # no .import_linter_cache/ left in the work tree
            "--no-logo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"lint-imports failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


# --------------------------------------------------------------------------- tests of the tester


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_tester_reports_a_two_module_cycle(tmp_path):
    pkg = _write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            # The import that closes the cycle hides inside a function.
            "b.py": "import os\n\n\ndef f():\n    from .a import thing\n    return thing\n",
            "c.py": "from .a import x\n",
        },
    )
    cycles = find_cycles(build_import_graph(pkg, "pkg"))
    assert len(cycles) == 1
    report = cycles[0]
    assert "cycle among 2 modules: pkg.a, pkg.b" in report
    assert "pkg.a -> pkg.b: pkg/a.py:1" in report
    assert "pkg.b -> pkg.a: pkg/b.py:5 (in f)" in report
    assert "pkg.c" not in report


def test_tester_reports_a_cycle_between_sibling_packages(tmp_path):
    pkg = _write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a/__init__.py": "",
            "a/x.py": "from ..b import y\n",
            "a/z.py": "",
            "b/__init__.py": "",
            "b/y.py": "from ..a.z import thing\n",
        },
    )
    graph = build_import_graph(pkg, "pkg")
    assert find_cycles(graph) == []  # no module cycle: a.x -> b.y -> a.z
    (report,) = find_sibling_cycles(graph)
    assert report.startswith("in pkg: cycle among 2 siblings: pkg.a, pkg.b")
    assert "pkg.a -> pkg.b: pkg/a/x.py:1 (pkg.a.x -> pkg.b.y)" in report
    assert "pkg.b -> pkg.a: pkg/b/y.py:1 (pkg.b.y -> pkg.a.z)" in report


def test_tester_catches_a_function_level_upward_import(tmp_path):
    pkg = _write_package(
        tmp_path / "sepkit",
        {
            "__init__.py": "from .separator import IVAESeparator\n",
            "separator.py": "from .io import read\n\n\nclass IVAESeparator:\n    pass\n",
            "io.py": (
                "def read():\n"
                "    pass\n"
                "\n"
                "\n"
                "class Reader:\n"
                "    def fit(self):\n"
                "        from .separator import IVAESeparator\n"
                "\n"
                "        return IVAESeparator()\n"
            ),
        },
    )
    graph = build_import_graph(pkg, "sepkit")
    violations = layer_violations(graph)
    assert len(violations) == 1
    assert violations[0].startswith("sepkit/io.py:7 (in Reader.fit): sepkit.io -> sepkit.separator")
    assert "tier 9 (sepkit.io) imports tier 3 (sepkit.separator)" in violations[0]
    # The same import closes a cycle.
    assert len(find_cycles(graph)) == 1


def test_tester_resolves_imports(tmp_path):
    pkg = _write_package(
        tmp_path / "sepkit",
        {
            "__init__.py": "",
            "tf_separation.py": "",
            "functional.py": "",
            "io/__init__.py": "",
            "io/eeg.py": "from ..functional import f\nfrom . import raw\n",
            "io/raw.py": "",
            "separator.py": (
                "from typing import TYPE_CHECKING\n"
                "import numpy\n"
                "import sepkit.functional as F\n"
                "from sepkit import tf_separation\n"
                "from .io.eeg import read_eeg\n"
                "from . import functional, io\n"
                "if TYPE_CHECKING:\n"
                "    from .pretrained import Model\n"
            ),
            "train/__init__.py": "",
            "train/__main__.py": "from ..cli.train import main\n",
        },
    )
    graph = build_import_graph(pkg, "sepkit")
    got = {(e.imported, e.lineno, e.type_checking) for e in graph["sepkit.separator"]}
    assert got == {
        ("sepkit.functional", 3, False),
        ("sepkit.tf_separation", 4, False),
        ("sepkit.io.eeg", 5, False),
        ("sepkit.functional", 6, False),
        ("sepkit.io", 6, False),
        ("sepkit.pretrained", 8, True),  # absent module: kept as written
    }
    assert {e.imported for e in graph["sepkit.io.eeg"]} == {"sepkit.functional", "sepkit.io.raw"}
    # The one allowed upward import.
    assert [e.imported for e in graph["sepkit.train.__main__"]] == ["sepkit.cli.train"]
    assert not layer_violations({"sepkit.train.__main__": graph["sepkit.train.__main__"]})


def test_tester_measures_code_lines(tmp_path):
    body = "\n".join(f"    x{i} = {i}  # c" for i in range(80))
    path = tmp_path / "m.py"
    path.write_text(
        "class K:\n"
        '    """Doc\n\n    more doc.\n    """\n'
        "\n"
        "    @staticmethod\n"
        "    def small():\n"
        '        """One line."""\n'
        "        # comment\n"
        "\n"
        "        return 1\n"
        "\n"
        "\n"
        f"def big():\n    '''doc'''\n{body}\n",
        encoding="utf-8",
    )
    sizes = {name: size for name, _kind, size, _line in measure_definitions(path, "m")}
    assert sizes == {"m.K": 4, "m.K.small": 2, "m.big": 81}


def test_tester_size_allowlist_cannot_go_stale(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    pkg = _write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "m.py": (
                f"def big():\n{long_body}\n\n\n"
                f"def also_big():\n{long_body}\n\n\n"
                "def small():\n    return 1\n"
            ),
        },
    )
    allow = {"pkg.m.big": "reason", "pkg.m.small": "reason", "pkg.m.gone": "reason"}
    assert size_problems(pkg, allow, "pkg") == [
        f"pkg/m.py:{MAX_FUNCTION_LINES + 4}: function pkg.m.also_big has "
        f"{MAX_FUNCTION_LINES + 1} lines (> {MAX_FUNCTION_LINES})",
        "pkg.m.gone is in SIZE_ALLOWLIST but no longer over its limit: remove it",
        "pkg.m.small is in SIZE_ALLOWLIST but no longer over its limit: remove it",
    ]
