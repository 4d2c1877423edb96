"""``fedlib.notebook.execute_all``: training notebooks several at once, each kernel with the
threads it was given, a failure raised after the others finish, nothing half-written."""

from __future__ import annotations

import json
import os
import threading

import nbformat
import pytest

from fedlib import notebook
from fedlib.errors import UserError


def _notebook(path, source: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('out = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(source),
    ]
    nb.metadata["kernelspec"] = {"name": notebook.KERNEL, "language": "python", "display_name": "fedlib"}
    nbformat.write(nb, path)
    return path


THREADS = (
    "import json, os, torch\n"
    "open(out, 'w').write(json.dumps({'env': os.environ.get('OMP_NUM_THREADS'), 'torch': torch.get_num_threads()}))"
)


def test_two_at_once_each_kernel_with_its_threads_and_a_failure_raised_after_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    ok = _notebook(tmp_path / "ok.ipynb", THREADS)
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('broken on purpose')")
    jobs = [
        notebook.Job(ok, tmp_path / "reports" / "a.ipynb", {"out": str(tmp_path / "a.json")}),
        notebook.Job(bad, tmp_path / "reports" / "b.ipynb", {"out": str(tmp_path / "b.json")}),
        notebook.Job(ok, tmp_path / "reports" / "c.ipynb", {"out": str(tmp_path / "c.json")}),
    ]
    with pytest.raises(UserError, match=r"bad.ipynb failed .*broken on purpose"):
        notebook.execute_all(jobs, 2, progress=False, threads=1)
    # the failing notebook is kept under its .failed name; the others finished and reported
    assert (tmp_path / "reports" / "b.failed.ipynb").is_file() and not (tmp_path / "reports" / "b.ipynb").exists()
    assert (tmp_path / "reports" / "a.ipynb").is_file()
    seen = json.loads((tmp_path / "a.json").read_text())
    assert seen == {"env": "1", "torch": 1}
    assert os.environ["OMP_NUM_THREADS"] == "7"  # the parent's environment is as it was


def test_all_succeed_in_order(tmp_path):
    ok = _notebook(tmp_path / "ok.ipynb", THREADS)
    jobs = [notebook.Job(ok, tmp_path / f"r{i}.ipynb", {"out": str(tmp_path / f"{i}.json")}) for i in range(3)]
    reports = notebook.execute_all(jobs, 2, progress=False, threads=2)
    assert reports == [tmp_path / f"r{i}.ipynb" for i in range(3)]
    assert all(json.loads((tmp_path / f"{i}.json").read_text())["torch"] == 2 for i in range(3))


def test_no_job_starts_after_a_failure(tmp_path, monkeypatch):
    started = []

    def fake_execute(nb, report, parameters, **kwargs):
        started.append(nb.name)
        if nb.name == "bad.ipynb":
            raise UserError("notebook bad.ipynb failed")
        return report

    monkeypatch.setattr(notebook, "execute", fake_execute)
    stop = threading.Event()
    job = lambda name: notebook.Job(tmp_path / name, tmp_path / f"r-{name}", {})  # noqa: E731
    assert notebook._run_unless(stop, job("ok.ipynb"), False) == tmp_path / "r-ok.ipynb"
    with pytest.raises(UserError):
        notebook._run_unless(stop, job("bad.ipynb"), False)
    assert stop.is_set()
    assert notebook._run_unless(stop, job("later.ipynb"), False) is None
    assert started == ["ok.ipynb", "bad.ipynb"]
