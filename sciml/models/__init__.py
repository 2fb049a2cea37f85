"""Neural operators and their registry: FNO family, DeepONet, any ``neuralop`` model by name.

``build_model(name, in_channels=..., out_channels=..., n_dims=..., **options)`` is the one way a
config builds a model; see `sciml.models._registry` for the contract and the optional
``prepare(train_inputs, train_outputs)`` hook.
"""

from functools import partial

from ._registry import MODELS, build_model, check_model, neuralop_model
from .deeponet import DeepONet
from .fno import FNO, FNO2dTime, FNO3dSpaceTime, count_parameters
from .spectral import SpectralConv

MODELS.add("fno", FNO, description="Fourier neural operator on 1-3D grids: lifting, spectral + pointwise layers, projection; "
           "domain padding for non-periodic data", source="Li et al., ICLR 2021")
MODELS.add("fno2d_time", FNO2dTime, description="FNO-2D for Navier-Stokes: the last `history` steps as channels -> the next "
           "step, rolled out over the output steps", source="Li et al., ICLR 2021 (FNO-2D, autoregressive)")
# the same model on any number of grid dimensions (the trainer passes the data's): a name that does not say 2D
MODELS.add("fno_time", FNO2dTime, description="FNO autoregressive in time on any grid (1D: Kuramoto-Sivashinsky, KdV)",
           source="Li et al., ICLR 2021 (FNO-2D, autoregressive)")
MODELS.add("deeponet", DeepONet, description="Unstacked DeepONet: branch (MLP or CNN on sensors) x trunk (MLP on coordinates, "
           "or POD modes of the training outputs)", source="Lu et al., Nat. Mach. Intell. 2021; POD trunk: Lu et al., CMAME 2022")
MODELS.add("fno3d", FNO3dSpaceTime, description="FNO-3D over (x, y, t) for Navier-Stokes: the input steps repeated along t, "
           "all output steps at once", source="Li et al., ICLR 2021 (FNO-3D, space-time)")


def _deq_net(**kwargs):
    from .deq import DEQNet  # imported on use: it pulls in the solvers package

    return DEQNet(**kwargs)


MODELS.add("deq", _deq_net, description="Convolutional deep-equilibrium operator (sciml.models.deq.DEQNet)",
           source="Bai et al., NeurIPS 2019")


def _pinn_mlp(*, in_channels: int, out_channels: int, n_dims: int | None = None, **kwargs):
    """Pointwise MLP over coordinates (n, in_channels) -> (n, out_channels); n_dims is unused."""
    from sciml.pde.nets import MLP  # imported on use: sciml.pde is a sibling package

    return MLP(in_channels, out_channels, **kwargs)


MODELS.add("pinn_mlp", _pinn_mlp, description="PINN MLP with periodic / Fourier-feature embeddings, optionally modified "
           "(gated) and with factorised weights (sciml.pde.nets.MLP)",
           source="Raissi et al. 2019; Tancik et al. 2020; Dong & Ni 2021; Wang, Teng & Perdikaris 2021; Wang et al. 2022")

for _name in ("FNO", "TFNO"):
    MODELS.add(f"neuralop.{_name}", partial(neuralop_model, _name),
               description=f"neuralop.models.{_name} (any neuralop.models class works as 'neuralop.<Class>')",
               source="neuraloperator 2.0")

__all__ = ["DeepONet", "FNO", "FNO2dTime", "FNO3dSpaceTime", "MODELS", "SpectralConv", "build_model", "check_model", "count_parameters",
           "neuralop_model"]
