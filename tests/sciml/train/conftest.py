"""Fixtures for the CUDA-graph tests of both trainers."""

import pytest

from sciml.train import graphs


@pytest.fixture
def simulate(monkeypatch):
    """Off CUDA, check every replay of a captured step against the captured call (`graphs.SIMULATE`)."""
    monkeypatch.setattr(graphs, "SIMULATE", True)


@pytest.fixture
def captures(monkeypatch) -> list:
    """One entry per capture of any `CapturedStep` during the test (trainers keep theirs private)."""
    seen = []
    real = graphs.CapturedStep._capture
    monkeypatch.setattr(graphs.CapturedStep, "_capture", lambda self: seen.append(self) or real(self))
    return seen
