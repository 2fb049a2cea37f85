"""PDE families that `sciml generate` can make; each module registers itself in `FAMILIES`."""

from sciml.data.families import burgers, darcy, diffusion_sorption, navier_stokes, periodic1d  # noqa: F401
