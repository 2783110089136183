"""The paper's math in pure torch: Gram statistics, the equilibrium (Eqs. 2-9), the peers,
combiners and the gradient matrix. Imports neither DomainBed nor the rest of the package."""
