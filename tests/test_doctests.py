"""The examples in the docstrings run as written (doctest), so the documented calls stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "spml.data.synthetic",
    "spml.data.splits",
    "spml.data.build",
    "spml.losses",
    "spml.utils.text",
    "spml.models.inference",
    "spml.evaluation.metrics",
    "spml.registry",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0, f"{name} has no docstring example"
    assert failed == 0
