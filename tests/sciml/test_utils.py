"""sciml.utils: the caller's random state kept around a run without touching CUDA a CPU run does not use."""

import pytest
import torch

from sciml.utils import callers_rng_kept


@pytest.fixture
def two_gpus_seen(monkeypatch):
    """A machine with two CUDA devices, as torch.cuda reports it, CUDA not yet initialised; each read or write of a
    CUDA generator's state (which initialises CUDA) is recorded instead."""
    calls, initialised = [], [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised[0])

    def get_rng_state(device="cuda"):
        calls.append(("get", torch.device("cuda", device) if isinstance(device, int) else torch.device(device)))
        return torch.zeros(16, dtype=torch.uint8)

    def set_rng_state(state, device="cuda"):
        calls.append(("set", torch.device("cuda", device) if isinstance(device, int) else torch.device(device)))

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    return calls, initialised


def test_a_cpu_run_reads_no_cuda_generator_and_keeps_the_callers_queued_seed(two_gpus_seen):
    """Every visible GPU's generator was read (which initialises CUDA, a context on the GPU) for a `device: cpu` run."""
    calls, _ = two_gpus_seen
    torch.manual_seed(1234)  # CUDA not initialised: its seed is queued for the initialisation
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    queued = None if tracker is None else dict(vars(tracker))
    before = torch.get_rng_state()
    with callers_rng_kept(torch.device("cpu")):
        torch.manual_seed(3)  # what a run does: queues its own seed in place of the caller's
        torch.rand(5)
    assert calls == []
    assert torch.equal(torch.get_rng_state(), before)
    if tracker is not None:  # the caller's seed is the one CUDA will be seeded with
        assert vars(tracker) == queued


def test_a_cuda_run_keeps_every_devices_generator_which_its_seed_sets(two_gpus_seen):
    """`torch.manual_seed` seeds every device's generator once CUDA is initialised (the run initialises it), so each is
    put back; reading them then initialises nothing more."""
    calls, _ = two_gpus_seen
    with callers_rng_kept(torch.device("cuda", 1)):
        pass
    assert sorted((kind, d.index) for kind, d in calls) == [("get", 0), ("get", 1), ("set", 0), ("set", 1)]


def test_a_cpu_run_with_cuda_already_initialised_keeps_every_devices_generator(two_gpus_seen):
    calls, initialised = two_gpus_seen
    initialised[0] = True  # the caller used CUDA: the run's torch.manual_seed reseeds every device at once
    with callers_rng_kept(torch.device("cpu")):
        pass
    assert sorted((kind, d.index) for kind, d in calls) == [("get", 0), ("get", 1), ("set", 0), ("set", 1)]


def test_a_cpu_pinn_fit_reads_no_cuda_generator(two_gpus_seen, tmp_path):
    from sciml.pde import get_problem
    from sciml.train.pinn import fit

    calls, _ = two_gpus_seen
    config = {"device": "cpu", "dtype": "float64", "net": {"width": 4, "depth": 1}, "points": {"interior": 16},
              "log_every": 1, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 1}]}
    fit(get_problem("diffusion_reaction"), config)
    assert calls == []
