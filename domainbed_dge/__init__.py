"""Domain Gradient Equilibrium (DGE) for single-domain generalization, as a DomainBed plugin.

    from domainbed_dge import equilibrate   # the paper's Eqs. 2-9 on a K x P gradient matrix

Importing this package is cheap and silent: it imports neither torch nor DomainBed
(``equilibrate`` is loaded on first use). The algorithms are registered into DomainBed
by a start-up hook (see ``_startup``). The layers: ``core`` (the math, pure torch),
``plugin`` (the DomainBed glue), ``experiments`` (sweeps, results, timing), and the
commands on top (``python -m domainbed_dge.<command>``).
"""

__version__ = "0.2.0"
__all__ = ["equilibrate"]


def __getattr__(name):
    if name == "equilibrate":
        from domainbed_dge.core.equilibrium import equilibrate

        return equilibrate
    raise AttributeError(f"module 'domainbed_dge' has no attribute {name!r}")
