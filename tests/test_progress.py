"""What the user sees while a run trains: the one-line status each step writes to the run
folder's ``progress`` file, and ``fedlib reproduce`` showing those lines while papermill runs
the training notebook (whose own output shows only a cell counter)."""

from __future__ import annotations

import re

import papermill
from conftest import smoke

from fedlib import reproduce
from fedlib.loop import clock, progress_line
from fedlib.run import folder, io
from fedlib.runner import train as run

LINE = re.compile(
    r"^fedavg resnet18: round (\d+)/2, train loss \d+\.\d{3}, test accuracy \d\.\d{3}, "
    r"\d+:\d\d elapsed, about \d+:\d\d left$"
)


def test_the_status_line_says_where_the_run_is_and_how_long_it_has_left():
    line = progress_line("pooled resnet18: epoch", (3, 10), 0.91234, 0.5, (62.4, 3725))
    assert line == (
        "pooled resnet18: epoch 3/10, train loss 0.912, test accuracy 0.500, 1:02 elapsed, about 1:02:05 left"
    )
    assert "test accuracy -," in progress_line("x: round", (1, 4), 1.0, None, (0, 0))  # not evaluated yet
    assert (clock(0), clock(59.6), clock(3599), clock(86400)) == ("0:00", "1:00", "59:59", "24:00:00")


def test_reproduce_shows_the_lines_of_a_run_as_it_trains(data_dir, tmp_path):
    shown = []
    out = tmp_path / "r"
    with folder.watch_progress(out, show=shown.append, interval=0.01):
        run(smoke(data_dir, rounds=2), out, progress=False)
    assert shown, "no line was shown"
    assert all(LINE.match(line) for line in shown), shown
    assert len(set(shown)) == len(shown)  # each line once
    last = io.read_history(out / "history.csv")[-1]
    assert shown[-1] == (out / "progress").read_text().strip()
    assert shown[-1].startswith(f"fedavg resnet18: round 2/2, train loss {float(last['train_loss']):.3f}, ")
    assert f"test accuracy {float(last['test_accuracy']):.3f}" in shown[-1]


def test_a_line_from_before_is_not_shown_and_a_replacement_is_followed(tmp_path):
    run_dir = tmp_path / "r"
    in_place, replacing = folder.progress_files(run_dir)
    io.atomic_write_text(in_place, "the earlier run: round 12/12\n")
    shown = []
    with folder.watch_progress(run_dir, show=shown.append, interval=3600):  # looks once, at the end
        io.atomic_write_text(replacing, "the new run: round 1/12\n")  # --overwrite trains beside it
    assert shown == ["the new run: round 1/12"]
    with folder.watch_progress(run_dir, show=shown.append, interval=3600):
        pass
    assert shown == ["the new run: round 1/12"]  # nothing new


def test_execute_shows_the_training_notebooks_status_lines(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "resnet18-fedavg-seed0"

    def kernel(notebook, output, **kwargs):  # papermill's kernel trains the run and writes the report
        io.atomic_write_text(run_dir / "progress", "fedavg resnet18: round 1/1, train loss 1.000\n")
        io.atomic_write_text(output, "{}")

    monkeypatch.setattr(papermill, "execute_notebook", kernel)
    report = tmp_path / "reports" / "01_train.ipynb"
    reproduce.execute(tmp_path / "01_train.ipynb", report, {}, progress=True, run_dir=run_dir)
    assert "    fedavg resnet18: round 1/1, train loss 1.000\n" in capsys.readouterr().out
    assert report.read_text() == "{}"
    reproduce.execute(tmp_path / "00_data.ipynb", tmp_path / "reports" / "00_data.ipynb", {}, progress=True)
    assert capsys.readouterr().out == ""  # no run, no lines
