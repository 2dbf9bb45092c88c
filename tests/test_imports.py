"""flantune's modules import each other without cycles (counting imports inside functions and
under TYPE_CHECKING, which hide a cycle until the day someone moves them to the top)."""

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flantune"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The flantune modules ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import module` imports the module
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "flantune.sweep.results" in graph["flantune.sweep.plots"]
    assert "flantune.data.tasks" in graph["flantune.sweep.report"]  # inside task_cluster()


def test_no_import_cycles():
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None
    assert "flantune.cli" in order


# Layers, lowest first: a module imports only from its own package and from lower layers
# (data -> models -> partitioning -> train / decoding -> evaluation -> preference -> cli).
LAYERS = {
    "flantune.host_memory": 0, "flantune.quiet_tensorflow": 0, "flantune.testing": 0,
    "flantune.data": 1, "flantune.metrics": 2, "flantune.models": 2,
    "flantune.partitioning": 3, "flantune.peft": 3, "flantune.decoding": 4, "flantune.train": 4,
    "flantune.evaluation": 5, "flantune.export": 5, "flantune.preference": 6,
    "flantune.selfinstruct": 6,
    "flantune.sweep": 6, "flantune.inspect_view": 6,
    "flantune.gin_checks": 6, "flantune.gin_config": 7, "flantune.cli": 8, "flantune": 9,
}


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        name = ".".join(parts[:size])
        if name in LAYERS:
            return name, LAYERS[name]
    raise AssertionError(f"{module} has no layer in LAYERS; add its package")


def test_imports_point_down_the_layers():
    upward = []
    for module, imported in import_graph().items():
        package, layer = layer_of(module)
        for other in imported:
            other_package, other_layer = layer_of(other)
            if other_package != package and other_layer >= layer and package != "flantune":
                upward.append(f"{module} -> {other}")
    assert not upward, "imports pointing up or sideways: " + ", ".join(sorted(upward))
