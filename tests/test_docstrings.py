"""Docstrings: the runnable examples pass, and the public definitions of the covered packages say their arguments
and results (issue #23).

The rule (kornia-style): every public function, every public method that takes arguments (forward
included) and every public class of a covered package has a docstring with an `Args:` section naming each
argument (for a class: its __init__'s; a dataclass may call them `Attributes:`), and a `Returns:` (or `Yields:`)
section where it returns a value. Shapes go in a `Shape:` section; that is left to review.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

SPML = Path(__file__).resolve().parents[1] / "spml"

# Packages (folders) and single modules under spml/ held to the rule; add the others as they are documented.
COVERED = (
    "losses",
    "augment",
    "models",
    "utils",
    "registry.py",
    "cli.py",
    "reporting",
    "objectives/mpc.py",
    "objectives/supervised.py",
    "objectives/base.py",
    "objectives/pseudo_labels.py",
    "objectives/__init__.py",
    "engine",
    "config",
    "evaluation",
    "factories",
    "experiments",
    "data",
    "__init__.py",
)

# Modules whose docstrings carry runnable examples (each must have at least one).
DOCTEST_MODULES = (
    "spml.registry",
    "spml.cli",
    "spml.losses.zlpr",
    "spml.losses.an",
    "spml.augment.tta",
    "spml.models.batch_transformer",
    "spml.models.pretrained",
    "spml.models.text_prototypes",
    "spml.models.weights",
    "spml.utils.io",
    "spml.utils.lock",
    "spml.utils.text",
    "spml.reporting.stats",
    "spml.reporting.plots",
)

DOCTEST_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{name} is listed in DOCTEST_MODULES but has no >>> example"
    assert runner.failures == 0, "".join(report)


def covered_files() -> list[Path]:
    files = []
    for entry in COVERED:
        path = SPML / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    spec = function.args
    names = [a.arg for a in spec.posonlyargs + spec.args + spec.kwonlyargs]
    names += [a.arg for a in (spec.vararg, spec.kwarg) if a is not None]
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    return names[1:] if method and not is_static and names else names


def returns_value(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A `return <value>` (not None) or a yield in the function's own body (nested definitions left out)."""
    pending = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if (
            isinstance(node, ast.Return)
            and node.value is not None
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            return True
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        pending.extend(ast.iter_child_nodes(node))
    return False


def is_dataclass(node: ast.ClassDef) -> bool:
    def name(decorator: ast.expr) -> str | None:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return getattr(target, "id", getattr(target, "attr", None))

    return any(name(d) == "dataclass" for d in node.decorator_list)


def section(doc: str, title: str) -> str | None:
    """The text of a Google-style section (its indented lines), or None when the docstring has none."""
    match = re.search(rf"^{title}:\n((?:[ \t]+.*\n?|\n)*)", doc, re.MULTILINE)
    return None if match is None else match.group(1)


def problems_of(node: ast.AST, params: list[str], returns: bool, args_titles: tuple[str, ...]) -> list[str]:
    doc = ast.get_docstring(node)
    if not doc:
        return ["no docstring"]
    found = []
    if params:
        text = next((s for s in (section(doc, t) for t in args_titles) if s is not None), None)
        if text is None:
            found.append(f"no {args_titles[0]}: section")
        else:
            named = [p for p in params if re.search(rf"(^|[\s,*]){re.escape(p)}[,:]", text, re.MULTILINE)]
            missing = [p for p in params if p not in named]
            if missing:
                found.append(f"{args_titles[0]}: does not name {missing}")
    if returns and section(doc, "Returns") is None and section(doc, "Yields") is None:
        found.append("no Returns: section")
    return found


def undocumented(path: Path) -> tuple[int, list[str]]:
    """(public definitions checked, 'name (line): problem' for those breaking the rule) of one module."""
    checked, failures = 0, []

    def check(name: str, node: ast.AST, params: list[str], returns: bool, titles: tuple[str, ...] = ("Args",)):
        nonlocal checked
        checked += 1
        failures.extend(
            f"{name} (line {node.lineno}): {problem}" for problem in problems_of(node, params, returns, titles)
        )

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        definition = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if not definition or node.name.startswith("_"):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            check(node.name, node, parameters(node, method=False), returns_value(node))
        elif isinstance(node, ast.ClassDef):
            init = next((m for m in node.body if isinstance(m, ast.FunctionDef) and m.name == "__init__"), None)
            if init is not None:
                check(node.name, node, parameters(init, method=True), False)
            elif is_dataclass(node):
                fields = [
                    f.target.id for f in node.body if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)
                ]
                check(node.name, node, fields, False, ("Args", "Attributes"))
            else:
                check(node.name, node, [], False)
            for member in node.body:
                if (
                    isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not member.name.startswith("_")
                    and parameters(member, method=True)
                ):
                    check(f"{node.name}.{member.name}", member, parameters(member, method=True), returns_value(member))
    return checked, failures


@pytest.mark.parametrize("path", covered_files(), ids=lambda path: str(path.relative_to(SPML)))
def test_public_definitions_document_args_and_returns(path):
    _, failures = undocumented(path)
    assert not failures, f"{path.relative_to(SPML.parent)}:\n  " + "\n  ".join(failures)


def test_the_docstring_rule_catches_what_it_should(tmp_path):
    module = tmp_path / "example.py"
    module.write_text(
        'def good(a, *rest, **options):\n    """Sum.\n\n    Args:\n        a: first.\n        *rest: more.\n'
        '        **options: unused.\n\n    Returns:\n        The sum.\n    """\n    return a\n\n\n'
        'def no_returns(a):\n    """Double.\n\n    Args:\n        a: the value.\n    """\n    return 2 * a\n\n\n'
        'def unnamed(a, b):\n    """Pair.\n\n    Args:\n        a: first.\n\n    Returns:\n        (a, b).\n    """\n'
        "    return a, b\n\n\n"
        'class Box:\n    """A box."""\n\n    def __init__(self, size):\n        self.size = size\n\n'
        "    def grow(self, by):\n        self.size += by\n\n\n"
        "def _private(a):\n    return a\n",
        encoding="utf-8",
    )
    checked, failures = undocumented(module)
    assert checked == 5
    assert [failure.split(" (")[0] for failure in failures] == ["no_returns", "unnamed", "Box", "Box.grow"]
    assert "does not name ['b']" in failures[1]
