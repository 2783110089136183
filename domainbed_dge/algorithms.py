"""DomainBed algorithms: DGE and the peers it is compared with, on one engine.

Importing this module registers the algorithms into ``domainbed.algorithms``; the
start-up hook does that as soon as DomainBed's module loads (see ``_startup``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from domainbed import algorithms as host
    from domainbed import networks
except ImportError as error:
    raise ImportError(
        f"domainbed_dge's algorithms need DomainBed, which failed to import ({error}). Make a checkout of "
        "facebookresearch/DomainBed importable with `python -m domainbed_dge.setup_domainbed /path/to/DomainBed`."
    ) from error

from domainbed_dge import hparams as registry
from domainbed_dge.combiners import (
    AgreementCombiner,
    Combiner,
    EquilibriumCombiner,
    GradAvgCombiner,
    PCGradCombiner,
    Plan,
)
from domainbed_dge.gradients import GradientMatrix
from domainbed_dge.gram import GradientGram, gram_statistics
from domainbed_dge.views import view_maker_for


class GradientEngine(host.Algorithm):
    """ERM's network, trained from per-domain gradients combined by a :class:`Combiner`.

    Domains: with one training environment (SDG), ``dge_num_views`` augmented views of
    its minibatch; with several (MDG), the environments' minibatches. Each domain gets
    one forward and backward pass into a row of the K x P gradient matrix; the
    combiner turns the matrix into the applied direction(s). A step whose losses or
    gradients are not finite is skipped and counted in ``skipped_nonfinite``.
    """

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        registry.validate(type(self).__name__, hparams)
        self.single_source = num_domains == 1
        self.num_gradient_domains = hparams["dge_num_views"] if self.single_source else num_domains
        self.featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            self.featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"]
        )
        self.network = torch.nn.Sequential(self.featurizer, self.classifier)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(self.trainable, hparams)
        # train.py seeds torch with the run's --seed just before building the algorithm.
        self.view_maker = view_maker_for(hparams, input_shape[0], run_seed=torch.initial_seed())
        if hparams["dge_view_sampling"] == "fixed":
            self._keep_fixed_view_seeds()
        self.combiner = self.make_combiner()
        self._gradients: GradientMatrix | None = None

    def make_combiner(self) -> Combiner:
        raise NotImplementedError

    def _keep_fixed_view_seeds(self) -> None:
        """``fixed`` views: the seeds are a buffer, so checkpoints carry them and a
        resumed run replays the same K views; the view maker keeps a host copy."""
        self.register_buffer("fixed_view_seeds", torch.tensor(self.view_maker.seeds, dtype=torch.int64))

        def reload_seeds(module, incompatible_keys):
            module.view_maker.seeds = module.fixed_view_seeds.tolist()

        self.register_load_state_dict_post_hook(reload_seeds)

    def combiner_state(self) -> dict[str, torch.Tensor]:
        """The algorithm's device tensors the combiner reads on the host each step
        (fetched under these names) and renews through ``Plan.state``."""
        return {}

    def domains(self, minibatches):
        """The (x, y) batches whose gradients are the rows of G."""
        if self.single_source:
            if len(minibatches) != 1:
                raise ValueError(f"SDG mode expects one training minibatch, got {len(minibatches)}")
            x, y = minibatches[0]
            return [(view, y) for view in self.view_maker.views(x, self.num_gradient_domains)]
        if len(minibatches) != self.num_gradient_domains:
            raise ValueError(f"expected {self.num_gradient_domains} minibatches (one per domain), got {len(minibatches)}")
        return minibatches

    def update(self, minibatches, unlabeled=None):
        gradients = self._gradient_matrix()
        losses = []
        for row, (x, y) in enumerate(self.domains(minibatches)):
            loss = F.cross_entropy(self.predict(x), y)
            gradients.backward_into_row(row, loss)
            losses.append(loss.detach())
        prepared = self.combiner.prepare(gradients.matrix)
        fetched = _to_host(
            {
                "gram": gram_statistics(gradients.matrix),
                "losses": torch.stack(losses),
                **self.combiner_state(),
                **prepared.fetch,
            }
        )
        gram = GradientGram.from_statistics(fetched.pop("gram"))
        losses = fetched.pop("losses")
        results = {"loss": float(losses.mean()), "skipped_nonfinite": 0.0}
        if not (torch.isfinite(losses).all() and gram.is_finite()):
            results["skipped_nonfinite"] = 1.0
            return results
        plan = self.combiner.plan(gram, fetched, prepared)
        self._take_steps(plan, gradients)
        results["grad_cosine"] = gram.mean_pairwise_cosine()
        results["direction_norm_ratio"] = _direction_norm_ratio(plan, gram)
        results.update(plan.diagnostics)
        return results

    def _take_steps(self, plan: Plan, gradients: GradientMatrix) -> None:
        # Host-to-device copies are non-blocking so that they add no synchronisation.
        device, dtype = gradients.matrix.device, gradients.matrix.dtype
        if plan.mixing is not None:
            for coefficients in plan.mixing.to(device, dtype, non_blocking=True):
                gradients.set_combination(coefficients)
                self.optimizer.step()
        else:
            gradients.set_direction(plan.direction)
            self.optimizer.step()
        state = self.combiner_state()
        for name, value in plan.state.items():
            state[name].copy_(value, non_blocking=True)

    def _gradient_matrix(self) -> GradientMatrix:
        if self._gradients is None or not self._gradients.fits(self.trainable, self.num_gradient_domains):
            self._gradients = GradientMatrix(self.trainable, self.num_gradient_domains)
        return self._gradients

    def predict(self, x):
        return self.network(x)


class DGE(GradientEngine):
    """Domain Gradient Equilibrium (paper, Alg. 1): decompose the domain gradients into
    invariant and specific parts (Eqs. 2-3), project conflicting specific parts off
    each other (Eqs. 5-6), reweight them towards equilibrium (Eqs. 7-8) and refine
    each domain's gradient (Eq. 9). The weights are state: ``equilibrium_weights``."""

    def make_combiner(self):
        # The weights live in a buffer so that state_dict() and .to() carry them.
        self.register_buffer("equilibrium_weights", torch.ones(self.num_gradient_domains))
        return EquilibriumCombiner(
            weights=self.hparams["dge_weights"], update=self.hparams["dge_update"], **equilibrium_options(self.hparams)
        )

    def combiner_state(self):
        return {"weights": self.equilibrium_weights}


def equilibrium_options(hparams) -> dict:
    """The keyword options of :func:`~domainbed_dge.equilibrium.equilibrate` that DGE's
    hyperparameters set."""
    return dict(
        alpha=hparams["dge_alpha"],
        weight_lr=hparams["dge_weight_lr"],
        weight_steps=hparams["dge_weight_steps"],
        adjust=hparams["dge_adjust"],
        reweight=hparams["dge_reweight"],
        adjust_against=hparams["dge_adjust_against"],
    )


class GradAvg(GradientEngine):
    """Gradient averaging over the same domains (paper, Table 8). With one clean view
    (``dge_num_views: 1``, ``dge_augment: none``) it is the paper's vanilla Baseline,
    trained with the engine's optimizer; with one augmented view, "Baseline + X"."""

    def make_combiner(self):
        return GradAvgCombiner()


class AgrSum(GradientEngine):
    """Agr-Sum (Mansilla et al., ICCV 2021): sum where all domain gradients agree in sign."""

    def make_combiner(self):
        return AgreementCombiner(noise=False)


class AgrRand(GradientEngine):
    """Agr-Rand (Mansilla et al., ICCV 2021): Agr-Sum with scaled noise on conflicts."""

    def make_combiner(self):
        return AgreementCombiner(noise=True)


class PCGrad(GradientEngine):
    """PCGrad (Yu et al., NeurIPS 2020): project conflicting domain gradients, then sum."""

    def make_combiner(self):
        return PCGradCombiner(self.hparams["pcgrad_order"], self.hparams["pcgrad_reduction"])


def _make_optimizer(parameters, hparams) -> torch.optim.Optimizer:
    if hparams["dge_optimizer"] == "sgd":
        return torch.optim.SGD(
            parameters, lr=hparams["lr"], momentum=hparams["dge_momentum"], weight_decay=hparams["weight_decay"]
        )
    return torch.optim.Adam(parameters, lr=hparams["lr"], weight_decay=hparams["weight_decay"])


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy small device tensors to the host in one transfer (the step's one sync)."""
    packed = torch.cat([t.detach().reshape(-1).double() for t in tensors.values()]).cpu()
    pieces = packed.split([t.numel() for t in tensors.values()])
    return {name: piece.view(t.shape) for (name, t), piece in zip(tensors.items(), pieces)}


def _direction_norm_ratio(plan: Plan, gram: GradientGram) -> float:
    """|applied direction, averaged over the step's updates| / |mean gradient|."""
    if plan.mixing is not None:
        norm = float(gram.norm_of_combination(plan.mixing.mean(dim=0)))
    else:
        norm = plan.direction_norm
    mean_norm = float(gram.mean_sq) ** 0.5
    return norm / mean_norm if mean_norm > 0 else 0.0


def register(module=host) -> None:
    """Add this module's algorithms to DomainBed's list and namespace (idempotent)."""
    for name in registry.ALGORITHMS:
        if not hasattr(module, name):
            setattr(module, name, globals()[name])
        if name not in module.ALGORITHMS:
            module.ALGORITHMS.append(name)


register()
