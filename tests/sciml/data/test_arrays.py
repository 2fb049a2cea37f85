"""A user's own arrays as a dataset file: round trip through the loaders, training on it, refusals."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sciml.config import validate
from sciml.data import write_dataset
from sciml.data.h5 import DatasetError, read_info
from sciml.data.loading import load_splits
from sciml.train.schema import OperatorConfig
from sciml.train.trainer import evaluate_run, load_operator, train


def smooth_periodic(n: int, s: int, seed: int) -> np.ndarray:
    """n random sums of the first 4 Fourier modes on s periodic points."""
    rng = np.random.default_rng(seed)
    x = np.arange(s) / s
    k = np.arange(1, 5)
    a, b = rng.normal(size=(2, n, 4)) / k
    return (a[:, :, None] * np.sin(2 * np.pi * k[None, :, None] * x) + b[:, :, None] * np.cos(2 * np.pi * k[None, :, None] * x)).sum(1)


def antiderivative(a: np.ndarray) -> np.ndarray:
    """The periodic antiderivative with zero mean, spectrally: a linear operator an FNO represents exactly."""
    s = a.shape[-1]
    k = np.fft.fftfreq(s, 1 / s)
    return np.real(np.fft.ifft(np.fft.fft(a, axis=-1) / np.where(k == 0, np.inf, 2j * np.pi * k), axis=-1))


def test_static_and_time_varying_fields_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 8, 6))
    u = torch.randn(10, 5, 8, 6, dtype=torch.float64)  # torch in, any dtype: stored as float32
    times = np.linspace(0.0, 1.0, 5)
    path = write_dataset(tmp_path / "mine.h5", inputs={"a": a}, outputs={"u": u}, spatial_dims=2, times=times,
                         grid_kind="nodes", params={"nu": 0.1})
    assert path == tmp_path / "mine.h5" and not (tmp_path / "mine.h5.partial").exists()
    info = read_info(path)
    assert (info.n_samples, info.spatial_shape, info.grid_kind, info.params) == (10, (8, 6), "nodes", {"nu": 0.1})
    assert info.field("a").dims == ("x", "y") and info.field("u").dims == ("t", "x", "y")
    np.testing.assert_array_equal(info.grid["t"], times)
    np.testing.assert_array_equal(info.grid["y"], np.arange(6) / 5)
    _, train_split, test_split = load_splits(path, inputs=["a"], outputs=["u"], n_train=7, n_test=3,
                                             output_time=(1, 5))
    np.testing.assert_array_equal(train_split.x[:, 0].numpy(), a[:7].astype(np.float32))
    np.testing.assert_array_equal(test_split.y.numpy(), u[7:, 1:].numpy().astype(np.float32))


def test_an_fno_trains_on_user_arrays_from_a_config(tmp_path):
    s = 64
    a = smooth_periodic(96, s, seed=1)
    u = antiderivative(a)
    path = write_dataset(tmp_path / "antiderivative.h5", inputs={"a": a}, outputs={"u": u}, spatial_dims=1)
    raw = {"seed": 0, "data": {"path": str(path), "n_train": 80, "n_test": 16},
           "model": {"name": "fno", "modes": 8, "width": 16, "n_layers": 2},
           "optimizer": {"name": "adam", "lr": 5e-3}, "schedule": {"name": "cosine"},
           "training": {"epochs": 60, "batch_size": 16, "eval_every": 60, "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    run, final = train(validate(OperatorConfig, raw))
    print(f"test rel. L2 {final['test_rel_l2']:.4f}")
    assert final["test_rel_l2"] < 0.005  # measured 2026-11-26 (CPU): 0.0021; untrained, ~1
    again = evaluate_run(run.path, which="last", device="cpu")  # `sciml eval` reads the file by its path
    assert again[0]["rel_l2"] == pytest.approx(final["test_rel_l2"], rel=1e-5)
    # the trained operator on new inputs, raw in and raw out (its normalisers inside)
    operator = load_operator(run.path, which="last", device="cpu")
    fresh = smooth_periodic(8, s, seed=7)
    with torch.no_grad():
        pred = operator(torch.as_tensor(fresh, dtype=torch.float32)[:, None])[:, 0].double().numpy()
    exact = antiderivative(fresh)
    rel = np.linalg.norm(pred - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert rel.mean() < 0.01, rel  # measured 2026-11-26 (CPU): mean 0.0038, max 0.0089 on 8 new inputs
    with torch.no_grad():  # numpy float64 in: cast to the model's dtype (it raised TypeError / a dtype error)
        np.testing.assert_array_equal(operator(fresh[:, None])[:, 0].double().numpy(), pred)
        np.testing.assert_allclose(operator(fresh[0, None])[0].double().numpy(), pred[0], rtol=1e-5, atol=1e-6)  # one (in, *grid)
    with pytest.raises(ValueError, match=rf"fitted on 1 channel\(s\) of 1-d fields cannot apply to shape \(8, 2, {s}\)"):
        operator(np.stack([fresh, fresh], 1))
    # a batch without its channel axis read as one sample of 8 channels, and the error quoted (1, 8, s)
    with pytest.raises(ValueError, match=rf"got \(8, {s}\): a batch of 8 without its channel axis\? pass a\[:, None\]"):
        operator(fresh)
    with pytest.raises(ValueError, match=rf"got \({s},\): one sample without its channel axis\? pass a\[None\]"):
        operator(fresh[0])
    with pytest.raises(ValueError, match=r"channels last\? np.moveaxis\(a, -1, 1\)"):
        operator(fresh[:, :, None])


@pytest.mark.parametrize("change,message", [
    (dict(outputs={"u": np.zeros((5, 8))}), "same samples and grid"),
    (dict(inputs={"a": np.zeros((6, 2, 8, 8))}), "expected \\(n, \\*grid\\) or \\(n, T, \\*grid\\)"),
    (dict(inputs={"a": np.full((6, 8), np.nan)}), "NaN or infinite"),
    (dict(outputs={"a": np.zeros((6, 8))}), "appear in both"),
    (dict(times=[0.0, 1.0]), "no field has a time axis"),
    (dict(outputs={"u": np.zeros((6, 3, 8))}, times=[0.0, 1.0]), "times has shape"),
    (dict(coords={"x": np.arange(7)}), "the grid has 8 points"),
    (dict(grid_kind="staggered"), "grid_kind must be one of"),
    (dict(spatial_dims=4), "spatial_dims must be 1, 2 or 3"),
    (dict(inputs={"a": np.zeros((0, 8))}, outputs={"u": np.zeros((0, 8))}), "has no samples"),
    (dict(params={"nu": object()}), "params must be numbers, strings or lists"),
    (dict(inputs={"a": np.full((6, 8), 1e40)}), "beyond float32's range"),  # it was stored as inf
    (dict(inputs={"a": np.full((6, 8), 1e-45)}), "below float32's normal range.*Rescale it"),  # stored as zeros
    (dict(inputs={"a": np.full((6, 8), 1e-39)}), "below float32's normal range"),  # subnormals, 3 digits
    # samples last: the error blamed 'u', the right one, against the first field as the reference
    (dict(inputs={"a": np.zeros((8, 8, 6))}, outputs={"u": np.zeros((6, 8, 8))}, spatial_dims=2),
     r"fields differ in samples or grid: 'a' \(8, 8, 6\), 'u' \(6, 8, 8\)\. .*samples on the first axis.*samples "
     r"last in 'a'\? np.moveaxis\(a, -1, 0\)"),
    # a time axis last or first: the generic "fields differ" error, with no word of which axis to move
    (dict(outputs={"u": np.zeros((6, 8, 5))}),
     r"'a' \(6, 8\), 'u' \(6, 8, 5\)\..*; time last in 'u'\? np.moveaxis\(u, -1, 1\) puts it second, \(n, T, \*grid\)$"),
    (dict(outputs={"u": np.zeros((5, 6, 8))}),
     r"'u' \(5, 6, 8\)\..*; time first in 'u'\? np.swapaxes\(u, 0, 1\) puts the samples first, \(n, T, \*grid\)$"),
    (dict(inputs={"a": np.zeros((6, 8, 8))}, outputs={"u": np.zeros((6, 8, 8, 5))}, spatial_dims=2),
     r"time last in 'u'\? np.moveaxis\(u, -1, 1\)"),
    (dict(inputs={"a": np.zeros((6, 8, 10))}, outputs={"u": np.zeros((6, 10, 8))}, spatial_dims=2),  # a grid transposed
     r"samples and grid \(spatial_dims=2\)$"),  # is no time axis moved
    (dict(inputs={"a/b": np.zeros((6, 8))}), "field name 'a/b' cannot name an HDF5 dataset"),  # a broken file left
    # channels last: stored as a time series on a grid (8, 1) (or (8, 3)), then trained on one image row
    (dict(inputs={"a": np.zeros((6, 8, 8, 1))}, outputs={"u": np.zeros((6, 8, 8, 1))}, spatial_dims=2),
     r"field 'a' has shape \(6, 8, 8, 1\), read as grid \(8, 1\) .*looks like channels\. Channels last\? store each "
     r"channel as its own field: \{'a': x\[\.\.\., 0\]\}; a time axis goes second, \(n, T, \*grid\)"),
    (dict(inputs={"a": np.zeros((6, 8, 8, 3))}, outputs={"u": np.zeros((6, 8, 8))}, spatial_dims=2),
     r"read as grid \(8, 3\) .*\{'a0': x\[\.\.\., 0\], 'a1': x\[\.\.\., 1\], \.\.\.\} \(a grid axis of 3 "
     r"points: give its coordinates, coords=\{'y': \.\.\.\}\)"),
    (dict(inputs={"a": np.zeros((6, 8, 2))}, outputs={"u": np.zeros((6, 8, 2))}), r"read as grid \(2,\) .*Channels last"),
    (dict(inputs={"a": np.zeros((6, 1, 8))}, outputs={"u": np.zeros((6, 1, 8))}, spatial_dims=2),
     r"a grid axis of 1 point is no grid\. Drop a size-1 axis with np.squeeze"),
    (dict(outputs={"": np.zeros((6, 8))}), "field name '' cannot name"),
])
def test_bad_arrays_are_refused_naming_the_fix(tmp_path, change, message):
    kwargs = {**dict(inputs={"a": np.zeros((6, 8))}, outputs={"u": np.zeros((6, 8))}, spatial_dims=1), **change}
    with pytest.raises(DatasetError, match=message):
        write_dataset(tmp_path / "bad.h5", **kwargs)
    assert not list(tmp_path.iterdir()), "a refused call leaves no file behind"


def test_a_thin_grid_axis_is_written_when_its_coordinates_are_given(tmp_path):
    # 64 x 4 looks like channels last; coordinates of 4 points on y say it is a grid axis
    a = np.random.default_rng(0).normal(size=(3, 16, 4))
    info = read_info(write_dataset(tmp_path / "thin.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=2,
                                   coords={"y": np.linspace(0, 0.3, 4)}))
    assert info.spatial_shape == (16, 4)
    with pytest.raises(DatasetError, match=r"coords\['y'\] has shape \(3,\), the grid has 4 points"):  # not 'channels'
        write_dataset(tmp_path / "x.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=2, coords={"y": np.arange(3)})


def test_a_nodes_grid_written_as_periodic_is_named_when_it_will_not_subsample(tmp_path, recwarn):
    # Darcy-like arrays (both ends) left at the default grid_kind: "cannot be subsampled to 5; available: [9]"
    from sciml.config import validate
    from sciml.data.h5 import subsample_stride
    from sciml.train.schema import OperatorConfig
    from sciml.train.trainer import warn_model_set_for_another_grid

    a = np.zeros((4, 9, 9))
    info = read_info(write_dataset(tmp_path / "d.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=2))
    with pytest.raises(DatasetError, match=r"available: \[9\] .*default grid_kind 'periodic': write it with "
                                           r"grid_kind='nodes', which subsamples to \[9, 5, 3\]"):
        subsample_stride(info, 5)
    with pytest.raises(DatasetError) as err:  # 4 fits neither kind: no grid_kind advice
        subsample_stride(info, 4)
    assert "grid_kind" not in str(err.value)
    raw = {"data": {"path": str(info.path), "n_train": 2, "n_test": 2},
           "model": {"name": "fno", "modes": 2, "width": 4, "grid_embedding": "closed"}}
    with pytest.warns(UserWarning, match=r"periodic grid .* set up for a closed one \(model.grid_embedding: closed\): "
                                         r"if the arrays include both ends, write them with grid_kind='nodes'"):
        warn_model_set_for_another_grid(validate(OperatorConfig, raw), info)
    warn_model_set_for_another_grid(validate(OperatorConfig, {**raw, "model": {"name": "fno"}}), info)
    assert not [w for w in recwarn if "closed one" in str(w.message)]


def test_tiny_values_beside_normal_ones_are_written(tmp_path):
    # a tail below float32's normal range loses nothing that counts against the field's largest values
    a = np.concatenate([np.ones((6, 4)), np.full((6, 4), 1e-45)], axis=1)
    path = write_dataset(tmp_path / "d.h5", inputs={"a": a}, outputs={"u": a * 1e-30}, spatial_dims=1)
    assert read_info(path).n_samples == 6


def test_an_existing_file_is_kept_unless_overwritten(tmp_path):
    first = write_dataset(tmp_path / "d.h5", inputs={"a": np.zeros((4, 8))}, outputs={"u": np.ones((4, 8))}, spatial_dims=1)
    with pytest.raises(DatasetError, match="overwrite=True"):
        write_dataset(first, inputs={"a": np.ones((4, 8))}, outputs={"u": np.ones((4, 8))}, spatial_dims=1)
    assert read_info(first).n_samples == 4
    write_dataset(first, inputs={"a": np.ones((5, 8))}, outputs={"u": np.ones((5, 8))}, spatial_dims=1, overwrite=True)
    assert read_info(first).n_samples == 5


def test_a_physics_run_reads_the_grid_and_parameters_of_user_arrays(tmp_path):
    from sciml.train.physics import _dataset_params, spacetime_spacing

    s, x = 32, 2 * np.pi * np.arange(32) / 32
    path = write_dataset(tmp_path / "traj.h5", inputs={"u0": np.zeros((4, s))}, outputs={"u": np.zeros((4, 5, s))},
                         spatial_dims=1, times=[0.1, 0.2, 0.3, 0.4, 0.5], coords={"x": x}, params={"nu": 0.02})
    info = read_info(path)
    assert spacetime_spacing(info, ("x", "t"), None, "u") == pytest.approx((2 * np.pi / 32, 0.1))
    problem = SimpleNamespace(params={"nu": 1.0}, families=())
    assert _dataset_params(info, problem, "mine", {}) == {"nu": 0.02}


def test_a_cells_grid_coarsens_by_cell_averages_onto_the_coarse_centres(tmp_path):
    """Every k-th cell value would sit (k - 1)/2 fine cells off the coarse centre; block means sit on it.
    A periodic grid keeps every k-th point, which is its coarse grid."""
    s = 16
    grids = {"cells": lambda m: (np.arange(m) + 0.5) / m, "periodic": lambda m: np.arange(m) / m}
    for kind, grid in grids.items():
        fine = grid(s)
        plane = fine[:, None] + 2 * fine[None, :]  # linear: a cell's mean is its centre value
        path = write_dataset(tmp_path / f"{kind}.h5", inputs={"a": np.broadcast_to(plane, (4, s, s))},
                             outputs={"u": np.broadcast_to(plane, (4, 3, s, s))}, spatial_dims=2, grid_kind=kind,
                             times=np.arange(3))
        for m in (8, 4, 2):
            _, train_split, _ = load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, resolution=m,
                                            output_time=(0, 3))
            c = grid(m)
            np.testing.assert_allclose(train_split.y[0, 2].numpy(), c[:, None] + 2 * c[None, :], atol=1e-6,
                                       err_msg=f"{kind} at {m}")
            np.testing.assert_allclose(train_split.x[1, 0].numpy(), c[:, None] + 2 * c[None, :], atol=1e-6)


@pytest.mark.parametrize("window, message", [
    ((0, 10), "has 5 saved times; output_time=\\[0, 10\\] is outside them"),
    ((3, 3), "output_time=\\[3, 3\\]"),
    (7, "output_time=7"),
])
def test_a_time_selection_outside_the_saved_times_is_an_error_not_a_shorter_window(tmp_path, window, message):
    path = write_dataset(tmp_path / "t.h5", inputs={"a": np.zeros((4, 8))}, outputs={"u": np.zeros((4, 5, 8))},
                         spatial_dims=1, times=np.arange(5))
    with pytest.raises(DatasetError, match=message):
        load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, output_time=window)
    _, train_split, _ = load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, output_time=(1, 5))
    assert train_split.y.shape == (2, 4, 8)
    with pytest.raises(DatasetError, match="resolution=0 must be a positive grid size"):
        load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, resolution=0)


def test_a_pointwise_normaliser_needs_two_samples():
    from sciml.data.loading import Normalizer

    with pytest.raises(ValueError, match="at least 2 training samples"):
        Normalizer("pointwise", torch.randn(1, 1, 8))
    assert torch.isfinite(Normalizer("channel", torch.randn(1, 1, 8)).std).all()
    # its statistics broadcast one channel onto two: refused where any caller encodes (load_operator, the trainer)
    with pytest.raises(ValueError, match=r"fitted on 1 channel\(s\) of 1-d fields cannot apply to shape \(3, 2, 8\)"):
        Normalizer("channel", torch.randn(4, 1, 8)).encode(torch.randn(3, 2, 8))


def test_training_warns_when_a_non_periodic_file_meets_a_periodic_model(tmp_path):
    """write_dataset's grid_kind was said to decide how the FNO embeds the grid; nothing read it, and
    a "nodes" file trained an FNO with periodic coordinates and no padding without a word."""
    import warnings

    from sciml.train.trainer import warn_periodic_model_on_open_grid

    a = smooth_periodic(8, 33, seed=1)
    info = read_info(write_dataset(tmp_path / "nodes.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=1,
                                   grid_kind="nodes"))
    cfg = lambda model: validate(OperatorConfig, {"data": {"path": str(info.path), "n_train": 4, "n_test": 4}, "model": model})
    with pytest.warns(UserWarning, match=r"non-periodic grid \(grid_kind 'nodes'\).*set model.padding .* and "
                                         r"model.grid_embedding: closed"):
        warn_periodic_model_on_open_grid(cfg({"name": "fno"}), info)
    with pytest.warns(UserWarning, match="set model.coordinates: closed"):
        warn_periodic_model_on_open_grid(cfg({"name": "deeponet"}), info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_periodic_model_on_open_grid(cfg({"name": "fno", "padding": 0.1, "grid_embedding": "closed"}), info)
        warn_periodic_model_on_open_grid(cfg({"name": "deeponet", "coordinates": "closed"}), info)


def test_training_warns_when_cells_meet_a_model_set_for_other_points_and_the_other_way_round(tmp_path):
    """A "cells" file (diffusion-sorption) met by a model at its periodic defaults was advised padding only: its
    coordinates i/n, half a cell off the centres (i + 1/2)/n, went unmentioned. A model set for cells on another
    kind of file is warned of as one set for a closed grid on a periodic file is."""
    from sciml.train.trainer import warn_model_set_for_another_grid, warn_periodic_model_on_open_grid

    a = smooth_periodic(8, 16, seed=1)
    info = {kind: read_info(write_dataset(tmp_path / f"{kind}.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=1,
                                          grid_kind=kind)) for kind in ("periodic", "nodes", "cells")}
    cfg = lambda kind, model: validate(OperatorConfig, {"data": {"path": str(info[kind].path), "n_train": 4,
                                                                 "n_test": 4}, "model": model})
    with pytest.warns(UserWarning, match=r"non-periodic grid \(grid_kind 'cells'\).*set model.padding .* and "
                                         r"model.grid_embedding: cells$"):
        warn_periodic_model_on_open_grid(cfg("cells", {"name": "fno"}), info["cells"])
    with pytest.warns(UserWarning, match=r"set model.coordinates: cells$"):
        warn_periodic_model_on_open_grid(cfg("cells", {"name": "deeponet"}), info["cells"])
    # time, a space-time model's or a physics run's last axis, has no cell centres: a kind per axis (got no advice)
    physics = validate(OperatorConfig, {"data": {"path": str(info["cells"].path), "n_train": 4, "n_test": 4},
                                        "physics": {"problem": "diffusion_sorption"}, "model": {"name": "fno"}})
    for config in (cfg("cells", {"name": "fno3d"}), physics):
        with pytest.warns(UserWarning, match=r"set model.padding .* and model.grid_embedding: \[cells, closed\]$"):
            warn_periodic_model_on_open_grid(config, info["cells"])
    with pytest.warns(UserWarning, match=r"set up for a closed one \(model.grid_embedding: closed\): .* if they are cell "
                                         r"values, set model.grid_embedding: \[cells, closed\]$"):
        warn_model_set_for_another_grid(cfg("cells", {"name": "fno3d", "grid_embedding": "closed"}), info["cells"])
    with pytest.warns(UserWarning, match=r"set up for cell centres \(model.grid_embedding: \[cells, closed\]\): .* "
                                         r"set model.grid_embedding: periodic$"):
        warn_model_set_for_another_grid(cfg("periodic", {"name": "fno3d", "grid_embedding": ["cells", "closed"]}),
                                        info["periodic"])
    for kind, model, message in [
            ("periodic", {"name": "deeponet", "coordinates": "cells"},
             r"holds a periodic grid \(grid_kind 'periodic', write_dataset's default\) and model 'deeponet' is set up for "
             r"cell centres \(model.coordinates: cells\): if the arrays are cell values, write them with grid_kind='cells'; "
             r"if they are periodic, set model.coordinates: periodic$"),
            ("nodes", {"name": "fno", "grid_embedding": "cells", "padding": 0.1},
             r"holds a closed grid \(grid_kind 'nodes'\) and model 'fno' is set up for cell centres "
             r"\(model.grid_embedding: cells\): if the arrays are cell values, write them with grid_kind='cells'; if they "
             r"include both ends, set model.grid_embedding: closed$"),
            ("cells", {"name": "deeponet", "coordinates": "closed"},
             r"holds a grid of cells \(grid_kind 'cells'\) and model 'deeponet' is set up for a closed one "
             r"\(model.coordinates: closed\): if the arrays include both ends, write them with grid_kind='nodes'; if "
             r"they are cell values, set model.coordinates: cells$")]:
        with pytest.warns(UserWarning, match=message):
            warn_model_set_for_another_grid(cfg(kind, model), info[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind, model in [("cells", {"name": "fno", "padding": 0.1, "grid_embedding": "cells"}),
                            ("cells", {"name": "deeponet", "coordinates": "cells"}),
                            ("cells", {"name": "fno3d", "padding": 0.1, "grid_embedding": ["cells", "closed"]}),
                            ("cells", {"name": "fno3d", "padding": 0.1, "grid_embedding": "cells"}),  # t's kind is free
                            ("periodic", {"name": "fno3d", "grid_embedding": ["periodic", "closed"]}),
                            ("nodes", {"name": "deeponet", "coordinates": "closed"}),
                            ("periodic", {"name": "fno", "grid_embedding": "periodic"})]:
            warn_periodic_model_on_open_grid(cfg(kind, model), info[kind])
            warn_model_set_for_another_grid(cfg(kind, model), info[kind])


def test_a_time_selection_on_static_fields_is_an_error(tmp_path):
    a = smooth_periodic(8, 16, seed=1)
    path = write_dataset(tmp_path / "static.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=1)
    load_splits(path, inputs=["a"], outputs=["u"], n_train=4, n_test=4)  # the default (-1) is the last time, if any
    with pytest.raises(DatasetError, match=r"input_time=7 selects saved times, but \['a'\].*have no time axis"):
        load_splits(path, inputs=["a"], outputs=["u"], n_train=4, n_test=4, input_time=7)
    with pytest.raises(DatasetError, match=r"output_time=\[0, 5\] selects saved times"):
        load_splits(path, inputs=["a"], outputs=["u"], n_train=4, n_test=4, output_time=[0, 5])


def test_time_windows_of_several_fields_stack_time_major_for_rollouts(tmp_path):
    """A rollout model reads and writes its state one time at a time, [u_t, v_t, u_t+1, ...]: field-major
    stacking ([u_0..u_2, v_0..v_2]) fed it v_0 as u_1, and an exact one-step map scored rel. L2 1.12."""
    t = np.arange(4.0)[None, :, None] * np.ones((6, 4, 8))
    path = write_dataset(tmp_path / "uv.h5", inputs={"a": np.full((6, 8), -1.0)}, outputs={"u": t, "v": 100 + t},
                         spatial_dims=1, times=np.arange(4))
    _, train_split, _ = load_splits(path, inputs=["a", "u", "v"], outputs=["u", "v"], n_train=4, n_test=2,
                                    input_time=(0, 3), output_time=(3, 4))
    assert train_split.x[0, :, 0].tolist() == [-1, 0, 100, 1, 101, 2, 102]
    assert train_split.y[0, :, 0].tolist() == [3, 103]


def test_a_rollout_model_needs_its_state_to_be_the_output_fields(tmp_path):
    from sciml.config import ConfigError
    from sciml.train.physics import build_operator_model

    cfg = validate(OperatorConfig, {"model": {"name": "fno_time", "modes": 4, "width": 8},
                                    "data": {"normalize_inputs": "none", "normalize_outputs": "none"}})
    with pytest.raises(ConfigError, match="set model.state_channels: 2"):
        build_operator_model(cfg, 6, 2, 1, fields=(["u", "v"], ["u", "v"]))
    with pytest.raises(ConfigError, match=r"data.inputs \['v', 'u'\] must be data.outputs \['u', 'v'\]"):
        build_operator_model(cfg, 6, 2, 1, fields=(["v", "u"], ["u", "v"]))
    two = validate(OperatorConfig, {**cfg.model_dump(mode="json"), "model": {"name": "fno_time", "modes": 4, "width": 8,
                                                                             "state_channels": 2}})
    assert build_operator_model(two, 6, 2, 1, fields=(["u", "v"], ["u", "v"])).history == 3


def test_a_run_loads_from_another_folder_and_without_its_data_file(tmp_path, monkeypatch):
    """The checkpoint held data.path as typed ('d.h5'): loading from another folder, or once the file had moved,
    failed with 'does not exist', though the weights and normalisers are all in the checkpoint."""
    a = smooth_periodic(24, 32, seed=3)
    monkeypatch.chdir(tmp_path)
    write_dataset("d.h5", inputs={"a": a}, outputs={"u": antiderivative(a)}, spatial_dims=1)
    raw = {"data": {"path": "d.h5", "n_train": 16, "n_test": 8}, "model": {"name": "fno", "modes": 4, "width": 8},
           "training": {"epochs": 2, "batch_size": 8, "progress": False, "plot": False}, "output": {"root": "runs"}}
    run, _ = train(validate(OperatorConfig, raw))
    x = torch.as_tensor(a[:4, None], dtype=torch.float32)
    with torch.no_grad():
        before = load_operator(run.path, device="cpu")(x)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with torch.no_grad():
        torch.testing.assert_close(load_operator(tmp_path / run.path, device="cpu")(x), before, rtol=0, atol=0)
        (tmp_path / "d.h5").rename(elsewhere / "moved.h5")
        torch.testing.assert_close(load_operator(tmp_path / run.path, device="cpu")(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("kind, shape, resolution, coarse", [("periodic", (48, 64), 24, (24, 32)),
                                                             ("periodic", (48, 64), 12, (12, 16)),
                                                             ("nodes", (49, 65), 25, (25, 33)),
                                                             ("cells", (48, 64), 16, None)])  # stride 3 does not fit 64
def test_a_non_square_grid_subsamples_by_one_stride_on_every_axis(tmp_path, kind, shape, resolution, coarse):
    """'subsampling needs a square grid' refused a 48x64 file, though the models take 24x32 as they are."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, *shape))
    path = write_dataset(tmp_path / "ns.h5", inputs={"a": a}, outputs={"u": 2 * a}, spatial_dims=2, grid_kind=kind)
    info = read_info(path)
    if coarse is None:
        assert resolution not in info.resolutions()
        with pytest.raises(DatasetError, match=r"stored on a 48x64 grid \(resolution counts the first axis"):
            load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, resolution=resolution)
        return
    assert resolution in info.resolutions()
    _, train_split, _ = load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, resolution=resolution)
    assert tuple(train_split.x.shape[2:]) == coarse
    k = (shape[0] - (kind == "nodes")) // (resolution - (kind == "nodes"))
    np.testing.assert_allclose(train_split.x[0, 0].numpy(), a[0, ::k, ::k].astype(np.float32))


def test_training_on_unevenly_spaced_coordinates_warns(tmp_path):
    """x = (j/s)^3 trained bit-identically to an even grid, without a word: the models see sample j at j/s."""
    a = smooth_periodic(12, 16, seed=0)
    raw = {"data": {"n_train": 8, "n_test": 4},
           "model": {"name": "deeponet", "width": 8, "depth": 1, "basis": 4, "sensors": 16},  # the grid's 16 points
           "training": {"epochs": 1, "batch_size": 4, "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    for name, x, warns in (("even", 2 * np.pi * np.arange(16) / 16, False), ("cubed", (np.arange(16) / 16) ** 3, True)):
        path = write_dataset(tmp_path / f"{name}.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=1, coords={"x": x})
        cfg = validate(OperatorConfig, {**raw, "data": {**raw["data"], "path": str(path)}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(cfg)
        said = [str(w.message) for w in caught if "unevenly spaced" in str(w.message)]
        assert bool(said) == warns, said


def test_a_run_from_before_time_major_stacking_with_several_windowed_fields_is_refused(tmp_path):
    """Its channels were stacked field by field: read time by time, the model scored 4.2 instead of 0.05, silently."""
    from sciml.config import ConfigError
    from sciml.train.run import RunDir

    t = np.arange(3.0)[None, :, None] * np.ones((8, 3, 16))
    path = write_dataset(tmp_path / "uv.h5", inputs={"a": smooth_periodic(8, 16, seed=0)}, outputs={"u": t, "v": t + 1},
                         spatial_dims=1, times=np.arange(3))
    raw = {"data": {"path": str(path), "n_train": 4, "n_test": 4, "inputs": ["u", "v"], "outputs": ["a"],
                    "input_time": [0, 3]},
           "model": {"name": "fno", "modes": 4, "width": 8}, "training": {"epochs": 1, "batch_size": 4,
                                                                         "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    run, _ = train(validate(OperatorConfig, raw))
    load_operator(run.path, device="cpu")
    for which in ("last", "best"):  # as written before fbdddbf
        state = run.load_checkpoint(which)
        del state["io"]
        torch.save(state, run.checkpoint_path(which))
    with pytest.raises(ConfigError, match=r"stacked field by field.*train it again"):
        load_operator(run.path, device="cpu")
    with pytest.raises(ConfigError, match=r"stacked field by field"):
        train(validate(OperatorConfig, {**raw, "training": {**raw["training"], "epochs": 2}}), run=RunDir(run.path),
              resume=True)


def test_runs_with_several_output_fields_report_each_fields_error(tmp_path):
    """One figure pooled over the channels hid a field ten times smaller (0.034 pooled, 0.119 for the small one)."""
    a = smooth_periodic(24, 32, seed=5)
    path = write_dataset(tmp_path / "two.h5", inputs={"a": a}, outputs={"big": 100 * antiderivative(a), "small": a},
                         spatial_dims=1)
    raw = {"data": {"path": str(path), "n_train": 16, "n_test": 8}, "model": {"name": "fno", "modes": 4, "width": 8},
           "training": {"epochs": 3, "batch_size": 8, "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    run, final = train(validate(OperatorConfig, raw))
    operator = load_operator(run.path, which="last", device="cpu")
    x = torch.as_tensor(a[-8:, None], dtype=torch.float32)
    with torch.no_grad():
        pred = operator(x).double().numpy()
    for c, (name, truth) in enumerate((("big", 100 * antiderivative(a[-8:])), ("small", a[-8:]))):
        mine = (np.linalg.norm(pred[:, c] - truth, axis=1) / np.linalg.norm(truth, axis=1)).mean()
        assert final[f"test_rel_l2_of_{name}"] == pytest.approx(mine, rel=1e-4), name
    (row,) = evaluate_run(run.path, which="last", device="cpu")
    assert row["rel_l2_of_small"] == pytest.approx(final["test_rel_l2_of_small"], rel=1e-5)


def _own_file(path, dims='["sample", "x"]', u=None):
    """A file written with one's own h5py, as the schema describes, with /inputs/a's dims and /outputs/u's values
    (default random) as given."""
    import json

    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update({"schema": "sciml.dataset", "schema_version": "1.0", "name": "mine", "family": "user",
                        "n_samples": 6, "spatial_shape": [16], "grid_kind": "periodic", "complete": True})
        f["grid/x"] = np.arange(16) / 16
        a = f.create_dataset("inputs/a", data=rng.standard_normal((6, 16)))
        u = f.create_dataset("outputs/u", data=rng.standard_normal((6, 16)) if u is None else u)
        u.attrs["dims"] = json.dumps(["sample", "x"])
        if dims is not None:
            a.attrs["dims"] = dims
    return path


@pytest.mark.parametrize("dims, message", [
    (None, r"/inputs/a has no dims attribute"),
    ("sample, x", r"/inputs/a has dims='sample, x', not a list of axis names"),
    ('["sample"]', r"/inputs/a has 2 axes \(6, 16\) but dims names 1"),
])
def test_a_field_without_json_dims_is_refused_naming_the_field_and_the_format(tmp_path, dims, message):
    """A bare KeyError ('dims') or a JSON TypeError came out of read_info (a traceback from `sciml train`)."""
    with pytest.raises(DatasetError, match=message + r".*JSON text naming every axis.*\[\"sample\", \"x\"\]"):
        read_info(_own_file(tmp_path / "own.h5", dims))


@pytest.mark.parametrize("dims", [["sample", "x"], np.array([b"sample", b"x"])])
def test_dims_written_as_an_hdf5_string_array_read_as_the_json_list(tmp_path, dims):
    """What h5py writes for a Python list (variable-length strings; or fixed-length bytes): the same axes."""
    info = read_info(_own_file(tmp_path / "own.h5", dims))
    assert info.field("a").dims == ("x",)
    _, train_split, _ = load_splits(info.path, inputs=["a"], outputs=["u"], n_train=4, n_test=2)
    assert train_split.x.shape == (4, 1, 16)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])  # 1e39: finite in the file's float64, inf as float32
def test_non_finite_values_in_a_hand_written_file_are_refused_at_load_naming_the_field_and_sample(tmp_path, bad):
    """write_dataset refuses NaN, but a file written with h5py was loaded as it was: one NaN made the normaliser's
    mean and std NaN, and training exited 0 with 'test relative L2: nan' after skipping every step."""
    from sciml.data.loading import load_test

    u = np.random.default_rng(1).standard_normal((6, 16))
    u[1, 3] = u[4, 0] = bad
    path = _own_file(tmp_path / "own.h5", u=u)
    message = r"own.h5:/outputs/u holds NaN or infinite values .*in 1 of the 4 samples loaded, the first at sample 1: drop or repair"
    with pytest.raises(DatasetError, match=message):
        load_splits(path, inputs=["a"], outputs=["u"], n_train=4, n_test=2)
    with pytest.raises(DatasetError, match=r"/outputs/u .*in 1 of the 2 samples loaded, the first at sample 4"):
        load_test(path, inputs=["a"], outputs=["u"], n_test=2)  # `sciml eval`: the test rows, counted in the file
    raw = {"data": {"path": str(path), "n_train": 4, "n_test": 2, "resolution": None},
           "model": {"name": "fno", "modes": 4, "width": 4, "n_layers": 1},
           "training": {"epochs": 1, "batch_size": 2, "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    with pytest.raises(DatasetError, match="/outputs/u holds NaN or infinite values"):  # before any training step
        train(validate(OperatorConfig, raw))


def _drop(key):
    return lambda f: f.attrs.__delitem__(key)


@pytest.mark.parametrize("edit, message", [
    (_drop("n_samples"), r"lacks the root attribute\(s\) n_samples \(required: schema, complete, n_samples, spatial_shape"),
    (_drop("spatial_shape"), r"lacks the root attribute\(s\) spatial_shape \(required"),  # both were a KeyError
    # "its generation did not finish; run `sciml generate` again": not what a file of one's own needs
    (_drop("complete"), r"lacks the root attribute\(s\) complete \(required.*f.attrs\['complete'\] = True"),
    (lambda f: f.attrs.__setitem__("complete", False), r"is incomplete \(root attribute complete=.*False\): set it to True"),
    # fields at the root, not under inputs/ and outputs/: read as a file of no fields, refused later for other reasons
    (lambda f: (f.move("inputs/a", "a"), f.move("outputs/u", "u")),
     r"has no field under /inputs or /outputs \(at the root: a, u; move them, e.g. f.move\('a', 'inputs/a'\)\)"),
])
def test_a_hand_written_file_missing_part_of_the_layout_is_refused_naming_it(tmp_path, edit, message):
    import h5py

    path = _own_file(tmp_path / "own.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(DatasetError, match=message + r".*sciml.data.write_dataset.*datasets/README.md, section 'File schema'"
                       if "incomplete" not in message else message):
        read_info(path)


def test_a_file_with_fields_under_one_group_trains_what_the_config_names(tmp_path):
    """A rollout's input is its output field (configs/navier_stokes/fno2d.yaml: inputs [w], outputs [w]): a file
    holding only /outputs/u loaded and trained before, and a refusal of files without an input field broke it.
    Only the default selection needs a field in each group, and its refusal names data.inputs."""
    import h5py

    from sciml.train.run import RunDir
    from sciml.train.trainer import Trainer

    path = _own_file(tmp_path / "own.h5")
    with h5py.File(path, "a") as f:
        del f["inputs/a"]
        u = torch.as_tensor(f["outputs/u"][:], dtype=torch.float32)
    raw = {"data": {"path": str(path), "n_train": 4, "n_test": 2, "resolution": None, "inputs": ["u"], "outputs": ["u"]},
           "model": {"name": "fno", "modes": 4, "width": 4, "n_layers": 1}, "schedule": {"name": "none"},
           "training": {"epochs": 100, "batch_size": 2, "progress": False, "plot": False},
           "output": {"root": str(tmp_path / "runs")}}
    trainer = Trainer(validate(OperatorConfig, raw), RunDir.create(tmp_path / "runs", "splits"))
    for split, rows in ((trainer.train_split, slice(0, 4)), (trainer.test_split, slice(4, 6))):
        assert torch.equal(split.x, split.y) and torch.equal(split.y, u[rows, None])  # input and output: field u
    _, final = train(validate(OperatorConfig, raw))  # it was refused at read_info
    # the identity on random rows, learned from 4 samples: measured 0.289 after 100 epochs (1 epoch: 1.12); zero
    # predicts 1.0
    assert final["test_rel_l2"] < 0.5
    raw["data"]["inputs"] = None
    with pytest.raises(DatasetError, match=r"has no field under /inputs, where data.inputs takes its fields by default: "
                                           r"name them, e.g. data.inputs=\[u\]"):
        train(validate(OperatorConfig, {**raw, "output": {"root": str(tmp_path / "runs2")}}))


def test_the_schema_section_that_errors_point_to_exists():
    from pathlib import Path

    from sciml.data.h5 import HOW_TO_WRITE

    readme = Path(__file__).parents[3] / "datasets" / "README.md"
    section = HOW_TO_WRITE.split("section ")[1].strip("'")
    assert any(line.startswith(f"## {section} ") for line in readme.read_text().splitlines()), section


def test_the_readme_example_of_training_on_ones_own_data_from_python_runs(tmp_path, monkeypatch):
    """README's Python example under "Your own data", run as written on a small file (a smaller model and run added
    to its overrides, the file written as its bullet says)."""
    import re
    from pathlib import Path

    import sciml.config

    root = Path(__file__).parents[3]
    block = re.search(r"\*\*Your own data\*\*.*?```python\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    code = "\n".join(line[2:] for line in block.splitlines())  # the bullet's indent
    rng = np.random.default_rng(0)
    a = rng.uniform(3, 12, size=(12, 16, 16))
    write_dataset(tmp_path / "mine.h5", inputs={"a": a}, outputs={"u": a ** 2}, spatial_dims=2, grid_kind="nodes")
    (tmp_path / "configs").symlink_to(root / "configs")
    monkeypatch.chdir(tmp_path)
    real = sciml.config.load_config
    small = ["data.n_train=8", "data.n_test=4", "model.modes=4", "model.width=4", "model.projection_channels=8",
             "training.epochs=1", "schedule.name=none", "training.batch_size=4", "training.plot=false", "training.progress=false"]
    monkeypatch.setattr(sciml.config, "load_config", lambda schema, path, overrides=(): real(schema, path, [*overrides, *small]))
    scope = {"a_new": a[:3]}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["run"].path.resolve().parent == tmp_path.resolve() / "runs" and np.isfinite(scope["final"]["test_rel_l2"])
    assert scope["u_new"].shape == (3, 1, 16, 16) and torch.isfinite(scope["u_new"]).all()


def test_write_dataset_holds_no_copy_of_float32_fields(tmp_path, peak_mib):
    """astype(np.float32) copied float32 fields too, all at once, and np.abs made a temporary of each: 1.39x the
    arrays at peak (174 MiB for 125 MiB of fields)."""
    (mib,) = peak_mib(f"""
import numpy as np
from sciml.data import write_dataset
a = np.random.default_rng(0).standard_normal((2, 1000, 128, 128), dtype=np.float32)  # two fields, 125 MiB
print(extra(lambda: write_dataset({str(tmp_path / "big.h5")!r}, inputs={{"a": a[0]}}, outputs={{"u": a[1]}},
                                  spatial_dims=2))[1])
""")
    assert mib < 0.6 * 125, mib  # measured 2026-11-27: 49 MiB (h5py's and HDF5's own)


def test_the_advice_for_too_few_samples_fits_where_the_file_came_from(tmp_path):
    """"generate a larger dataset" was said of one's own file too, which no recipe can make larger."""
    from sciml.data.generate import planned_info
    from sciml.data.loading import check_selection
    from sciml.data.recipes import load_recipe

    own = read_info(_own_file(tmp_path / "own.h5"))  # 6 samples
    with pytest.raises(DatasetError, match=r"fewer than n_train \+ n_test = 7: lower them or use a file with more samples$"):
        check_selection(own, inputs=["a"], outputs=["u"], n_train=5, n_test=2)
    with pytest.raises(DatasetError, match=r"may not overlap\): lower them or use a file with more samples$"):
        check_selection(own, inputs=["a"], outputs=["u"], n_train=4, n_val=1, n_test=2)
    planned = planned_info(load_recipe("burgers", overrides=["n_samples=6"]), tmp_path)
    with pytest.raises(DatasetError, match=r"lower them or generate a larger dataset$"):
        check_selection(planned, inputs=["u0"], outputs=["u"], n_train=5, n_test=2)


def test_a_test_sample_with_a_zero_target_is_warned_of(tmp_path):
    """Its relative L2 divides by a zero norm: one such sample made the test rel. L2 8e10, without a warning."""
    a = smooth_periodic(12, 16, seed=0)
    u = antiderivative(a)
    u[10] = 0.0
    path = write_dataset(tmp_path / "zero.h5", inputs={"a": a}, outputs={"u": u}, spatial_dims=1)
    raw = {"data": {"path": str(path), "n_train": 8, "n_test": 4},
           "model": {"name": "fno", "modes": 4, "width": 4, "n_layers": 1},
           "training": {"epochs": 1, "batch_size": 4, "progress": False, "plot": False},
           "schedule": {"name": "none"}, "output": {"root": str(tmp_path / "runs")}}
    message = r"1 of the 4 test samples have a target of zeros only \(the first: sample 10 of the file\)"
    with pytest.warns(UserWarning, match=message):
        run, _ = train(validate(OperatorConfig, raw))
    with pytest.warns(UserWarning, match=message):
        evaluate_run(run.path, which="last", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_run(run.path, which="last", device="cpu", n_test=1)  # sample 11 alone: nothing to warn of


def test_an_extra_axis_is_time_only_when_times_are_given(tmp_path):
    """(40, 16, 16) fields with spatial_dims=1 were stored as 16 times on a 16-point line, and the darcy FNO config
    then trained a 1-D model on the last row of each 2-D field, silently."""
    a = np.random.default_rng(0).random((6, 16, 16))
    with pytest.raises(DatasetError, match=r"field 'a' \(6, 16, 16\).*no times were given.*pass spatial_dims=2.*"
                                           r"pass times="):
        write_dataset(tmp_path / "d.h5", inputs={"a": a}, outputs={"u": a + 1}, spatial_dims=1)
    assert not list(tmp_path.iterdir())
    assert read_info(write_dataset(tmp_path / "grid.h5", inputs={"a": a}, outputs={"u": a + 1},
                                   spatial_dims=2)).spatial_shape == (16, 16)
    timed = write_dataset(tmp_path / "timed.h5", inputs={"a": a[:, 0]}, outputs={"u": a}, spatial_dims=1,
                          times=np.arange(16))
    assert list(read_info(timed).grid["t"]) == list(range(16))


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_as_the_path_is_refused_naming_it_and_leaves_nothing(tmp_path, overwrite):
    """Without overwrite the message said "pass overwrite=True" (which then met a raw IsADirectoryError and left
    victim.partial behind)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    with pytest.raises(DatasetError, match=r"victim is a directory.*give a file path") as caught:
        write_dataset(victim, inputs={"a": np.zeros((4, 8))}, outputs={"u": np.ones((4, 8))}, spatial_dims=1,
                      overwrite=overwrite)
    assert "overwrite" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"] and not list(victim.iterdir())


def test_a_ragged_list_field_is_refused_naming_the_field(tmp_path):
    with pytest.raises(DatasetError, match=r"field 'a' is not a rectangular array"):
        write_dataset(tmp_path / "r.h5", inputs={"a": [[0.0] * 8, [0.0] * 7]}, outputs={"u": np.ones((2, 8))},
                      spatial_dims=1)
