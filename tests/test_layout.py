"""The package layout: each module imports only its own layer and those below, with no import circle, and the
task registry is the one place outside the task packages that names a task."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers from the bottom up, each a list of module-name prefixes (a package's modules included).
LAYERS = [
    ["fatvit.errors", "fatvit.files", "fatvit.catalog", "fatvit.drawing", "fatvit.flops", "fatvit.reporting",
     "fatvit.distributed", "fatvit.checkpoint", "fatvit.deploy"],
    ["fatvit.layers"],
    ["fatvit.models", "fatvit.export", "fatvit.runtime", "fatvit.hub", "fatvit.quantize"],
    ["fatvit.tasks", "fatvit.config", "fatvit.data", "fatvit.engine"],
    ["fatvit.explain", "fatvit.tables", "fatvit.benchmark"],
    ["fatvit.cli", "fatvit.__main__", "fatvit"],
]  # fmt: skip

TASK_NAMES = ("classify", "detect", "segment")


def modules() -> Dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in (SRC / "fatvit").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(tree: ast.AST) -> List[ast.AST]:
    """The import statements of ``tree`` that run (those under ``if TYPE_CHECKING:`` are for type checkers)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the fatvit modules it imports (at load or in a function)."""
    known = modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in known.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")  # fmt: skip
                candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in candidates:
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in known and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    matches = [(len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if layer_of(t) > layer_of(m)]
    assert not upward


def test_no_import_circle():
    graph = import_graph()
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_task_base_imports_no_task_and_a_task_no_other_task():
    graph = import_graph()
    assert not {t for t in graph["fatvit.tasks.base"] if t.startswith("fatvit.tasks.")}
    packages = ("classification", "detection", "segmentation")
    for package in packages:
        for module, targets in graph.items():
            if module.startswith(f"fatvit.tasks.{package}"):
                others = {t for t in targets for p in packages if p != package and t.startswith(f"fatvit.tasks.{p}")}
                assert not others, module


@pytest.mark.parametrize(
    "module",
    [
        "fatvit.config",
        "fatvit.data",
        "fatvit.tasks.base",
        "fatvit.cli",
        "fatvit.cli.train",
        *[f"fatvit.engine.{m.stem}".removesuffix(".__init__") for m in (SRC / "fatvit" / "engine").glob("*.py")],
    ],
)
def test_shared_modules_name_no_task(module):
    """The registry (``fatvit.tasks``) and the task packages name the tasks; the engine and the shared code
    read them from the registry."""
    tree = ast.parse(modules()[module].read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in TASK_NAMES}
    assert not named


def test_the_registry_lists_every_task_package_and_its_classes():
    from fatvit.tasks import TASKS, config_class, task_class

    packages = {p.name for p in (SRC / "fatvit" / "tasks").iterdir() if (p / "task.py").is_file()}
    assert {spec.package for spec in TASKS.values()} == packages
    for name in TASKS:
        assert config_class(name).TASK == name == task_class(name).name
    commands = {name: spec.train_command for name, spec in TASKS.items()}
    assert commands == {"classify": "fatvit train", "detect": "fatvit detect train", "segment": "fatvit segment train"}


def test_no_class_is_over_250_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long


def test_tests_mirror_the_task_packages_and_import_no_other_test_file():
    tests = Path(__file__).resolve().parent
    task_packages = {p.name for p in (SRC / "fatvit" / "tasks").iterdir() if (p / "task.py").is_file()}
    assert task_packages <= {p.name for p in (tests / "tasks").iterdir() if p.is_dir()}
    files = [p for p in tests.rglob("*.py") if "data" not in p.relative_to(tests).parts]
    names = [p.stem for p in files]
    assert len(set(names)) == len(names), "two test files share a name: pytest imports them as one module"
    imported = set()
    for path in files:
        for node in _runtime_imports(ast.parse(path.read_text())):
            roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            imported |= {root.split(".")[0] for root in roots} & set(names)
    assert imported == {"conftest"}


def test_no_module_below_the_command_words_a_flag():
    """Outside ``cli/``, messages name arguments and config keys; flags (``--overwrite``) are the command's words
    (``cli/errors.py`` rewords the typed errors whose remedy is a flag). Docstrings may name flags."""
    flagged = []
    for name, path in modules().items():
        if layer_of(name) == len(LAYERS) - 1:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and re.search(r"(^|[\s(`'])--[a-z]", node.value):  # fmt: skip
                flagged.append(f"{name}:{node.lineno}: {node.value[:60]!r}")
    assert not flagged
