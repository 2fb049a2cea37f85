import pytest
import torch

# Test tensors are small: one intra-op thread is faster than two and never oversubscribes
# the 2-core CI machine (measured: a Burgers solve ran 5x slower with 2 threads under load).
torch.set_num_threads(1)


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request) -> str:
    """Each device this machine has: on a GPU machine the test also runs on CUDA (real CUDA graphs, cuDNN)."""
    return request.param


@pytest.fixture
def data_root(tmp_path):
    """A private folder for generated dataset files."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def simulate(monkeypatch):
    """Off CUDA, check every replay of a captured step against the captured call (`graphs.SIMULATE`)."""
    from sciml.train import graphs

    monkeypatch.setattr(graphs, "SIMULATE", True)


@pytest.fixture
def captures(monkeypatch) -> list:
    """One entry per capture of any `CapturedStep` during the test (trainers and benchmarks keep theirs private)."""
    from sciml.train import graphs

    seen = []
    real = graphs.CapturedStep._capture
    monkeypatch.setattr(graphs.CapturedStep, "_capture", lambda self: seen.append(self) or real(self))
    return seen
