"""Hard-constraint layers: the PDE solved inside the network (PI-HC), per subdomain expert (PI-HC-MoE)."""

from sciml.constraints.hard import GridCondition, HardConstraint

__all__ = ["GridCondition", "HardConstraint"]
