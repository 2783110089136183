"""DomainBed algorithms: DGE and the peers it is compared with.

One class per entry of ``plugin.methods.METHODS``, each a subclass of its engine's
base (:data:`ENGINE_BASES`): DGE and the gradient peers are a :class:`GradientEngine`
with that method's combiner. Importing this module registers them into
``domainbed.algorithms``; the start-up hook does that as soon as DomainBed's module
loads (see ``_startup``).
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

from domainbed_dge.core.combiners import Plan, direction_norm_ratio
from domainbed_dge.core.cuda_graphs import CapturedPasses, cuda_graphs_apply
from domainbed_dge.core.gradients import GradientMatrix
from domainbed_dge.core.gram import GradientGram, gram_statistics
from domainbed_dge.plugin import methods
from domainbed_dge.plugin.checks import check_hparams
from domainbed_dge.plugin.host_algorithms import hosted
from domainbed_dge.plugin.hparams import HParamError
from domainbed_dge.plugin.mixstyle import MixStyleEngine
from domainbed_dge.plugin.optimizers import make_optimizer
from domainbed_dge.plugin.random_convolutions import RandomConvolutionObjective
from domainbed_dge.plugin.sharpness import SharpnessAware
from domainbed_dge.plugin.views import keep_fixed_view_seeds, view_maker_for


class GradientEngine(host.Algorithm):
    """ERM's network, trained from per-domain gradients combined by the method's combiner.

    Domains: with one training environment (SDG), ``dge_num_views`` views of its
    minibatch; with several (MDG), the environments' minibatches. Each domain gets
    one forward and backward pass into a row of the K x P gradient matrix; the
    combiner turns the matrix into the applied direction(s). On CUDA the K passes are
    replayed from one captured CUDA graph unless ``dge_cuda_graphs`` is false
    (``core.cuda_graphs``: same kernels, same numbers). The combiner's state
    (DGE's ``equilibrium_weights``) lives in buffers, so that ``state_dict()`` and
    ``.to()`` carry it. A step whose losses or gradients are not finite is skipped
    and counted in ``skipped_nonfinite``.
    """

    method: methods.Method

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        check_hparams(self.method.name, hparams)
        self.single_source = num_domains == 1
        self.num_gradient_domains = hparams["dge_num_views"] if self.single_source else num_domains
        self.featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            self.featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"]
        )
        self.network = torch.nn.Sequential(self.featurizer, self.classifier)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.trainable, hparams)
        # Views exist in SDG only. train.py seeds torch with the run's --seed before it
        # builds the data and the algorithm.
        if self.single_source and hparams["dge_input_normalization"] == "imagenet" and input_shape[0] != 3:
            raise HParamError(f"{self.method.name}: hyperparameter 'dge_input_normalization' = 'imagenet' is not "
                              f"allowed for {input_shape[0]}-channel images (ImageNet statistics are for 3); "
                              "allowed here: none")
        self.view_maker = (view_maker_for(hparams, input_shape[0], run_seed=torch.initial_seed())
                           if self.single_source else None)
        if self.single_source and hparams["dge_view_sampling"] == "fixed":
            keep_fixed_view_seeds(self)
        self.combiner = self.method.build(hparams)
        self.state_names = []
        for name, value in self.combiner.initial_state(self.num_gradient_domains).items():
            self.register_buffer(name, value)
            self.state_names.append(name)
        self._gradients: GradientMatrix | None = None
        self._captured = CapturedPasses() if hparams["dge_cuda_graphs"] else None

    def combiner_state(self) -> dict[str, torch.Tensor]:
        """The combiner's state: this module's buffers of those names."""
        return {name: getattr(self, name) for name in self.state_names}

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
        domains = self.domains(minibatches)
        if cuda_graphs_apply(self._captured is not None, gradients.matrix.device):
            self._captured(self._backward_passes, domains, key=self._capture_key(gradients))
        else:
            self._backward_passes(domains)
        prepared = self.combiner.prepare(gradients.matrix)
        statistics, state, fetched = _to_host(
            {"gram": gram_statistics(gradients.matrix), "losses": gradients.losses},
            self.combiner_state(),
            prepared.fetch,
        )
        gram = GradientGram.from_statistics(statistics["gram"])
        losses = statistics["losses"]
        results = {"loss": float(losses.mean()), "skipped_nonfinite": 0.0}
        if not (torch.isfinite(losses).all() and gram.is_finite()):
            results["skipped_nonfinite"] = 1.0
            return results
        plan = self.combiner.plan(gram, state, fetched, prepared)
        self._take_steps(plan, gradients)
        results["grad_cosine"] = gram.mean_pairwise_cosine()
        results["direction_norm_ratio"] = direction_norm_ratio(plan, gram)
        results.update(plan.diagnostics)
        return results

    def _backward_passes(self, domains) -> None:
        """One forward and backward pass per domain, into G's rows and losses (what
        ``dge_cuda_graphs`` captures and replays on CUDA)."""
        for row, (x, y) in enumerate(domains):
            self._gradients.backward_into_row(row, F.cross_entropy(self.predict(x), y))

    def _capture_key(self, gradients: GradientMatrix) -> tuple:
        """The storage the passes touch, and the modules' modes: a captured graph is
        replayed only while these stay the same (``Module.to`` moves parameters)."""
        tensors = [gradients.matrix, gradients.losses, *self.network.parameters(), *self.network.buffers()]
        return tuple(t.data_ptr() for t in tensors), tuple(m.training for m in self.network.modules())

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


def _to_host(*groups: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Copy groups of small device tensors to the host in one transfer (the step's one
    sync); each group comes back as its own dictionary, so names never collide."""
    tensors = [t for group in groups for t in group.values()]
    packed = torch.cat([t.detach().reshape(-1).double() for t in tensors]).cpu()
    pieces = iter(packed.split([t.numel() for t in tensors]))
    return [{name: next(pieces).view(t.shape) for name, t in group.items()} for group in groups]


#: The base class of each of ``methods.ENGINES``.
ENGINE_BASES = {"gradients": GradientEngine, "sharpness": SharpnessAware, "mixstyle": MixStyleEngine,
                "random_convolution": RandomConvolutionObjective}


def _algorithm_class(method: methods.Method) -> type:
    base = ENGINE_BASES[method.engine]
    return type(method.name, (base,), {"__doc__": method.summary, "method": method, "__module__": __name__})


for _method in methods.METHODS:
    globals()[_method.name] = _algorithm_class(_method)
del _method


def register(module=host) -> None:
    """Add this module's algorithms to DomainBed's list and namespace, make
    ``get_algorithm_class`` give DomainBed's own algorithms the plugin's keys
    (``host_algorithms.hosted``), and make an unknown name's error list the registered
    ones with the nearest (idempotent)."""
    for name in methods.NAMES:
        if not hasattr(module, name):
            setattr(module, name, globals()[name])
        if name not in module.ALGORITHMS:
            module.ALGORITHMS.append(name)
    if not getattr(module.get_algorithm_class, "__suggests__", False):
        module.get_algorithm_class = _suggesting(module.get_algorithm_class, module.ALGORITHMS)


def _suggesting(get_algorithm_class, registered: list[str]):
    def get_algorithm_class_or_suggest(algorithm_name):
        try:
            return hosted(get_algorithm_class(algorithm_name))
        except NotImplementedError:
            raise NotImplementedError(
                f"Algorithm not found: {algorithm_name}{methods.suggestion(algorithm_name, registered)} "
                f"Registered algorithms: {', '.join(registered)}"
            ) from None

    get_algorithm_class_or_suggest.__doc__ = get_algorithm_class.__doc__
    get_algorithm_class_or_suggest.__suggests__ = True
    return get_algorithm_class_or_suggest


register()
