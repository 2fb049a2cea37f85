import torch

from sciml.train.plots import plot_predictions


def test_a_3d_field_is_drawn_as_its_last_slice_and_more_dimensions_say_nothing_was_drawn(tmp_path):
    """FNO-3D's (n, C, x, y, t) fields drew nothing while sciml eval named the plot file."""
    x, y = torch.rand(2, 1, 8, 8, 5), torch.rand(2, 1, 8, 8, 5)
    assert plot_predictions(x, y, y + 0.1, tmp_path / "a.png") and (tmp_path / "a.png").stat().st_size > 0
    x6 = torch.rand(2, 1, 4, 4, 4, 3)
    assert not plot_predictions(x6, x6, x6, tmp_path / "b.png") and not (tmp_path / "b.png").exists()
