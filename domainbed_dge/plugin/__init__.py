"""The DomainBed glue: the algorithms, their hyperparameters and views, the method
registry, and the patches that register them into DomainBed."""
