"""sciml: PDE surrogates in PyTorch.

Importing this package only defines names: heavy or noisy libraries (deepxde, neuralop,
h5py, matplotlib) are imported where they are used.
"""

__version__ = "0.1.0"
