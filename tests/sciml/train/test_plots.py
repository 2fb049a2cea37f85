"""The PINN run's picture: grid detection and the triangulation of scattered points."""

import torch

from sciml.pde import get_problem
from sciml.train.plots import _as_grid, _triangulation, plot_pinn_fields


def test_shuffled_grid_points_reshape_to_their_grid():
    u0, u1 = torch.linspace(-1, 1, 7, dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64)
    x = torch.cartesian_prod(u0, u1)[torch.randperm(35, generator=torch.Generator().manual_seed(0))]
    a0, a1, order = _as_grid(x)
    f = (x[:, 0] + 10 * x[:, 1])[order].reshape(len(a0), len(a1))
    torch.testing.assert_close(f, u0[:, None] + 10 * u1[None, :], rtol=0, atol=0)
    assert _as_grid(x[:-1]) is None  # a point short: scattered


def test_scattered_lshape_nodes_are_triangulated_without_bridging_the_notch(tmp_path):
    problem = get_problem("poisson_lshape")
    x = problem.default_eval_points()
    tri = _triangulation(x)
    kept = torch.as_tensor(tri.triangles[~tri.mask], dtype=torch.long)
    centroids = x[kept].mean(dim=1)
    assert not ((centroids[:, 0] > 0.02) & (centroids[:, 1] > 0.02)).any()  # nothing drawn in the cut-out quadrant
    assert len(kept) > 0.9 * len(x)  # and the domain itself is covered (~2 triangles per node)
    ref = problem.reference_values(x)
    plot_pinn_fields(x, ref, 1.01 * ref, coords=problem.coords, outputs=problem.outputs, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_dimensional_problems_get_curves_and_three_dimensional_ones_no_picture(tmp_path):
    x = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None]
    ref = torch.sin(3 * x)
    plot_pinn_fields(x, ref, 1.01 * ref, coords=("x",), outputs=("u",), path=tmp_path / "1d.png")
    assert (tmp_path / "1d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x3 = torch.rand(20, 3, dtype=torch.float64)
    plot_pinn_fields(x3, x3[:, :1], x3[:, :1], coords=("x", "y", "t"), outputs=("u",), path=tmp_path / "3d.png")
    assert not (tmp_path / "3d.png").exists()
