"""Hard-constraint layers: the PDE solved inside the network (PI-HC), per subdomain expert (PI-HC-MoE),
and operator learning from the PDE alone on a grid with or without them."""

from sciml.constraints.hard import GridCondition, HardConstraint
from sciml.constraints.operator import (GRID_PROBLEMS, GridProblem, PhysicsOperator, get_grid_problem, periodic_velocity,
                                       physics_loss)

__all__ = ["GRID_PROBLEMS", "GridCondition", "GridProblem", "HardConstraint", "PhysicsOperator", "get_grid_problem", "periodic_velocity",
           "physics_loss"]
