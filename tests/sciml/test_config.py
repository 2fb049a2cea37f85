import re

import pytest

from sciml.config import ConfigError, apply_overrides, load_config, validate
from sciml.registry import Registry
from sciml.train.schema import OperatorConfig

BASE = {"model": {"name": "fno", "modes": 8}}


def test_unknown_key_names_key_and_close_match():
    with pytest.raises(ConfigError, match=r"unknown key 'training.epochz' \(did you mean 'epochs'\?\)"):
        validate(OperatorConfig, {**BASE, "training": {"epochz": 3}})


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser' \(did you mean 'optimizer'\?\)"):
        validate(OperatorConfig, {**BASE, "optimiser": {"name": "adam"}})


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"bad value for 'training.batch_size'.*got -3"):
        validate(OperatorConfig, {**BASE, "training": {"batch_size": -3}})
    with pytest.raises(ConfigError, match=r"bad value for 'training.precision'"):
        validate(OperatorConfig, {**BASE, "training": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match=r"got 'cosin'\) \(did you mean 'cosine'\?\)"):  # as README promises
        validate(OperatorConfig, {**BASE, "schedule": {"name": "cosin"}})


def test_missing_required_section():
    with pytest.raises(ConfigError, match=r"missing required key 'model'"):
        validate(OperatorConfig, {})


def test_overrides_parse_yaml_scalars_and_do_not_mutate():
    base = {"training": {"epochs": 5}}
    out = apply_overrides(base, ["training.epochs=7", "optimizer.lr=1e-4", "data.resolution=null", "x.flag=true"])
    assert out["training"]["epochs"] == 7 and out["optimizer"]["lr"] == 1e-4
    assert out["data"]["resolution"] is None and out["x"]["flag"] is True
    assert base == {"training": {"epochs": 5}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(base, ["training.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides(base, ["training.epochs.x=1"])


def test_overrides_index_lists_such_as_training_phases():
    base = {"phases": [{"optimizer": {"name": "adam"}, "steps": 100}, {"steps": 5}]}
    out = apply_overrides(base, ["phases.0.steps=3000", "phases.1.optimizer.name=lbfgs", "phases.0.optimizer.lr=0.01"])
    assert out["phases"] == [{"optimizer": {"name": "adam", "lr": 0.01}, "steps": 3000},
                             {"steps": 5, "optimizer": {"name": "lbfgs"}}]
    assert base["phases"][0]["steps"] == 100
    with pytest.raises(ConfigError, match=r"'phases' is a list of 2; index it with 0..1, not '2'"):
        apply_overrides(base, ["phases.2.steps=1"])
    with pytest.raises(ConfigError, match="not 'steps'"):
        apply_overrides(base, ["phases.steps=1"])
    with pytest.raises(ConfigError, match="'phases.0.steps' is a value, not a section"):
        apply_overrides(base, ["phases.0.steps.x=1"])


def test_model_and_optimizer_kwargs_pass_through():
    cfg = validate(OperatorConfig, {**BASE, "optimizer": {"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.99]}})
    assert cfg.model.kwargs() == {"modes": 8}
    assert cfg.optimizer.kwargs() == {"lr": 3e-4, "betas": [0.9, 0.99]}


def test_shipped_configs_validate():
    cfg = load_config(OperatorConfig, "configs/burgers/fno.yaml")
    assert cfg.model.name == "fno" and cfg.data.resolution == 1024 and cfg.training.epochs == 500


def test_registry_unknown_name_lists_known_and_close():
    reg = Registry("widget")
    reg.add("spectral", object)
    with pytest.raises(ValueError, match=r"unknown widget 'spectrl' \(did you mean 'spectral'\?\); known: spectral"):
        reg.get("spectrl")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("spectral", int)
    assert reg.get("collections:OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(ValueError, match="has no attribute"):
        reg.get("collections:Nope")


def test_a_users_module_in_the_working_directory_is_found_as_the_console_script_runs(tmp_path, monkeypatch):
    """`sciml train` (a console script) does not put the working directory on sys.path as `python` does, so
    `problem: mypde:problem` beside the user was not importable."""
    import sys

    from sciml.registry import load_object

    (tmp_path / "sciml_user_pde_module.py").write_text("answer = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_object("sciml_user_pde_module:answer") == 42
    with pytest.raises(ValueError, match="cannot import module 'no_such_user_module'.*working directory"):
        load_object("no_such_user_module:x")
    assert sys.path.count(str(tmp_path)) == 1  # added once, for the module found there


def test_an_import_failing_inside_a_users_module_keeps_its_own_error(tmp_path, monkeypatch):
    """A module found but importing a missing dependency was reported as 'cannot import module ...; install it or
    run from the folder that holds it', its traceback to the user's line lost."""
    from sciml.registry import load_object

    (tmp_path / "sciml_user_badimport.py").write_text("import no_such_dependency_here\nNet = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_here"):
        load_object("sciml_user_badimport:Net")


def test_a_user_optimizer_taking_kwargs_checks_its_own_keywords(monkeypatch):
    """A class with **kwargs was refused: "unknown keyword argument 'lr'; valid: " (an empty list)."""
    import sys
    import types

    import torch

    from sciml.optim import build_optimizer

    class KwargsAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)

    monkeypatch.setitem(sys.modules, "sciml_user_kwopt", types.SimpleNamespace(KwargsAdam=KwargsAdam))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], "sciml_user_kwopt:KwargsAdam", lr=0.01)
    assert opt.param_groups[0]["lr"] == 0.01


def test_a_bug_inside_a_users_component_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """An error raised inside a user's optimizer class was reported as a config mistake, its traceback to the
    user's line dropped ('rejects its settings ... fix the value')."""
    from sciml.registry import user_code_traceback
    from sciml.train.schema import OperatorConfig

    (tmp_path / "sciml_user_buggy_opt.py").write_text(
        "import torch\n\nclass Buggy(torch.optim.Adam):\n    def __init__(self, params, lr=1e-3):\n"
        "        super().__init__(params, lr=lr)\n        self.buf = torch.zeros('3')  # the user's bug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = {"data": {"recipe": "burgers"}, "model": {"name": "fno"}, "optimizer": {"name": "sciml_user_buggy_opt:Buggy"}}
    with pytest.raises(ConfigError, match="rejects its settings") as caught:
        validate(OperatorConfig, raw)
    where = user_code_traceback(caught.value)
    assert "sciml_user_buggy_opt.py" in where and "the user's bug" in where
    with pytest.raises(ConfigError) as ours:  # a plain config mistake has no user frame: no traceback shown
        validate(OperatorConfig, {**raw, "optimizer": {"name": "adam", "lrr": 1.0}})
    assert user_code_traceback(ours.value) == ""


def test_a_users_model_or_optimizer_of_another_kind_is_named_as_such(monkeypatch):
    """A model that was not an nn.Module failed with "'NotModule' object has no attribute 'to'" inside the trainer,
    an optimizer that was not an Optimizer with "no attribute 'param_groups'" inside torch's scheduler."""
    import sys
    import types

    import torch

    from sciml.models import build_model
    from sciml.optim import build_optimizer

    class NotModule:
        def __init__(self, in_channels, out_channels, n_dims):
            pass

    class NotOptimizer:
        def __init__(self, params, lr=1e-3):
            self.params = list(params)

    monkeypatch.setitem(sys.modules, "sciml_user_kinds", types.SimpleNamespace(NotModule=NotModule, NotOptimizer=NotOptimizer))
    with pytest.raises(ValueError, match="built a NotModule, not a torch.nn.Module"):
        build_model("sciml_user_kinds:NotModule", in_channels=1, out_channels=1, n_dims=1)
    with pytest.raises(ValueError, match="built a NotOptimizer, not a torch.optim.Optimizer"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], "sciml_user_kinds:NotOptimizer")


def test_misspelt_keys_under_an_optional_section_get_a_close_match():
    """`physics` and `net.weight_factorization` are `X | None`: the walk to their keys stopped there, and the error
    said only "unknown key 'physics.constrain'"."""
    from sciml.train.pinn import PINNConfig

    with pytest.raises(ConfigError, match=r"unknown key 'physics.constrain' \(did you mean 'constraint'\?\); "
                                          r"allowed here: .*constraint"):
        load_config(OperatorConfig, "configs/burgers/pi_hc.yaml", ["physics.constrain=soft"])
    with pytest.raises(ConfigError, match=r"unknown key 'net.weight_factorization.sd' \(did you mean 'std'\?\); "
                                          r"allowed here: mean, std"):
        load_config(PINNConfig, "configs/burgers/pinn.yaml", ["net.weight_factorization.sd=1"])


@pytest.mark.parametrize("override, message", [
    ("physics.overlap=-1", r"bad value for 'physics.overlap': got -1; allowed: an integer >= 0, or a list, each an "
                           r"integer >= 0$"),
    ("physics.overlap=[1,-1]", r"bad value for 'physics.overlap': got \[1, -1\]; .*\(physics.overlap.1=-1: Input "
                               r"should be greater than or equal to 0\)$"),
    ("data.input_time=[0,4,6]", r"bad value for 'data.input_time': got \[0, 4, 6\]; allowed: an integer, or a list "
                                r"of 2, each an integer, or null$"),
])
def test_a_union_typed_field_is_one_line_naming_the_users_key_and_what_it_allows(override, message):
    """pydantic keys each union member: 'physics.overlap.function-after[functools.partial(<function
    greater_than_or_equal_validator ...' and two lines 'data.input_time.int', 'data.input_time.tuple[int, int]'."""
    with pytest.raises(ConfigError) as caught:
        load_config(OperatorConfig, "configs/burgers/pi_hc.yaml", [override])
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 1 and re.search(message, lines[0].strip()), lines


@pytest.mark.parametrize("override, message", [
    ("data.inputs=[]", r"bad value for 'data.inputs': .*an empty list selects no field: leave the key out \(null\)"),
    ("data.inputs=[a,a]", r"bad value for 'data.inputs': .*\['a'\] given more than once"),
    ("data.outputs=[u,a,u]", r"bad value for 'data.outputs': .*\['u'\] given more than once"),
])
def test_an_empty_or_repeated_field_selection_is_refused(override, message):
    """[] meant every field yet config.yaml recorded []; [a, a] fed field a twice as two channels."""
    with pytest.raises(ConfigError, match=message):
        load_config(OperatorConfig, "configs/darcy/fno.yaml", [override])


def test_a_key_given_twice_in_a_yaml_config_is_refused_naming_it_and_its_lines(tmp_path):
    """The last one won silently (a second `model:` replaced the first, modes and all)."""
    path = tmp_path / "dup.yaml"
    path.write_text("model: {name: fno, modes: 8}\ndata: {n_train: 4}\nmodel: {name: fno, modes: 4}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml is not valid YAML: duplicate key 'model' \(line 3, first given on "
                                          r"line 1\)"):
        load_config(OperatorConfig, path)
    path.write_text("training: {epochs: 1, epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' \(line 1, first given on line 1\)"):
        load_config(OperatorConfig, path)
    # keys merged in with << may be overridden, as YAML allows
    path.write_text("base: &b {epochs: 1, batch_size: 2}\ntraining:\n  <<: *b\n  epochs: 3\n")
    from sciml.config import load_yaml
    assert load_yaml(path)["training"] == {"epochs": 3, "batch_size": 2}


def test_generate_refuses_a_non_positive_max_minutes(capsys):
    """--max-minutes -1 stopped after the first batch with exit status 0."""
    from sciml.cli import main

    for value in ("-1", "0", "nan"):
        with pytest.raises(SystemExit):
            main(["generate", "burgers", "--preset", "tiny", "--max-minutes", value])
        assert "--max-minutes: must be a positive number of minutes" in capsys.readouterr().err


def test_an_unknown_keyword_of_a_neuralop_model_lists_the_valid_ones():
    """"FNO.__init__() got an unexpected keyword argument 'modes'" named neither n_modes nor the others."""
    from sciml.models import build_model

    with pytest.raises(ValueError, match=r"model 'neuralop.FNO' got an unknown keyword argument 'modes' \(did you "
                                         r"mean 'n_modes'.*valid: .*hidden_channels.*n_modes"):
        build_model("neuralop.FNO", in_channels=1, out_channels=1, n_dims=1, modes=[8], hidden_channels=8)


def test_an_h5py_error_is_not_shown_as_the_users_code(tmp_path):
    """h5py's Cython frames name their source relatively ("h5py/_objects.pyx"): resolved against the working
    folder, it was taken for a user's file, and every h5py error came with a traceback as if from the user's code."""
    from sciml.data.h5 import DatasetError, read_info
    from sciml.registry import user_code_traceback

    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5" * 16)
    with pytest.raises(DatasetError, match="not a readable HDF5 file") as caught:
        read_info(bad)
    assert any(".pyx" in f for f in _frame_files(caught.value.__cause__))  # the case at hand: a compiled frame
    assert user_code_traceback(caught.value) == ""


def _frame_files(err):
    import traceback

    return [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
