"""The layout stays readable: no import cycle among medprune's modules (imports inside functions count too), no
private name imported across modules, medprune imports at module top, the stage packages never reach up into the
command layer, the package root holds only the shared helpers, and ``import medprune`` stays light (no ray).

There is no line cap: a module is split along concepts, never to meet a size.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "medprune"
#: The command layer: one runner per command and the CLI that adapts arguments to them.
COMMAND_LAYER = ("medprune.runs", "medprune.cli")
#: At most this many loose modules at the package root (the shared helpers; everything else lives in its stage).
MAX_ROOT_MODULES = 10


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str) -> str | None:
    """The medprune module that ``name`` (a dotted module or module.attribute) lives in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every medprune import anywhere in ``module``."""
    path = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found += [(target, alias.name, node.lineno) for alias in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, name, _ in _imports(module):
            full = f"{target}.{name}" if name else target
            owner = _owner(full if full in MODULES else target)
            if owner and owner != module:
                graph[module].add(owner)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_private_names_imported_across_modules() -> None:
    offenders = [
        f"{module}:{line} imports {name} from {target}"
        for module in MODULES
        for target, name, line in _imports(module)
        if name and name.startswith("_") and not name.startswith("__") and _owner(target) != module
    ]
    offenders += [
        f"{module}:{line} imports private module {target}"
        for module in MODULES
        for target, _, line in _imports(module)
        if any(part.startswith("_") and not part.startswith("__") for part in target.split("."))
    ]
    assert offenders == []


def test_medprune_imports_at_module_top() -> None:
    """Imports of medprune's own modules sit at module level, where they show the layering (none inside functions)."""
    hidden = []
    for module, path in MODULES.items():
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    names = [_resolve(module, path.name == "__init__.py", node)]
                if any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names):
                    hidden.append(f"{module}:{node.lineno} in {function.name}()")
    # the one exception: the package's PEP 562 __getattr__ serves medprune.compress lazily, so `import medprune`
    # (run before every submodule import) stays light
    assert [h for h in hidden if not (h.startswith(f"{PACKAGE}:") and h.endswith("in __getattr__()"))] == []
    assert len(hidden) <= 1, hidden


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_stages_never_import_the_command_layer() -> None:
    """Data flows down: no stage package (sweep, study, report, compression, ...) imports runs/ or cli/. The package
    root is the public facade (``medprune.compress`` served lazily from the runner), not a stage."""
    graph = _graph()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module != PACKAGE and not _in(module, COMMAND_LAYER)
        for target in targets
        if _in(target, COMMAND_LAYER)
    )
    assert upward == []


def test_package_root_holds_only_the_shared_helpers() -> None:
    loose = sorted(p.name for p in (SRC / PACKAGE).glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= MAX_ROOT_MODULES, loose


def test_import_medprune_does_not_import_ray() -> None:
    code = "import sys, medprune, medprune.scoring, medprune.pruning; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycle_finder_finds_cycles(source: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(source) == expected
