"""What a result or a run records as its source commit."""

import subprocess

from sciml.utils import git_commit


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


def test_a_benchmarks_own_results_do_not_make_its_tree_dirty(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "src.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    (tmp_path / "benchmarks" / "BENCHMARKS.md").write_text("# b\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "c")
    sha = git_commit(tmp_path)
    assert len(sha) == 40
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"rows": []}\n')
    (tmp_path / "benchmarks" / "BENCHMARKS.md").write_text("# b, rendered\n")
    assert git_commit(tmp_path) == sha  # outputs written by the run itself
    (tmp_path / "src.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "-dirty"  # source changed: the result may not be the commit's
