"""benchmarks/gpu_check.py is prepared for one call on a GPU; here the same code runs on the CPU
at 32 px with one model, so that the call on the device does not fail on a typo."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_prints_its_table_on_a_cpu(capsys):
    gpu_check.main(
        ["--device", "cpu", "--image-size", "32", "--images", "8", "--models", "resnet18", "--no-compile", "--no-quick"]
    )
    lines = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in lines if line.startswith("resnet18"))
    assert row[3] == row[5] == "-"  # the --compile paths were skipped
    rates = [float(row[i]) for i in (1, 2, 4, 6, 7)]  # old path, new, par2, eval old, eval new
    hours = [float(x) for x in row[8:]]
    assert all(r > 0 for r in rates) and all(h > 0 for h in hours)
    assert hours[1] == hours[2]  # without the --compile paths, "compile" is the "equal" projection
    assert any(line.startswith("the paper protocol (resnet18;") for line in lines)
