"""Inverse problems (Unknown parameters, Data observations): what a run silently got wrong."""

import math

import pytest
import torch
import yaml

from sciml.config import ConfigError
from sciml.train.run import RunDir

F64 = torch.float64


def test_a_resume_refuses_a_new_problem_args_key_but_skips_a_field_an_older_config_lacks(tmp_path):
    """A new problem_args key was skipped as 'saved by an older version': D_true=0.3 rewrote a finished run's metrics."""
    run = RunDir.create(tmp_path, "r")
    saved = {"task": "pinn", "problem": "mypkg.heat:heat", "problem_args": {"noise": 0.01}, "seed": 0}
    run.write_config(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match=r"would change it: problem_args\.D_true\b"):
        run.check_resume(yaml.safe_dump({**saved, "problem_args": {"noise": 0.01, "D_true": 0.3}}), "pinn")
    with pytest.raises(ConfigError, match=r"would change it: problem_args\.noise\b"):
        run.check_resume(yaml.safe_dump({**saved, "problem_args": {}}), "pinn")
    # a schema field the old config did not write (keep_soft) is still no change
    run.check_resume(yaml.safe_dump({**saved, "keep_soft": []}), "pinn")
