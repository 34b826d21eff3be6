"""The package's layers: an acyclic import graph, and the edges the design forbids (a typed config that stands on the
evaluation suite, a theory module that needs pandas, plotting that reaches into training or the study)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "endprompt"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the endprompt modules it imports anywhere in its file (lazy imports count too)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("endprompt"):
                for alias in node.names:  # `from endprompt.evaluate import ruler` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("endprompt")}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps.discard(package)  # a module's own package (its __init__ re-exports) is not a layer above it
        graph[name] = deps - {name}
    return graph


def reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_import_graph_is_acyclic():
    graph = import_graph()
    cycles = [m for m in graph if m in reaches(graph, m)]
    assert not cycles, cycles


@pytest.mark.parametrize(("module", "forbidden"), [
    ("endprompt.config", {"endprompt.mixture", "endprompt.evaluate", "endprompt.train", "endprompt.modeling"}),
    ("endprompt.bound", {"endprompt.recipe", "endprompt.batching", "endprompt.modeling", "endprompt.bound_tables"}),
    ("endprompt.positions", {"endprompt.recipe", "endprompt.batching", "endprompt.rope"}),
    ("endprompt.recipe", {"endprompt.batching", "endprompt.config", "endprompt.data", "endprompt.train"}),
    ("endprompt.batching", {"endprompt.config", "endprompt.data", "endprompt.train"}),
    ("endprompt.plotting", {"endprompt.train", "endprompt.reproduce", "endprompt.evaluate", "endprompt.bound"}),
    ("endprompt.study_tables", {"endprompt.train", "endprompt.reproduce"}),
    # a study's settings are typed values: building them runs and evaluates nothing
    ("endprompt.study", {"endprompt.reproduce", "endprompt.evaluate", "endprompt.plotting", "endprompt.claims"}),
    ("endprompt.claims", {"endprompt.train", "endprompt.reproduce", "endprompt.modeling", "endprompt.plotting"}),
    # the shared task generators stand below both of their users, so neither reaches into the other
    ("endprompt.tasks", {"endprompt.evaluate", "endprompt.mixture", "endprompt.train", "endprompt.modeling"}),
    ("endprompt.mixture", {"endprompt.evaluate"}),
    # a base model is pretrained, never evaluated or studied: the study and the base search both build on it
    ("endprompt.study_base", {"endprompt.evaluate", "endprompt.reproduce", "endprompt.testbed", "endprompt.plotting"}),
])
def test_layers(module, forbidden):
    below = reaches(import_graph(), module)
    assert not {m for m in below if any(m == f or m.startswith(f + ".") for f in forbidden)}, (module, below)


def test_config_loads_without_the_evaluation_suite():
    code = "import sys, endprompt.config; print(sorted(m for m in sys.modules if m.startswith('endprompt')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "endprompt.evaluate" not in loaded and "endprompt.mixture" not in loaded
