"""The examples in the math modules' docstrings run and hold."""

from __future__ import annotations

import doctest

import pytest

from domainbed_dge.core import equilibrium
from domainbed_dge.core import peers


@pytest.mark.parametrize("module", [equilibrium, peers], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
