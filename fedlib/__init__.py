"""fedlib: federated learning for COVID-19 chest X-rays (Liu et al., 2020), reproduced."""

__version__ = "0.1.0"
