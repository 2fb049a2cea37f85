import math

import pytest
import torch

from sciml.pde import Box, Disk, Interval, Polygon, Rectangle, unit_samples

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


# --- space-time sampling draws (x, t) jointly --------------------------------------------------
def _rect_face(x):  # faces of the unit square: 0 = x-lo, 1 = y-lo, 2 = x-hi, 3 = y-hi
    return torch.where(x[:, 0] == 0, 0, torch.where(x[:, 1] == 0, 1, torch.where(x[:, 0] == 1, 2, 3)))


@pytest.mark.parametrize("method", ["uniform", "sobol", "halton", "lhs", "pseudo"])
def test_spacetime_boundary_spreads_time_over_every_face(method):
    # formerly the space and the time draw were two sequences of the same QMC family: the x = 0
    # face of a square only got t ∈ [0.25, 0.5) (sobol), "uniform" gave corr(θ, t) = 1 on a disk
    x, nrm = Rectangle([0, 0], [1, 1]).with_time(0, 1).sample_boundary(1024, method, seed=0)
    assert bool((nrm[:, 2] == 0).all())
    cells = torch.zeros(4, 4)
    for f in range(4):
        t = x[_rect_face(x) == f, 2]
        cells[f] = torch.histc(t.float(), 4, 0, 1)
    chi2 = ((cells - 64) ** 2 / 64).sum().item()  # 15 dof: 99.9% quantile 37.7; the old sobol draw gave 3072
    assert chi2 < 37.7, (method, cells)
    assert abs(torch.corrcoef(torch.stack([x[:, 0], x[:, 2]]))[0, 1].item()) < 0.08

    xd, _ = Disk([0, 0], 1).with_time(0, 1).sample_boundary(1024, method, seed=0)
    theta = torch.atan2(xd[:, 1], xd[:, 0]) % (2 * math.pi)
    assert abs(torch.corrcoef(torch.stack([theta, xd[:, 2]]))[0, 1].item()) < 0.08
    h = torch.histogramdd(torch.stack([theta / (2 * math.pi), xd[:, 2]], -1).float(), bins=[4, 4], range=[0.0, 1.0, 0.0, 1.0]).hist
    assert ((h - 64) ** 2 / 64).sum().item() < 37.7, (method, h)


@pytest.mark.parametrize("method", ["uniform", "sobol", "halton", "pseudo"])
def test_spacetime_interior_of_a_disk_is_joint_in_x_and_t(method):
    x = Disk([0, 0], 1).with_time(0, 2).sample_interior(4096, method, seed=0)
    assert bool((x[:, :2].norm(dim=1) < 1).all() & (x[:, 2] >= 0).all() & (x[:, 2] <= 2).all())
    # "uniform" formerly gave corr(x, t) = 0.87; t must be spread evenly within every x-slab
    assert abs(torch.corrcoef(torch.stack([x[:, 0], x[:, 2]]))[0, 1].item()) < 0.05
    for lo in (-1.0, -0.5, 0.0, 0.5):
        t = x[(x[:, 0] >= lo) & (x[:, 0] < lo + 0.5), 2]
        share = torch.histc(t.float(), 4, 0, 2) / len(t)
        assert (share - 0.25).abs().max().item() < 0.06, (method, lo, share)


@pytest.mark.parametrize("method,tol", [("uniform", 0), ("sobol", 2), ("halton", 2), ("lhs", 24)])
def test_interval_spacetime_boundary_keeps_both_ends_evenly_in_time(method, tol):
    # a quality guard for the joint draw: both ends get half the points, spread evenly in t
    x, nrm = Interval(-1, 1).with_time(0, 1).sample_boundary(1024, method, seed=0)
    lo = x[:, 0] == -1
    assert set(x[:, 0].tolist()) == {-1.0, 1.0} and int(lo.sum()) == 512
    torch.testing.assert_close(nrm[:, 0], torch.where(lo, -1.0, 1.0).double())
    for side in (lo, ~lo):
        counts = torch.histc(x[side, 1].float(), 8, 0, 1)
        assert (counts - 64).abs().max().item() <= tol, (method, counts)


# --- box boundary: distinct points, faces ∝ area -------------------------------------------------
def test_box_uniform_boundary_is_an_even_lattice_per_face():
    # formerly column 0 chose both the face and a coordinate: 32 distinct points of 1024 in 2D
    x, nrm = Rectangle([0, 0], [2, 1]).sample_boundary(1200, "uniform", seed=0)
    assert len(torch.unique(x, dim=0)) == 1200
    faces = [[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]]  # lengths 1, 1, 2, 2
    counts = [int((nrm == torch.tensor(v, dtype=torch.float64)).all(1).sum()) for v in faces]
    assert counts == [200, 200, 400, 400]
    bottom = x[nrm[:, 1] == -1, 0].sort().values  # an even lattice: spacing 2/400
    torch.testing.assert_close(bottom.diff(), torch.full((399,), 2 / 400, dtype=torch.float64))

    b = Box([0, 0, 0], [2, 1, 1])
    x, nrm = b.sample_boundary(1000, "uniform", seed=0)
    assert len(torch.unique(x, dim=0)) == 1000 and bool(b.on_boundary(x).all())
    axis_counts = [int((nrm[:, j] != 0).sum()) for j in range(3)]  # x-faces area 1 each, y/z-faces area 2 each
    assert axis_counts == [200, 400, 400]


@pytest.mark.parametrize("method", ["sobol", "halton", "lhs", "pseudo"])
def test_box_boundary_faces_follow_area_and_coordinates_do_not_depend_on_face(method):
    x, nrm = Box([0, 0, 0], [2, 1, 1]).sample_boundary(4096, method, seed=1)
    assert len(torch.unique(x, dim=0)) == 4096
    share = torch.tensor([(nrm[:, j] != 0).double().mean().item() for j in range(3)], dtype=torch.float64)
    torch.testing.assert_close(share, torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64), atol=0.025, rtol=0)
    for j in range(3):  # on every face the free coordinates fill it evenly
        on = x[nrm[:, j] != 0]
        for k in range(3):
            if k != j:
                u = (on[:, k] - 0) / (2.0 if k == 0 else 1.0)
                counts = torch.histc(u.float(), 4, 0, 1) / len(u)
                assert (counts - 0.25).abs().max().item() < 0.05, (method, j, k, counts)


# --- CSG boundaries uniform in arc length ------------------------------------------------------------
@pytest.mark.parametrize("method", ["pseudo", "sobol"])
def test_nested_csg_boundary_is_uniform_in_arc_length(method):
    u1 = Rectangle([0, 0], [2, 1]) | Rectangle([1, 0], [3, 1])  # = [0, 3] × [0, 1]: perimeter 8 (bound 12)
    disk = Disk([10, 0.5], 8 / (2 * math.pi))                   # perimeter 8
    shape = u1 | disk
    x, nrm = shape.sample_boundary(20000, method, seed=0)
    assert x.shape == (20000, 2) and bool(shape.on_boundary(x).all())
    on_u1 = x[:, 0] < 5
    assert abs(on_u1.double().mean().item() - 0.5) < 0.015  # formerly 12075 : 7925
    # inside U1 the overlap 1 < x < 2 (length 2 of 8 on top and bottom) is not sampled twice
    mid = (x[:, 0] > 1) & (x[:, 0] < 2)
    assert abs(mid[on_u1].double().mean().item() - 0.25) < 0.015
    # a nested difference: the L-shape minus a disk of radius 0.25 around (−0.5, −0.5)
    hole = Disk([-0.5, -0.5], 0.25)
    lshape = (Rectangle([-1, -1], [1, 1]) - Rectangle([0, 0], [1, 1])) - hole
    x, _ = lshape.sample_boundary(8000, method, seed=0)
    assert bool(lshape.on_boundary(x).all())
    on_hole = ((x - torch.tensor([-0.5, -0.5], dtype=torch.float64)).norm(dim=1) - 0.25).abs() < 1e-9
    expected = 0.5 * math.pi / (8 + 0.5 * math.pi)
    assert abs(on_hole.double().mean().item() - expected) < 0.02


@pytest.mark.parametrize("method", ["uniform", "sobol"])
def test_csg_spacetime_boundary_is_joint_and_on_the_boundary(method):
    shape = (Rectangle([-1, -1], [1, 1]) - Rectangle([0, 0], [1, 1])).with_time(0, 2)
    x, nrm = shape.sample_boundary(4000, method, seed=0)
    assert bool(shape.space.on_boundary(x[:, :2]).all()) and bool((nrm[:, 2] == 0).all())
    for n in ([1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]):  # each normal direction: length 2 of 8
        side = (nrm[:, :2] == torch.tensor(n, dtype=torch.float64)).all(1)
        assert abs(side.double().mean().item() - 0.25) < 0.03
        share = torch.histc(x[side, 2].float(), 4, 0, 2) / int(side.sum())
        assert (share - 0.25).abs().max().item() < 0.05, (n, share)


# --- polygon ADF: finite gradients on the boundary -----------------------------------------------
def _adf_reference(p, x):  # the Sukumar–Srivastava formula, plain (fine away from ∂Ω)
    a, b, L = p.a, p.b, p.length
    d, e = x[:, None, :] - a, b - a
    f = (d[..., 0] * e[:, 1] - d[..., 1] * e[:, 0]) / L
    t = ((L / 2) ** 2 - ((x[:, None, :] - (a + b) / 2) ** 2).sum(-1)) / L
    phi = torch.sqrt(f**2 + ((torch.sqrt(t**2 + f**4) - t) / 2) ** 2)
    return 1.0 / (1.0 / phi).sum(-1)


@pytest.mark.parametrize("vertices", [LSHAPE, [[0.0, 0.0], [3.0, 0.4], [0.7, 2.3]]], ids=["lshape", "triangle"])
def test_polygon_adf_gradient_on_the_boundary_is_the_inward_normal(vertices):
    p = Polygon(vertices)
    # away from ∂Ω the values and gradients are the formula's
    xi = p.sample_interior(300, seed=1).requires_grad_()
    phi = p.adf(xi)
    ref = _adf_reference(p, xi)
    torch.testing.assert_close(phi, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(phi.sum(), xi)[0], torch.autograd.grad(ref.sum(), xi)[0], rtol=1e-9, atol=1e-12)
    # on ∂Ω (points exactly on an axis-parallel edge gave NaN; on a slanted edge, rounding to the
    # outside gave the outward normal): the interior limit, the inward unit normal
    xb, nb = p.sample_boundary(400, seed=0)
    corner = torch.cdist(xb, p.v).min(1).values < 0.05
    xb, nb = xb[~corner], nb[~corner]
    for dtype in (torch.float64, torch.float32):
        x = xb.to(dtype).requires_grad_()
        g = torch.autograd.grad(p.adf(x).sum(), x)[0]
        assert bool(g.isfinite().all())
        torch.testing.assert_close(g.double(), -nb, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    h = 1e-6  # one-sided finite difference into Ω
    fd = (p.adf(xb - h * nb) - p.adf(xb)) / h
    torch.testing.assert_close(fd, torch.ones_like(fd), atol=1e-4, rtol=0)
    # forward mode (jvp, used by hard-constraint transforms) agrees: ∂φ/∂n_out = −1
    _, dn = torch.func.jvp(p.adf, (xb,), (nb,))
    torch.testing.assert_close(dn, -torch.ones_like(dn), atol=1e-12, rtol=0)
    # at the vertices the gradient is finite
    v = p.v.clone().requires_grad_()
    assert bool(torch.autograd.grad(p.adf(v).sum(), v)[0].isfinite().all())


def test_hard_dirichlet_normal_derivative_on_polygon_boundary_is_finite():
    p = Polygon(LSHAPE)
    x = torch.tensor([[0.5, -1.0], [0.0, 0.5], [-1.0, 0.3], [0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    u = 2.0 + p.adf(x) * torch.sin(x[:, 0] + 2 * x[:, 1])  # u = g + φ·N
    du = torch.autograd.grad(u.sum(), x)[0]
    dn = (du * p.boundary_normal(x.detach())).sum(-1)
    torch.testing.assert_close(dn, -torch.sin(x[:, 0] + 2 * x[:, 1]).detach())  # ∂u/∂n = −N on ∂Ω


# --- polygon vertices ----------------------------------------------------------------------------------
def test_polygon_closed_ring_equals_the_open_one():
    open_, ring = Polygon([[0, 0], [1, 0], [1, 1], [0, 1]]), Polygon([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]])
    assert ring.length.tolist() == [1.0, 1.0, 1.0, 1.0]  # formerly a fifth edge of length 0: NaN normals
    x = torch.tensor([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.2], [0.5, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(ring.distance_to_boundary(x), torch.tensor([0, 0, 0, 0, 0.25], dtype=torch.float64))
    torch.testing.assert_close(ring.boundary_normal(x[:4]), open_.boundary_normal(x[:4]))
    _, nb = ring.sample_boundary(1000, "sobol", seed=0)
    assert bool(nb.isfinite().all())
    doubled = Polygon([[0, 0], [2, 0], [2, 0], [2, 1], [0, 1]])
    assert doubled.v.shape == (4, 2) and doubled.boundary_measure() == 6.0
    with pytest.raises(ValueError, match="at least 3 distinct vertices"):
        Polygon([[0, 0], [1, 0], [1, 0], [0, 0]])


# --- tolerances scale with the size of the coordinates -----------------------------------------------
@pytest.mark.parametrize("s", [1e4, 1e5])
def test_csg_far_from_the_origin_keeps_all_of_its_boundary(s):
    c = torch.tensor([3 * s, 2 * s], dtype=torch.float64)
    annulus = Disk(c.tolist(), s) - Disk(c.tolist(), 0.5 * s)
    x, nrm = annulus.sample_boundary(20000, "sobol", seed=0)
    inner = (x - c).norm(dim=1) < 0.75 * s
    assert abs(inner.double().mean().item() - 1 / 3) < 0.01  # formerly 0.25 (1e4) and 0.066 (1e5)
    torch.testing.assert_close(nrm[inner], -(x[inner] - c) / (0.5 * s))  # into the hole
    theta = torch.linspace(0, 6.28, 1000, dtype=torch.float64)
    rim = c + 0.5 * s * torch.stack([theta.cos(), theta.sin()], -1)
    assert bool(annulus.inside(rim).all()) and bool(annulus.on_boundary(rim, tol=1e-9 * s).all())
    # a polygon's edges count as inside wherever it lies
    tri = Polygon((torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.3, 1.0]]) * s + c).tolist())
    xb, _ = tri.sample_boundary(1000, "sobol", seed=0)
    assert bool(tri.inside(xb).all())


# --- "uniform" interior: the whole domain, no cut-off slab, no repeated nodes -------------------------
def test_uniform_interior_of_a_box_is_its_whole_lattice():
    # formerly a prefix of 1.2× too many lattice points: Interval(0, 1) with 1000 points ended at x = 0.822
    x = Interval(0, 1).sample_interior(1000, "uniform", seed=0)
    torch.testing.assert_close(x[:, 0].sort().values, (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000)
    for box, n in ((Rectangle([0, 0], [2, 1]), 1024), (Box([0, 0, 0], [2, 1, 1]), 1000)):
        x = box.sample_interior(n, "uniform", seed=0)  # 32² and 10³: the full lattice
        assert len(torch.unique(x, dim=0)) == n
        cols, counts = x[:, 0].unique(return_counts=True)  # every lattice column, equally full
        c = len(cols)
        torch.testing.assert_close(cols, (torch.arange(c, dtype=torch.float64) + 0.5) / c * 2)
        assert counts.tolist() == [n // c] * c, (box, counts)


def test_uniform_interior_of_other_shapes_is_even_and_distinct():
    lshape = Polygon([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]])  # area 3: x < 1 holds 2/3 of it
    x = lshape.sample_interior(3000, "uniform", seed=0)
    assert len(torch.unique(x, dim=0)) == 3000 and bool(lshape.inside(x).all())
    share = torch.histc(x[:, 0].float(), 4, 0, 2) / 3000  # expected 1/3, 1/3, 1/6, 1/6
    # formerly a prefix: 0.342, 0.333, 0.178, 0.146
    torch.testing.assert_close(share.double(), torch.tensor([1 / 3, 1 / 3, 1 / 6, 1 / 6], dtype=torch.float64), atol=0.01, rtol=0)
    # a disk needs more than one lattice: pooled draws with other seeds repeated the same nodes
    x = Disk([0, 0], 1).sample_interior(1000, "uniform", seed=0)
    assert len(torch.unique(x, dim=0)) == 1000
    assert abs(x[:, 0].mean().item()) < 0.01 and x[:, 0].max() > 0.95  # formerly mean x −0.0126
    # space-time over a polygon (one lattice in x, y, t) and its initial slice
    st = Polygon([[0, 0], [2, 0], [2, 2], [0, 2]]).with_time(0, 1)
    xt = st.sample_interior(2000, "uniform", seed=0)
    assert len(torch.unique(xt, dim=0)) == 2000 and xt[:, 0].max() > 1.85  # formerly 1.64
    cols, counts = xt[:, 0].unique(return_counts=True)  # 13³ nodes thinned evenly: every x column as full
    torch.testing.assert_close(cols, (torch.arange(13, dtype=torch.float64) + 0.5) / 13 * 2)
    assert (counts - 2000 / 13).abs().max() < 2, counts
    x0 = Polygon(LSHAPE).with_time(0, 1).sample_initial(1200, "uniform", seed=0)
    assert len(torch.unique(x0, dim=0)) == 1200 and bool((x0[:, 2] == 0).all())
    share = torch.histc(x0[:, 0].float(), 4, -1, 1) / 1200  # formerly 0.357, 0.326, 0.164, 0.153
    torch.testing.assert_close(share.double(), torch.tensor([1 / 3, 1 / 3, 1 / 6, 1 / 6], dtype=torch.float64), atol=0.015, rtol=0)


@pytest.mark.parametrize("make, message", [
    (lambda: Interval(0, math.inf), r"Box hi=\[inf\] must be finite"),  # sampled NaN points
    (lambda: Interval(math.nan, 1), r"Box lo=\[nan\] must be finite"),
    (lambda: Disk([0, 0], math.nan), "Disk radius must be a finite number > 0, got nan"),  # accepted
    (lambda: Disk([0, 0], math.inf), "Disk radius must be a finite number > 0, got inf"),
    (lambda: Disk([0, math.nan], 1.0), "Disk center must be finite"),
    (lambda: Polygon([[0, 0], [1, 0], [math.inf, 1]]), "Polygon vertices must be finite"),
    (lambda: Interval(0, 1).with_time(0, math.nan), "time interval needs finite t0 < t1"),
])
def test_non_finite_shapes_are_refused_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()
    assert Disk([0, 0], 2).r == 2.0 and Disk([0, 0], torch.tensor(0.5)).r == 0.5
