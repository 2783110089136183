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


def test_equilibrate_is_the_documented_import():
    import subprocess
    import sys

    from domainbed_dge import equilibrate

    assert equilibrate is equilibrium.equilibrate
    # Importing the package alone stays cheap: no torch.
    probe = "import sys, domainbed_dge; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0
