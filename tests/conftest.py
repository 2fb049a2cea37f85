import importlib.util
import sys
from pathlib import Path

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


_PEAK_PRELUDE = '''
def extra(make):
    """make()'s result and the MiB its peak RSS rose above the RSS before it (Linux /proc)."""
    rss = lambda key: int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
    before = rss("VmRSS")
    out = make()
    return out, rss("VmHWM") - before
'''


@pytest.fixture
def peak_mib():
    """Runs Python `code` in a fresh process (one thread) where `extra(make)` measures the peak memory `make()`
    adds, and returns the numbers its last printed line holds; skipped where Linux's /proc cannot measure it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak RSS is read from Linux's /proc")

    def run(code: str) -> list[float]:
        out = subprocess.run([sys.executable, "-c", _PEAK_PRELUDE + code], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        return [float(v) for v in out.stdout.splitlines()[-1].split()]
    return run


@pytest.fixture(scope="session")
def load_example():
    """``load_example("name")``: examples/name.py as a module (the examples are scripts, not a package)."""
    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "examples" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    yield load
    for name in loaded:
        del sys.modules[name]
