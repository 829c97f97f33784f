"""The package's layering: each stage imports only the stages before it, and no module cycle.

The flow is read -> preprocess -> (SSIM | embed) -> search -> verify -> decide -> report, and
the packages follow it (docs/architecture.md). Every ``import`` is counted, those inside
functions too: a function-level import hides a cycle from Python, not from this test. So are
``importlib.import_module`` / ``__import__`` calls with a literal name, and the lazy maps of a
package's ``__init__`` (a dict whose values all name modules of the package); any other
dynamic import must be listed in ``DYNAMIC`` with what it loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deepssim

PACKAGE = Path(deepssim.__file__).parent

LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"versions", "storage", "classes"},  # neutral: shared by every stage
    {"readers"},
    {"transforms"},
    {"refssim"},
    {"model"},
    {"training"},
    {"auditing"},
    {"benchmark"},
    {"evaluation"},
    {"ldm"},
    {"cohort"},
    {"demo"},
    {"cli", "__main__"},
))
"""Stages in flow order: a module may import its own stage and the ones above it."""

DYNAMIC = {
    "deepssim.ldm.nets": "third-party MONAI modules, by name, to say which one is missing",
    "deepssim.evaluation.metrics.iqa": "the third-party library of a metric (piq, pytorch_msssim)",
    "deepssim.auditing": "its own modules, through its lazy map",
    "deepssim.ldm": "its own modules, through its lazy map",
}
"""Modules whose dynamic imports take a computed name, and what they load."""

_DYNAMIC_CALLS = ("import_module", "__import__")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The deepssim modules that ``name`` imports, anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "deepssim" or target.startswith("deepssim."):
                for alias in node.names:  # ``from pkg import module`` imports the module
                    candidate = f"{target}.{alias.name}"
                    out.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("deepssim"))
        elif isinstance(node, ast.Call) and _called(node) in _DYNAMIC_CALLS:
            target = _literal_import(node, package)
            if target is None:
                assert name in DYNAMIC, (f"{name}: a dynamic import of a computed name; the layering "
                                         "test cannot check it (import by a literal name, or list it in DYNAMIC)")
            elif target == "deepssim" or target.startswith("deepssim."):
                out.add(target)
        elif isinstance(node, ast.Dict) and path.name == "__init__.py" and node.values:
            names = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if len(names) == len(node.values) and all(f"{name}.{n}" in modules for n in names):
                out.update(f"{name}.{n}" for n in names)  # a lazy map of the package's modules
    out.discard(name)
    return out


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _literal_import(call: ast.Call, package: list[str]) -> str | None:
    """The module a dynamic import call loads, when its name is a literal; else None."""
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return None
    text = call.args[0].value
    if not text.startswith("."):
        return text
    level = len(text) - len(text.lstrip("."))
    return ".".join([*package[: len(package) - level + 1], *filter(None, [text.lstrip(".")])])


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root


def _layer(stage: str) -> int:
    for k, layer in enumerate(LAYERS):
        if stage in layer:
            return k
    raise AssertionError(f"deepssim.{stage} is in no layer of tests/test_layout.py: add it")


def test_every_stage_imports_only_earlier_stages() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        stage = _stage(name)
        if stage is None:  # the root re-exports the public API lazily
            continue
        for target in _imports(name, path, modules):
            other = _stage(target)
            if other is None:
                upward.append(f"{name} -> {target} (import the module that defines it)")
            elif _layer(other) > _layer(stage):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports of a later stage:\n" + "\n".join(sorted(upward))


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: {t for t in _imports(name, path, modules) if t in modules}
             for name, path in modules.items() if _stage(name) is not None}
    # Importing a module runs its package's __init__: a module that imports its own package
    # is not a cycle of code, so package-to-member edges of one package are left out.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target in graph and target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
