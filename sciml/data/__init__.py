"""Datasets: HDF5 schema (`h5`), recipes and PDE families (`recipes`), generation, loading, and a
user's own arrays as a dataset file (`write_dataset`)."""

from .arrays import write_dataset

__all__ = ["write_dataset"]
