"""Every registered name builds, rejects misspelt keywords, lists its source, trains complex weights."""

import pytest
import torch

from sciml.optim import OPTIMIZERS, build_optimizer

TORCH_NAMES = ["adam", "adamw", "radam", "nadam", "sgd", "lbfgs"]


def test_torch_optimizers_registered():
    for name in TORCH_NAMES:
        assert name in OPTIMIZERS


def test_every_entry_has_description_and_source():
    for e in OPTIMIZERS.entries():
        assert e.description and e.source, e.name


def test_misspelt_kwarg_names_the_valid_ones():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"'adam'.*'wieght_decay' \(did you mean 'weight_decay'\?\); valid: .*lr"):
        build_optimizer(p, "adam", lr=1e-3, wieght_decay=0.0)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"did you mean 'adam'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "adma")


def test_a_capitalised_name_suggests_its_lower_case_entry_first():
    """`name: AdamW` suggested 'adam' or 'radam' or 'nadam' (the comparison was case-sensitive)."""
    with pytest.raises(ValueError, match=r"unknown optimizer 'AdamW' \(did you mean 'adamw'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "AdamW")
    with pytest.raises(ValueError, match=r"\(did you mean 'lbfgs'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "LBFGS")
    with pytest.raises(ValueError, match=r"'Weight_Decay' \(did you mean 'weight_decay'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "adam", Weight_Decay=0.0)


def test_user_class_by_path():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], "torch.optim:Adagrad", lr=0.1)
    assert isinstance(opt, torch.optim.Adagrad)
    with pytest.raises(ValueError, match="lr_decay"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "torch.optim:Adagrad", lr_decya=0.1)


def test_import_is_light():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, sciml.optim; print('pytorch_optimizer' in sys.modules, "
                          "'matplotlib' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout == "False False\n" and out.stderr == ""


def test_closure_kind():
    from sciml.optim import closure_kind

    assert [closure_kind(n) for n in ("adam", "grokfast", "lbfgs", "nys_newton_cg")] == ["none", "none", "backward", "loss"]


@pytest.mark.parametrize("name, kw, message", [
    ("spam", {"density": 0.0}, r"density=0.0 is outside \(0.0, 1.0\]; the fraction of coordinates"),
    ("spam", {"seed": -1}, r"seed=-1 must be a non-negative integer"),
    ("subset_norm", {"momentum_rank": 0}, r"momentum_rank=0 must be a positive integer, or None"),
    ("subset_norm", {"proj_every": 0}, r"proj_every=0 must be a positive integer"),
])
def test_memory_saver_options_refuse_bad_values_with_the_fix(name, kw, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], name, **kw)


def test_torch_adam_adamw_sgd_take_the_fused_step_on_one_device_when_the_config_left_it_open():
    from types import SimpleNamespace

    from sciml.optim._registry import _all_real_fusable

    def fake(device, floating=True):
        return SimpleNamespace(device=torch.device(device), is_floating_point=lambda: floating)

    assert _all_real_fusable([fake("cuda"), {"params": [fake("cuda")]}])
    assert _all_real_fusable([fake("cpu"), fake("cpu")])
    assert not _all_real_fusable([fake("meta")])
    assert not _all_real_fusable([{"params": [fake("cuda"), fake("cpu")]}])
    assert not _all_real_fusable([fake("cuda"), fake("cpu")])  # mixed devices: torch's fused step refuses them
    assert not _all_real_fusable([fake("cuda", floating=False)])  # complex parameters
    assert not _all_real_fusable([])
    w = torch.nn.Parameter(torch.zeros(3))
    for name in ("adam", "adamw", "sgd"):
        assert build_optimizer([w], name, lr=0.1).defaults["fused"] is True  # CPU too: one kernel, not a loop
    assert build_optimizer([w], "adam", lr=0.1, foreach=True).defaults["foreach"] is True
    assert not build_optimizer([w], "adam", lr=0.1, foreach=True).defaults.get("fused")
    assert not build_optimizer([w], "adam", lr=0.1, differentiable=True).defaults.get("fused")


def test_param_groups_given_as_generators_or_single_tensors_reach_the_optimizer_whole():
    """The registry inspects the parameters (complex? all on CUDA?) before building: that must
    not spend a generator or split a group that holds one tensor."""
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer([{"params": (p for p in model.parameters()), "lr": 0.1}], "adam", lr=1.0)
    assert [len(g["params"]) for g in opt.param_groups] == [2]
    w = torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.complex64))
    opt = build_optimizer([{"params": w}], "adabelief", lr=0.1)
    assert opt.param_groups[0]["params"] == [w]


def test_sciml_list_marks_the_optimizers_cuda_graph_can_capture(capsys):
    from sciml.cli import main

    assert main(["list", "optimizers"]) == 0
    marked = {line.split()[0] for line in capsys.readouterr().out.splitlines() if "(cuda_graph)" in line}
    assert marked == {"adam", "adamw", "adabelief", "spam", "ademamix", "mars", "fadam", "subset_norm", "clip_radagradd",
                      "grokfast", "perpgrad"}


@pytest.mark.parametrize("name", ["grams", "diffgrad", "adam"])
def test_a_bad_value_for_a_library_optimizer_is_a_config_error_not_its_own_exception(name):
    """pytorch-optimizer raises NegativeLRError (not a ValueError) for lr: -1: the config check let it
    through as a traceback."""
    from sciml.optim import check_optimizer

    with pytest.raises(ValueError, match=f"(optimizer '{name}' rejects its settings.*NegativeLRError|Invalid learning rate)"):
        check_optimizer(name, {"lr": -1.0})


@pytest.mark.parametrize("name", ["adam", "adabelief", "lbfgs"])
@pytest.mark.parametrize("lr", [True, "0.01"])
def test_an_lr_that_is_no_number_is_refused_by_every_optimizer(name, lr):
    # float() took "1" and True: torch's Adam trained with lr=True, and "0.01" failed at its own comparison
    with pytest.raises(ValueError, match=f"lr={lr!r} must be a number"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], name, lr=lr)
