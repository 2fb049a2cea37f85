"""Datasets: HDF5 schema (`h5`), recipes and PDE families (`recipes`), generation, loading."""
