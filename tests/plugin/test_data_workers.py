"""``DGE_DATA_WORKERS`` sets DomainBed's loader processes per loader, or leaves them be."""

from __future__ import annotations

import types

import pytest

from domainbed_dge.plugin.data_workers import requested_workers, set_data_workers


def datasets_module():
    return types.SimpleNamespace(MultipleDomainDataset=type("MultipleDomainDataset", (), {"N_WORKERS": 8}))


def test_unset_leaves_domainbeds_count(monkeypatch):
    monkeypatch.delenv("DGE_DATA_WORKERS", raising=False)
    module = datasets_module()
    set_data_workers(module)
    assert module.MultipleDomainDataset.N_WORKERS == 8


@pytest.mark.parametrize("value, workers", [("0", 0), ("3", 3)])
def test_a_count_replaces_domainbeds(monkeypatch, value, workers):
    monkeypatch.setenv("DGE_DATA_WORKERS", value)
    module = datasets_module()
    set_data_workers(module)
    assert module.MultipleDomainDataset.N_WORKERS == workers


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_count_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=f"DGE_DATA_WORKERS='{value}' is not allowed; allowed: an integer >= 0"):
        requested_workers({"DGE_DATA_WORKERS": value})


@pytest.mark.domainbed
def test_the_start_up_hook_applies_it_to_domainbeds_datasets():
    import subprocess
    import sys

    from conftest import subprocess_env

    code = "from domainbed import datasets; print(datasets.MultipleDomainDataset.N_WORKERS)"
    for value, printed in (("2", "2"), ("", "8")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**subprocess_env(), "DGE_DATA_WORKERS": value})
        assert result.stdout.strip() == printed, result.stderr
