import pytest
import torch

# Test tensors are small: one intra-op thread is faster than two and never oversubscribes
# the 2-core CI machine (measured: a Burgers solve ran 5x slower with 2 threads under load).
torch.set_num_threads(1)


@pytest.fixture
def data_root(tmp_path):
    """A private folder for generated dataset files."""
    root = tmp_path / "data"
    root.mkdir()
    return root
