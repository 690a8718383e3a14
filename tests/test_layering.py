"""The import directions of docs/architecture.md hold for every package and root module of spml, and no module
imports itself back through others (no import cycles, imports inside functions included)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

SPML = REPO / "spml"
BOTTOM = {"registry", "utils"}
COMPONENTS = {"augment", "losses", "models", "objectives"}
# package (or root module) -> the spml packages it may import; the order of docs/architecture.md, from the top:
# tools -> experiments, cli -> factories -> engine -> evaluation -> reporting, objectives -> models, data, losses,
# augment, config -> registry, utils. Only spml.factories reads the config schema (and experiments, which plan runs
# from configs); the engine imports no component and no config.
ALLOWED = {
    "utils": set(),
    "registry": set(),
    "config": {"utils"},
    "augment": BOTTOM,
    "losses": BOTTOM,
    "data": BOTTOM,
    "models": {"augment", *BOTTOM},
    "objectives": {"models", "losses", "augment", *BOTTOM},
    "reporting": BOTTOM,
    "evaluation": {"reporting", "data", "models", *BOTTOM},
    "engine": {"evaluation", "reporting", "data", *BOTTOM},
    "factories": {"engine", "evaluation", "reporting", "data", "config", *COMPONENTS, *BOTTOM},
    "experiments": {"factories", "engine", "evaluation", "reporting", "data", "config", *COMPONENTS, *BOTTOM},
    "cli": {"config", "data", "engine", *BOTTOM},  # the tools' error handling
    "__init__": set(),  # the public names load lazily (importlib), so `import spml` stays cheap
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(path: Path) -> str:
    """The package (first folder under spml/) or root module (file stem) a file belongs to."""
    parts = path.relative_to(SPML).parts
    return parts[0] if len(parts) > 1 else path.stem


def runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under `if TYPE_CHECKING:` (annotations only, never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imports(path: Path) -> set[str]:
    """Every spml module a file imports at run time, at any depth of the file (function-level imports included);
    `from a import b` counts as a.b when a/b.py exists."""
    names = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spml"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                is_module = (REPO / Path(*child.split("."))).with_suffix(".py").exists() or (
                    REPO / Path(*child.split(".")) / "__init__.py"
                ).exists()
                names.add(child if is_module else node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("spml")}
    return names


FILES = sorted(SPML.rglob("*.py"))


def test_every_package_and_root_module_has_a_layer():
    assert {layer(path) for path in FILES} == set(ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=[str(path.relative_to(SPML)) for path in FILES])
def test_imports_follow_the_layers(path):
    own = layer(path)
    used = {name.split(".")[1] for name in imports(path) if name.count(".")} - {own}
    assert used <= ALLOWED[own], (
        f"{path.relative_to(REPO)} imports {sorted(used - ALLOWED[own])} ({own} may import {sorted(ALLOWED[own])})"
    )


def test_the_layers_themselves_have_no_cycle():
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"layer cycle {' -> '.join((*trail, name))}"
        if name not in done:
            for below in ALLOWED[name]:
                visit(below, (*trail, name))
            done.add(name)

    for name in ALLOWED:
        visit(name, ())


def test_no_module_imports_itself_back():
    """Cycles among modules; a package's __init__ importing its own submodules (registration on import) is the
    one allowed way back."""
    graph = {}
    for path in FILES:
        name = module_name(path)
        graph[name] = {
            target for target in imports(path) if not (path.name == "__init__.py" and target.startswith(name + "."))
        }
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2 or name not in graph:
            return
        assert state.get(name) != 1, f"import cycle: {' -> '.join(trail[trail.index(name) :] + [name])}"
        state[name] = 1
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])
