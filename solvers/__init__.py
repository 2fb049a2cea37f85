"""Numerical solvers in torch: batched, device-agnostic, with no learning inside.

`solvers` never imports `sciml`.
"""
