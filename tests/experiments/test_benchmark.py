"""The benchmark harness runs end to end on the CPU, and the per-parameter reference
DGE it times gives the engine's update."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_module

INPUT_SHAPE = (3, 28, 28)
NUM_CLASSES = 4


def make(name, num_domains, dtype=torch.float32, **overrides):
    """DGE (the engine) or LoopDGE (the reference) on 28 x 28 inputs, built in ``dtype``
    (as the default dtype, so that no ``Module.to`` is involved), with plain SGD so
    that parameter updates are linear in the directions."""
    from domainbed import algorithms, hparams_registry

    from domainbed_dge.experiments.timing import LoopDGE

    hparams = hparams_registry.default_hparams("DGE", "Debug28")
    hparams.update(dge_optimizer="sgd", dge_momentum=0.9, lr=0.01, dge_alpha=0.3, dge_weight_lr=2.0, dge_num_views=4)
    hparams.update(overrides)
    torch.manual_seed(0)
    cls = LoopDGE if name == "LoopDGE" else algorithms.get_algorithm_class(name)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cls(INPUT_SHAPE, NUM_CLASSES, num_domains, hparams)
    finally:
        torch.set_default_dtype(default_dtype)


def correlated_minibatches(seed, num_domains, dtype=torch.float32, batch=6):
    """Four domains, the third a perturbed copy of the first and the fourth of the
    second, so that specific gradients align and Eqs. 5-6 adjust some pairs; the first
    ``num_domains`` of them."""
    generator = torch.Generator().manual_seed(seed)
    base = [
        (
            torch.rand(batch, *INPUT_SHAPE, generator=generator),
            torch.randint(0, NUM_CLASSES, (batch,), generator=generator),
        )
        for _ in range(2)
    ]
    perturbed = [(x + 0.1 * torch.randn(x.shape, generator=generator), y) for x, y in base]
    return [(x.to(dtype), y) for x, y in base + perturbed][:num_domains]


def flat_parameters(algorithm):
    return torch.cat([p.detach().reshape(-1) for p in algorithm.trainable])


def update_both(engine, reference, batches, seed):
    """One update of each on ``batches``, with the same augmentations in SDG."""
    torch.manual_seed(seed)
    engine_results = engine.update(batches)
    torch.manual_seed(seed)
    reference_results = reference.update(batches)
    assert reference_results["dge_adjusted_pairs"] == engine_results["dge_adjusted_pairs"]
    return engine_results


def assert_same_state(engine, reference, tolerance):
    torch.testing.assert_close(flat_parameters(reference), flat_parameters(engine), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(
        reference.equilibrium_weights, engine.equilibrium_weights, rtol=tolerance, atol=tolerance
    )


@pytest.mark.domainbed
@pytest.mark.parametrize("update", ["sequential", "mean"])
@pytest.mark.parametrize("num_domains", [4, 1], ids=["mdg", "sdg"])
def test_loop_reference_gives_the_engine_update_in_float32(num_domains, update):
    engine, reference = (make(name, num_domains, dge_update=update) for name in ("DGE", "LoopDGE"))
    results = update_both(engine, reference, correlated_minibatches(0, num_domains), seed=100)
    assert_same_state(engine, reference, 1e-5)
    if num_domains > 1:
        assert results["dge_adjusted_pairs"] > 0
        assert not torch.equal(engine.equilibrium_weights, torch.ones(4))


@pytest.mark.domainbed
@pytest.mark.parametrize("num_domains", [4, 1], ids=["mdg", "sdg"])
def test_loop_reference_tracks_the_engine_over_steps_in_float64(num_domains):
    """Three updates: the weights carried across iterations must agree too."""
    engine, reference = (make(name, num_domains, torch.float64) for name in ("DGE", "LoopDGE"))
    for seed in range(3):
        update_both(engine, reference, correlated_minibatches(seed, num_domains, torch.float64), seed=100 + seed)
        assert_same_state(engine, reference, 1e-9)


@pytest.mark.domainbed
def test_loop_reference_tracks_the_engine_after_module_to():
    engine, reference = (make(name, 4).to(torch.float64) for name in ("DGE", "LoopDGE"))
    for seed in range(2):
        update_both(engine, reference, correlated_minibatches(seed, 4, torch.float64), seed=100 + seed)
        assert_same_state(engine, reference, 1e-9)


@pytest.mark.domainbed
@pytest.mark.parametrize("num_domains", [3, 1], ids=["mdg", "sdg"])
def test_autograd_rows_variant_gives_the_engine_update(num_domains):
    from domainbed import algorithms

    from domainbed_dge.experiments.timing import AutogradRowsDGE

    engine = make("DGE", num_domains)
    torch.manual_seed(0)
    variant = AutogradRowsDGE(INPUT_SHAPE, NUM_CLASSES, num_domains, engine.hparams)
    assert isinstance(variant, algorithms.get_algorithm_class("DGE"))
    for seed in range(2):
        batches = correlated_minibatches(seed, num_domains)
        torch.manual_seed(100 + seed)
        engine_results = engine.update(batches)
        torch.manual_seed(100 + seed)
        assert variant.update(batches) == engine_results
        assert torch.equal(variant._gradients.matrix, engine._gradients.matrix)
        assert torch.equal(variant._gradients.losses, engine._gradients.losses)
        assert_same_state(engine, variant, 0)


def test_layout_repeats_and_cuts_the_parameter_sizes():
    from domainbed_dge.experiments.timing import layout

    assert layout([3, 5], 8) == [3, 5]
    assert layout([3, 5], 12) == [3, 5, 3, 1]
    assert layout([3, 5], 2) == [2]


@pytest.mark.domainbed
@pytest.mark.parametrize(
    "setting, message",
    [({"views": 1}, "views = 1 is not allowed; allowed: an integer >= 2"),
     ({"params": 0}, "params = 0 is not allowed; allowed: an integer >= 1, or unset for the model's parameter count"),
     ({"model": "vit"}, "model 'vit' is not allowed; allowed: resnet18, resnet50")],
)
def test_bad_settings_are_refused_naming_the_value_and_what_is_allowed(setting, message):
    from domainbed_dge.experiments.timing import Settings

    with pytest.raises(ValueError) as error:
        Settings(**setting)
    assert str(error.value) == message


@pytest.mark.domainbed
def test_benchmark_smoke_run_reports_every_method(tmp_path, monkeypatch):
    from domainbed_dge.experiments.timing import METHODS
    from domainbed_dge.plugin import methods as registry

    output = tmp_path / "benchmark.json"
    # One thread: the run is tiny, and spinning thread pools make a shared CPU crawl.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_module(
        "domainbed_dge.benchmark",
        "--device", "cpu", "--model", "resnet18", "--image-size", "32", "--batch", "2", "--views", "2",
        "--warmup", "1", "--steps", "2", "--params", "4096", "--json", str(output),
        cwd=tmp_path,
    )
    report = json.loads(output.read_text())
    assert set(report["methods"]) == set(METHODS)
    for method in registry.METHODS:  # every entry, whatever its engine, on the same K B images as ERM
        assert report["methods"][method.name]["engine"] == method.engine
    timed = [*report["methods"].values(), report["views"], *report["equilibrate"]["parts"].values()]
    for entry in timed:
        assert len(entry["times_ms"]) == 2
        assert all(math.isfinite(t) and t > 0 for t in [entry["median_ms"], *entry["times_ms"]])
    assert report["methods"]["ERM"]["ratio_vs_erm"] == 1.0
    assert report["methods"]["DGE"]["peak_memory_bytes"] is None  # not measured on the CPU
    assert report["equilibrate"]["P"] == 4096 and report["equilibrate"]["bytes_moved"] == 3 * 2 * 4096 * 4
    assert "| DGE |" in result.stdout and "equilibrate" in result.stdout


@pytest.mark.domainbed
def test_variants_are_timed_when_asked_for(tmp_path, monkeypatch):
    output = tmp_path / "variants.json"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_module(
        "domainbed_dge.benchmark",
        "--device", "cpu", "--model", "resnet18", "--image-size", "16", "--batch", "2", "--views", "2",
        "--warmup", "0", "--steps", "1", "--params", "64", "--json", str(output),
        "--methods", "DGE-graphs", "DGE-autograd-graphs", "GradAvg-graphs",
        cwd=tmp_path,
    )
    report = json.loads(output.read_text())
    assert list(report["methods"]) == ["ERM", "DGE-graphs", "DGE-autograd-graphs", "GradAvg-graphs"]
    assert {r["engine"] for name, r in report["methods"].items() if name != "ERM"} == {"gradients"}
    assert report["methods"]["ERM"]["engine"] == "DomainBed"
    parts = report["equilibrate"]["parts"]
    assert parts["gram_statistics_eager"]["median_ms"] > 0 and parts["gram_statistics"]["median_ms"] > 0


@pytest.mark.domainbed
def test_profile_writes_the_summary_of_one_erm_and_one_gradavg_step(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_module(
        "domainbed_dge.benchmark",
        "--device", "cpu", "--model", "resnet18", "--image-size", "16", "--batch", "2", "--views", "3",
        "--warmup", "1", "--profile", str(tmp_path / "profile"),
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "profile" / "profile.json").read_text())
    assert report["command"].endswith(f"--profile {tmp_path / 'profile'}")
    methods = report["methods"]
    assert list(methods) == ["ERM", "GradAvg"]
    assert (methods["ERM"]["passes"], methods["GradAvg"]["passes"]) == (1, 3)
    for r in methods.values():
        assert r["wall_ms"] > 0 and 0 < r["host_ops_ms"] and r["host_ops"] > 0
        assert 0 < r["host_ms_per_pass"] * r["passes"] <= r["wall_ms"]
        assert (r["device_busy_ms"], r["device_kernels"], r["top_device_kernels"]) == (0, 0, [])  # the CPU
        assert r["top_host_ops"] and all(op["name"] != "forward-backward passes" for op in r["top_host_ops"])
    # Three passes of two images dispatch more operators than one pass of six.
    assert methods["GradAvg"]["host_ops"] > methods["ERM"]["host_ops"]
    markdown = (tmp_path / "profile" / "profile.md").read_text()
    assert "| ERM | DomainBed |" in markdown and "| GradAvg | gradients |" in markdown
    assert markdown in result.stdout
