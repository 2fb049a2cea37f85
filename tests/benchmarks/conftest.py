import pytest


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """Benchmarks write their results/*.json under tmp_path only (no $OUT copy), outside any device call."""
    import benchmarks.common as common

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.delenv(common.SESSION_DEADLINE_ENV, raising=False)
    return tmp_path
