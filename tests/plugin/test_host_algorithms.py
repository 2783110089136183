"""DomainBed's own algorithms under the plugin's keys (``plugin.host_algorithms``):
unchanged at the defaults, the K views as their domains in SDG, and the comparison's
SGD for every optimiser they own."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import read_results, subprocess_env

pytestmark = pytest.mark.domainbed

algorithms = pytest.importorskip("domainbed.algorithms")
from domainbed import hparams_registry  # noqa: E402

from domainbed_dge.plugin.hparams import HParamError  # noqa: E402
from domainbed_dge.plugin.host_algorithms import LOCAL_OPTIMIZERS, hosted, is_domainbed_algorithm  # noqa: E402
from domainbed_dge.plugin.methods import NAMES  # noqa: E402

SHAPE, CLASSES = (1, 28, 28), 10
DOMAINBED_ALGORITHMS = [name for name in algorithms.ALGORITHMS if name not in NAMES]
#: What some of DomainBed's algorithms need that a CPU test machine may lack.
NEEDS = {"Fishr": ("backpack", importlib.util.find_spec("backpack") is not None),
         "TRM": ("CUDA (it calls .cuda())", torch.cuda.is_available())}
SDG_VIEWS_SGD = '{"dge_num_views": 3, "dge_optimizer": "sgd", "batch_size": 8}'


def hparams(algorithm: str, **changes) -> dict:
    return {**hparams_registry.default_hparams(algorithm, "RotatedMNIST"), **changes}


def build(cls, hparams: dict, num_domains: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return cls(SHAPE, CLASSES, num_domains, hparams)


def batches(count: int, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(123)
    return [(torch.rand(size, *SHAPE, generator=generator), torch.randint(0, CLASSES, (size,), generator=generator))
            for _ in range(count)]


def optimizers_of(algorithm) -> dict[str, torch.optim.Optimizer]:
    return {name: value for name, value in vars(algorithm).items() if isinstance(value, torch.optim.Optimizer)}


def skip_unless_runnable(name: str) -> None:
    if name in NEEDS and not NEEDS[name][1]:
        pytest.skip(f"{name} needs {NEEDS[name][0]}")


def test_get_algorithm_class_gives_domainbed_algorithms_under_their_own_names():
    for name in DOMAINBED_ALGORITHMS:
        cls = algorithms.get_algorithm_class(name)
        assert cls.__name__ == name and cls.domainbed_class is getattr(algorithms, name)
        assert issubclass(cls, getattr(algorithms, name)) and hosted(cls) is cls is hosted(getattr(algorithms, name))
    assert not is_domainbed_algorithm(algorithms.get_algorithm_class("DGE"))


@pytest.mark.parametrize("name,changes", [
    ("ERM", {}), ("Mixup", {}), ("Fish", {}), ("SagNet", {}), ("SelfReg", {}), ("CORAL", {}),
    ("IRM", {"irm_penalty_anneal_iters": 1}), ("VREx", {"vrex_penalty_anneal_iters": 1}),
])
def test_at_the_defaults_parameters_equal_domainbeds_own_bit_for_bit(name, changes):
    settings = hparams(name, **changes)
    ours = build(algorithms.get_algorithm_class(name), settings)
    after_ours = torch.get_rng_state()
    theirs = build(getattr(algorithms, name), settings)
    assert type(ours) is not type(theirs) and torch.equal(after_ours, torch.get_rng_state())  # no extra draw
    for minibatch in batches(3):
        after = []
        for algorithm in (ours, theirs):  # the same draws (Mixup's lambda comes from numpy)
            torch.manual_seed(7)
            np.random.seed(7)
            algorithm.update([minibatch])
            after.append((torch.get_rng_state(), np.random.get_state()[1]))
        assert torch.equal(after[0][0], after[1][0]) and (after[0][1] == after[1][1]).all()
    mine, domainbed = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(domainbed)
    for key in mine:
        assert torch.equal(mine[key], domainbed[key]), key
    assert {type(o) for o in optimizers_of(ours).values()} == {type(o) for o in optimizers_of(theirs).values()}


def test_erm_on_k_views_takes_gradavgs_step_on_the_same_views():
    """ERM's loss on the concatenated K views (equal sizes) is the mean of the K view
    losses, so with SGD (momentum 0) and GroupNorm (MNIST_CNN) its step is GradAvg's:
    one step of the mean view gradient."""
    views = dict(dge_num_views=3, dge_augment="rotation", dge_view_sampling="fixed", dge_optimizer="sgd",
                 dge_momentum=0.0, lr=0.1, weight_decay=0.0)
    erm = build(algorithms.get_algorithm_class("ERM"), hparams("ERM", **views))
    gradavg = build(algorithms.get_algorithm_class("GradAvg"), hparams("GradAvg", **views))
    assert erm.fixed_view_seeds.tolist() == gradavg.fixed_view_seeds.tolist()
    before = [p.detach().clone() for p in erm.network.parameters()]
    for p, q in zip(erm.network.parameters(), gradavg.network.parameters()):
        assert torch.equal(p, q)
    minibatch = batches(1, size=16)[0]
    erm.update([minibatch])
    gradavg.update([minibatch])
    moved = 0.0
    for p, q, p0 in zip(erm.network.parameters(), gradavg.network.parameters(), before):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-6)
        moved = max(moved, float((p - p0).detach().abs().max()))
    assert moved > 1e-3
    # ERM on the clean batch alone takes another step.
    plain = build(algorithms.get_algorithm_class("ERM"), hparams("ERM", **{**views, "dge_num_views": 0}))
    plain.update([minibatch])
    assert max(float((p - q).detach().abs().max()) for p, q in zip(plain.network.parameters(), erm.network.parameters())) > 1e-4


def test_fish_with_sgd_on_one_environment_is_erm_with_sgd_at_lr_times_meta_lr():
    """One inner SGD step on the clone, w_inner = w - lr * b (b: the momentum buffer,
    kept across steps in optimizer_inner_state), then w += meta_lr * (w_inner - w)."""
    settings = hparams("Fish", dge_optimizer="sgd", dge_momentum=0.9, lr=0.05, weight_decay=1e-3)
    fish = build(algorithms.get_algorithm_class("Fish"), settings)
    erm = build(algorithms.get_algorithm_class("ERM"),
                hparams("ERM", dge_optimizer="sgd", dge_momentum=0.9, lr=0.05 * settings["meta_lr"], weight_decay=1e-3))
    with torch.no_grad():
        for p, q in zip(erm.network.parameters(), fish.network.parameters(), strict=True):
            p.copy_(q)
    for minibatch in batches(3):
        fish.update([minibatch])
        erm.update([minibatch])
        assert isinstance(fish.optimizer_inner, torch.optim.SGD)
        assert set(fish.optimizer_inner_state["param_groups"][0]) >= {"momentum", "dampening", "nesterov"}
    for p, q in zip(erm.network.parameters(), fish.network.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,tolerance", [("GroupDRO", 0), ("CORAL", 0), ("MMD", 0), ("VREx", 0), ("Mixup", 1e-6)])
def test_with_one_environment_these_are_erm(name, tolerance):
    """One domain: GroupDRO's one weight is 1, CORAL's and MMD's penalties sum over no
    pair of domains, VREx's variance of one loss is 0, Mixup mixes the batch with
    itself (x = lam x + (1 - lam) x up to rounding). The README's table says so."""
    sgd = dict(dge_optimizer="sgd", dge_momentum=0.9)
    theirs = build(algorithms.get_algorithm_class(name), hparams(name, **sgd))
    erm = build(algorithms.get_algorithm_class("ERM"), hparams("ERM", **sgd))
    for minibatch in batches(3):
        theirs.update([minibatch])
        erm.update([minibatch])
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(erm.network.parameters(), build(
        algorithms.get_algorithm_class("ERM"), hparams("ERM")).network.parameters()))
    assert moved > 1e-3
    for p, q in zip(theirs.network.parameters(), erm.network.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=tolerance)


def test_with_one_environment_mldg_does_not_train_and_views_make_it():
    """split_meta_train_test pairs meta-train with meta-test domains: one domain gives no
    pair, so MLDG's loss is 0 and it never moves; with views as domains it trains."""
    for views, trains in ((0, False), (3, True)):
        mldg = build(algorithms.get_algorithm_class("MLDG"), hparams("MLDG", dge_num_views=views))
        before = [p.detach().clone() for p in mldg.network.parameters()]
        results = mldg.update(batches(1))
        assert (results["loss"] != 0.0) == trains
        assert any(not torch.equal(p, q) for p, q in zip(mldg.network.parameters(), before)) == trains


@pytest.mark.parametrize("name", DOMAINBED_ALGORITHMS)
def test_with_sgd_no_other_optimizer_remains(name):
    skip_unless_runnable(name)
    settings = hparams(name, dge_optimizer="sgd", dge_momentum=0.5)
    if name in LOCAL_OPTIMIZERS:
        with pytest.raises(HParamError, match=f"^{name}: hyperparameter 'dge_optimizer' = 'sgd' is not allowed: "):
            build(algorithms.get_algorithm_class(name), settings, num_domains=2)
        return
    algorithm = build(algorithms.get_algorithm_class(name), settings, num_domains=2)
    found = optimizers_of(algorithm)
    assert found and all(isinstance(o, torch.optim.SGD) for o in found.values()), found
    adam = build(getattr(algorithms, name), settings, num_domains=2)
    for attribute, optimizer in found.items():
        was = optimizers_of(adam)[attribute]
        if not isinstance(was, torch.optim.SGD):  # DomainBed's own SGD stays as DomainBed builds it
            assert all(group["momentum"] == 0.5 for group in optimizer.param_groups), attribute
        assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in was.param_groups]
        assert [len(g["params"]) for g in optimizer.param_groups] == [len(g["params"]) for g in was.param_groups]


@pytest.mark.parametrize("name", ["IRM", "VREx", "SagNet", "Fish"])
def test_sgd_stays_sgd_through_updates_and_the_penalty_anneal(name):
    anneal = {"IRM": {"irm_penalty_anneal_iters": 1}, "VREx": {"vrex_penalty_anneal_iters": 1}}.get(name, {})
    algorithm = build(algorithms.get_algorithm_class(name),
                      hparams(name, dge_optimizer="sgd", dge_momentum=0.5, **anneal), num_domains=2)
    first = dict(optimizers_of(algorithm))
    for a, b in zip(batches(3), batches(3)[::-1]):
        algorithm.update([a, b])
    found = optimizers_of(algorithm)
    assert found and all(type(o) is torch.optim.SGD and o.param_groups[0]["momentum"] == 0.5 for o in found.values())
    if anneal:  # DomainBed re-created its optimizer at the anneal step, and got SGD
        assert found["optimizer"] is not first["optimizer"]


def test_an_optimizer_the_plugin_cannot_reach_stops_training_rather_than_train_with_adam():
    algorithm = build(algorithms.get_algorithm_class("ERM"), hparams("ERM", dge_optimizer="sgd"))
    algorithm.spare = [torch.optim.Adam(algorithm.network.parameters())]
    with pytest.raises(RuntimeError, match="ERM: spare is a Adam while dge_optimizer is 'sgd'"):
        algorithm.update(batches(1))


def _optimizer_classes() -> set[str]:
    from domainbed.lib import misc

    names = {n for n, c in vars(torch.optim).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)}
    return names | {n for n, c in vars(misc).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)}


def test_local_optimizers_are_the_algorithms_that_build_one_outside_an_attribute():
    """Reads DomainBed's source: every optimiser other than SGD is built as the value
    of ``self.<name> = ...`` or returned to such an assignment (SagNet's ``opt``),
    except in the classes of LOCAL_OPTIMIZERS."""
    classes, outside = _optimizer_classes(), set()
    tree = ast.parse(inspect.getsource(algorithms))
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        for statement in ast.walk(cls):
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
                if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                    continue
            for call in (n for n in ast.iter_child_nodes(statement) if isinstance(n, ast.Call)):
                name = ast.unparse(call.func).split(".")[-1]
                if name in classes and name != "SGD" and not isinstance(statement, ast.Return):
                    outside.add(cls.name)
    assert outside == set(LOCAL_OPTIMIZERS)


def test_views_in_mdg_one_view_and_misspelled_keys_are_refused_clearly():
    erm = algorithms.get_algorithm_class("ERM")
    with pytest.raises(HParamError, match="'dge_num_views' = 3 is not allowed with 2 training environments"):
        build(erm, hparams("ERM", dge_num_views=3), num_domains=2)
    with pytest.raises(HParamError, match="'dge_num_views' = 1 is not allowed; allowed: 0 .* 1 is refused: one view"):
        build(erm, hparams("ERM", dge_num_views=1))
    with pytest.raises(HParamError, match="'dge_num_vews' is not one of ERM's; did you mean 'dge_num_views'"):
        build(erm, hparams("ERM", dge_num_vews=3))
    with pytest.raises(HParamError, match="'dge_input_normalization' = 'imagenet' is not allowed for 1-channel"):
        build(erm, hparams("ERM", dge_num_views=2, dge_input_normalization="imagenet"))
    build(erm, {**hparams("ERM"), "not_a_plugin_key": 1})  # DomainBed ignores keys it does not know


@pytest.mark.parametrize("name", ["Mixup", "Fish", "SelfReg", "SagNet", "IRM", "VREx", "CORAL"])
def test_train_py_runs_views_as_domains_with_sgd_and_model_pkl_loads(train, name):
    from domainbed_dge.experiments.records import load_runs

    output = train(name, "--hparams", SDG_VIEWS_SGD)
    records = read_results(output)
    assert [r["step"] for r in records] == [0, 1] and records[-1]["hparams"]["dge_num_views"] == 3
    assert [run.method for run in load_runs(str(output)).runs] == [f"{name} (views as domains)"]
    saved = torch.load(output / "model.pkl", weights_only=False)
    model = algorithms.get_algorithm_class(name)(
        saved["model_input_shape"], saved["model_num_classes"], saved["model_num_domains"], saved["model_hparams"])
    loaded = model.load_state_dict(saved["model_dict"], strict=False)
    # DomainBed's Fish registers its clone, network_inner, at its first update: a fresh
    # Fish, DomainBed's own too, has no such keys.
    assert loaded.missing_keys == [] and all(key.startswith("network_inner.") for key in loaded.unexpected_keys)
    assert bool(loaded.unexpected_keys) == (name == "Fish")
    assert saved["model_num_domains"] == 1 and model.views_as_domains == 3


def test_collect_results_labels_views_as_domains_and_a_variant_name_wins(train):
    views = train("Mixup", "--hparams", SDG_VIEWS_SGD, name="views")
    train("Mixup", "--hparams", json.dumps({**json.loads(SDG_VIEWS_SGD), "sweep_variant": "Mixup, my row"}),
          name="named")
    result = subprocess.run([sys.executable, "-m", "domainbed_dge.collect_results", "--input_dir", str(views.parent)],
                            capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Mixup (views as domains)" in result.stdout and "Mixup, my row" in result.stdout


def test_train_py_refuses_views_in_mdg_and_a_misspelled_key(train):
    mdg = train("Mixup", "--hparams", '{"dge_num_views": 3}', test_envs=("4", "5"), name="mdg", check=False)
    assert mdg.returncode != 0
    assert "'dge_num_views' = 3 is not allowed with 4 training environments" in mdg.stdout + mdg.stderr
    typo = train("Mixup", "--hparams", '{"dge_optimiser": "sgd"}', name="typo", check=False)
    assert typo.returncode != 0
    assert "'dge_optimiser' is not one of Mixup's; did you mean 'dge_optimizer'?" in typo.stdout + typo.stderr
