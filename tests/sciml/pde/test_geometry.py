import pytest
import torch

from sciml.pde import Disk, Interval, Polygon, Rectangle, unit_samples

LSHAPE = [[-1, -1], [1, -1], [1, 0], [0, 0], [0, 1], [-1, 1]]


@pytest.mark.parametrize("method", ["uniform", "pseudo", "sobol", "lhs", "halton"])
def test_unit_samples_in_cube_and_seeded(method):
    a, b = unit_samples(100, 3, method, seed=1), unit_samples(100, 3, method, seed=1)
    assert a.shape == (100, 3) and a.dtype == torch.float64
    assert bool(((a >= 0) & (a < 1)).all())
    torch.testing.assert_close(a, b)
    assert abs(a.mean().item() - 0.5) < 0.05


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="sobol"):
        unit_samples(4, 1, "sobl")


def test_lshape_csg_equals_polygon():
    csg = Rectangle([-1, -1], [1, 1]) - Rectangle([0, 0], [1, 1])
    poly = Polygon(LSHAPE)
    x = csg.sample_interior(2000, seed=0)
    assert bool(poly.inside(x).all()) and not bool(((x[:, 0] > 0) & (x[:, 1] > 0)).any())
    for shape in (csg, poly):
        xb, nb = shape.sample_boundary(800, seed=0)
        assert bool(shape.on_boundary(xb).all())
        assert torch.allclose(nb.norm(dim=1), torch.ones(800, dtype=torch.float64))
        # boundary length 8, each of the four normal directions covers length 2: uniform density
        for n in ([1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]):
            share = (nb == torch.tensor(n, dtype=torch.float64)).all(1).double().mean().item()
            assert abs(share - 0.25) < 0.04, (shape, n, share)
    # re-entrant edges: normals point into the removed square
    torch.testing.assert_close(csg.boundary_normal(torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)),
                               torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))


def test_disk_normals_and_union_interface():
    d = Disk([0.5, 0.0], 2.0)
    xb, nb = d.sample_boundary(50, seed=3)
    torch.testing.assert_close(nb, (xb - torch.tensor([0.5, 0.0], dtype=torch.float64)) / 2.0)
    u = Rectangle([0, 0], [1, 1]) | Rectangle([1, 0], [2, 1])
    assert not bool(u.on_boundary(torch.tensor([[1.0, 0.5]], dtype=torch.float64)).item())  # shared face is interior
    i = Disk([0, 0], 1) & Rectangle([0, -1], [1, 1])
    x = i.sample_interior(500, seed=0)
    assert bool((x[:, 0] >= 0).all() & (x.norm(dim=1) <= 1).all())


def test_polygon_adf_vanishes_on_boundary_and_is_positive_inside():
    p = Polygon(LSHAPE)
    xb, _ = p.sample_boundary(200, seed=0)
    assert p.adf(xb).abs().max() < 1e-12
    x = p.sample_interior(500, seed=0)
    assert bool((p.adf(x) > 0).all())


def test_spacetime_columns():
    st = Interval(-1, 1).with_time(0, 2)
    xb, nb = st.sample_boundary(10, seed=0)
    assert set(xb[:, 0].tolist()) == {-1.0, 1.0} and bool((nb[:, 1] == 0).all())
    x0 = st.sample_initial(10)
    assert bool((x0[:, 1] == 0).all())
    with pytest.raises(ValueError, match="t0 < t1"):
        Interval(0, 1).with_time(1, 0)
