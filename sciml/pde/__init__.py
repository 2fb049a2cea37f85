"""The Python API for a custom PDE: domain, residual, conditions, derivatives, sampling, problems.

    import math, torch
    from sciml.pde import Interval, Problem, Dirichlet, Initial

    problem = Problem(
        domain=Interval(-1, 1).with_time(0, 1),
        residual=lambda d, p: d.u_t + d.u * d.u_x - p.nu * d.u_xx,      # R[u] = 0
        conditions=[Dirichlet(0.0), Initial(lambda x: -torch.sin(math.pi * x[:, 0]))],
        params={"nu": 0.01 / math.pi},
    )

Train it with `sciml.train.pinn.fit(problem, ...)` or from a config (``task: pinn``).
"""

from sciml.pde.conditions import Condition, Data, Dirichlet, Initial, Neumann, Periodic, Robin
from sciml.pde.derivatives import Derivatives, ForwardDerivatives, GridDerivatives, Params, ReverseDerivatives
from sciml.pde.geometry import (Box, Difference, Disk, Geometry, Intersection, Interval, Polygon, Rectangle, SpaceTime,
                                Union, uniform_grid, unit_samples)
from sciml.pde.lagrangian import LagrangianPINN, convection_diffusion
from sciml.pde.losses import CausalWeights, CollocationSet, LossWeights, loss_terms, residual_magnitude, sample_collocation
from sciml.pde.nets import MLP
from sciml.pde.problem import PINNModel, Problem, Unknown
from sciml.pde.problems import PROBLEMS, get_problem
from sciml.pde.sampling import rad_sample, rar_add

__all__ = [
    "Box", "CausalWeights", "CollocationSet", "Condition", "Data", "Derivatives", "Difference", "Dirichlet", "Disk",
    "ForwardDerivatives", "Geometry", "GridDerivatives", "Initial", "Intersection", "Interval", "LagrangianPINN",
    "LossWeights", "MLP", "Neumann", "PINNModel", "PROBLEMS", "Params", "Periodic", "Polygon", "Problem", "Rectangle",
    "ReverseDerivatives", "Robin", "SpaceTime", "Union", "Unknown", "convection_diffusion", "get_problem", "loss_terms",
    "rad_sample", "rar_add", "residual_magnitude", "sample_collocation", "uniform_grid", "unit_samples",
]
