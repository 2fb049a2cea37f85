import numpy as np
import pytest
import torch

from sciml.train.plots import plot_predictions


def test_a_3d_field_is_drawn_as_its_last_slice_and_more_dimensions_say_nothing_was_drawn(tmp_path):
    """FNO-3D's (n, C, x, y, t) fields drew nothing while sciml eval named the plot file."""
    x, y = torch.rand(2, 1, 8, 8, 5), torch.rand(2, 1, 8, 8, 5)
    assert plot_predictions(x, y, y + 0.1, tmp_path / "a.png") and (tmp_path / "a.png").stat().st_size > 0
    x6 = torch.rand(2, 1, 4, 4, 4, 3)
    assert not plot_predictions(x6, x6, x6, tmp_path / "b.png") and not (tmp_path / "b.png").exists()


def _drawn(monkeypatch):
    """The figures plot_predictions makes, kept open (matplotlib Agg) instead of saved."""
    import sciml.train.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_multi_step_outputs_show_the_last_step_of_the_first_field_on_the_truth_s_colour_scale(tmp_path, monkeypatch):
    """FNO-3D's (n, T, s, s) showed its first predicted step, truth and prediction each on its own colour scale: a
    prediction 100x too small looked like a match."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    pred = 0.01 * y.flip(1)  # nearly zero, and its first step is the truth's last
    figures = _drawn(monkeypatch)
    assert plot_predictions(x, y, pred, tmp_path / "a.png", ("u", "v", "u", "v"))  # two fields, time by time
    assert plot_predictions(x, y, pred, tmp_path / "b.png")  # no names: the last channel
    for fig, c, label in zip(figures, (2, 3), ("truth: u, step 2 of 2", "truth (channel 4 of 4)")):
        axes = [ax for ax in fig.axes if ax.images]  # not the colorbars
        assert [ax.get_title() for ax in axes[:4]] == ["input (channel 1 of 3)", label, "prediction", "|error|"]
        for i in range(2):
            given, truth, prediction, error = (ax.images[0] for ax in axes[4 * i:4 * i + 4])
            for image, shown in [(given, x[i, 0]), (truth, y[i, c]), (prediction, pred[i, c]),
                                 (error, (pred[i, c] - y[i, c]).abs())]:
                assert np.array_equal(np.asarray(image.get_array()), shown.T.numpy())
            lo, hi = y[i, c].min().item(), y[i, c].max().item()
            assert truth.get_clim() == prediction.get_clim() == pytest.approx((lo, hi))
            e = (pred[i, c] - y[i, c]).abs()
            assert error.get_clim() == pytest.approx((e.min().item(), e.max().item())), "the error keeps its own scale"
