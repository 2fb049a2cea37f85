"""Reference PDE solvers that make sciml's datasets, and the random fields they start from."""
