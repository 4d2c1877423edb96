"""The command line: one-line errors with exit code 2, and the data commands."""

import json
import subprocess
import sys

import pytest

from fedlib.cli import main


def test_synth_then_data_summary_json(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            ["synth", "--out", str(out), "--n-train", "9", "--n-test", "6", "--size", "48", "--sources", "2", "--quiet"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["data-summary", "--data", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["total"] == 9 and summary["test"]["total"] == 6
    assert sum(summary["train"][c] for c in ("normal", "pneumonia", "COVID-19")) == 9
    assert set(summary["sources"]["train"]) <= {"site-a", "site-b"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data-summary", "--data", "/nonexistent/covidx"], "data root /nonexistent/covidx does not exist"),
        (["train", "--profile", "smoke", "--fraction", "0", "--out", "{tmp}/r"], "--fraction must be in (0, 1]"),
        (["train", "--profile", "smoke", "--model", "vgg16", "--out", "{tmp}/r"], "unknown model 'vgg16'"),
        (
            ["train", "--profile", "smoke", "--data", "/nonexistent", "--out", "{tmp}/r"],
            "data root /nonexistent does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    res = subprocess.run([sys.executable, "-m", "fedlib.cli", *argv], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0  # one line, no traceback
    assert res.stderr.startswith("fedlib: error: ") and message in res.stderr
    assert not (tmp_path / "r" / "final.json").exists()


def test_debug_shows_the_traceback():
    res = subprocess.run(
        [sys.executable, "-m", "fedlib.cli", "--debug", "data-summary", "--data", "/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "Traceback" in res.stderr
