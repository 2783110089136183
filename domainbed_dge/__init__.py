"""Domain Gradient Equilibrium (DGE) for single-domain generalization, as a DomainBed plugin.

Importing this package is cheap and silent: it imports neither torch nor DomainBed.
The algorithms are registered into DomainBed by a start-up hook (see ``_startup``).
"""

__version__ = "0.1.0"
