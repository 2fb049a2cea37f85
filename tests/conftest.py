import os

import pytest
import torch

# CI machines have 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def data_root(tmp_path):
    """A private folder for generated dataset files."""
    root = tmp_path / "data"
    root.mkdir()
    return root
