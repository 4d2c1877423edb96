"""Failing clients, crashes and determinism of the in-process engine (tiny synthetic data, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import assert_same_weights, history_without_time, smoke, weights

from fedlib.cli import main
from fedlib.client import Update, injected_fault
from fedlib.federated import (
    ClientResult,
    InProcessClients,
    RoundFailed,
    check_update,
    sample_clients,
)
from fedlib.run import io as runs
from fedlib.runner import train as run


@pytest.fixture(scope="module")
def data_config(data_dir):
    """A config file that points the CLI at the session's synthetic data."""
    path = data_dir / "data.yaml"
    path.write_text(f"data_dir: {data_dir}\n")
    return path


REF = {"w": torch.zeros(2, 3), "b": torch.zeros(3), "n": torch.tensor(0)}


@pytest.mark.parametrize(
    "state, num_examples, loss, words",
    [
        ({"w": torch.zeros(2, 3), "b": torch.zeros(3)}, 4, 0.1, "names differ"),
        ({**REF, "extra": torch.zeros(1)}, 4, 0.1, "names differ"),
        ({**REF, "w": torch.zeros(2, 2)}, 4, 0.1, "w has shape (2, 2), expected (2, 3)"),
        ({**REF, "b": torch.tensor([0.0, float("nan"), 0.0])}, 4, 0.1, "b holds non-finite"),
        ({**REF, "w": torch.full((2, 3), float("inf"))}, 4, 0.1, "w holds non-finite"),
        (REF, 0, 0.1, "sample count 0"),
        (REF, 4, float("nan"), "loss is not finite"),
    ],
)
def test_check_update_names_what_is_wrong(state, num_examples, loss, words):
    assert words in check_update(Update(state, num_examples, loss), REF)


def test_check_update_accepts_a_good_update():
    assert check_update(Update({k: v.clone() for k, v in REF.items()}, 4, 0.1), REF) is None


def test_injected_failures_are_dropped_and_recorded(data_dir, tmp_path):
    cfg = smoke(data_dir, rounds=4, inject_failures=0.5, seed=3)
    run(cfg, tmp_path / "r", progress=False)
    rows = runs.read_history(tmp_path / "r" / "history.csv")
    answers = runs.read_history(tmp_path / "r" / "clients.csv")
    seen_drop = False
    for r, row in enumerate(rows):
        for attempt in range(int(row["attempts"])):
            sampled = sample_clients(cfg.clients, cfg.clients_per_round, cfg.seed, r, attempt)
            expected = {c: injected_fault(cfg, r, c, attempt) for c in sampled}
            these = [a for a in answers if int(a["round"]) == r + 1 and int(a["attempt"]) == attempt + 1]
            assert [int(a["client"]) for a in these] == sampled
            last = attempt + 1 == int(row["attempts"])
            for a in these:
                fault = expected[int(a["client"])]
                if fault is None:
                    assert a["status"] == ("used" if last else "discarded")
                else:
                    seen_drop = True
                    assert a["status"] == "dropped"
                    assert {"raise": "InjectedFault", "nan": "non-finite", "shape": "has shape"}[fault] in a["reason"]
        used = [a for a in answers if int(a["round"]) == r + 1 and a["status"] == "used"]
        assert int(row["clients_used"]) == len(used) and int(row["clients_dropped"]) == sum(
            a["status"] == "dropped" for a in answers if int(a["round"]) == r + 1
        )
    assert seen_drop, "seed 3 was picked so that some client fails; the injection did nothing"
    assert (tmp_path / "r" / "final.json").exists()


def test_a_round_below_min_clients_is_retried_with_a_fresh_sample(data_dir, tmp_path):
    # Every client of attempt 0 of round 1 fails; the retry samples again and succeeds.
    cfg = smoke(data_dir, rounds=1, min_clients=2)

    class FirstAttemptFails(InProcessClients):
        def fit_round(self, round_idx, clients, global_state, attempt, local_states=None):
            for res in super().fit_round(round_idx, clients, global_state, attempt, local_states):
                yield ClientResult(res.client, None, "site offline") if attempt == 0 else res

    run(cfg, tmp_path / "r", progress=False, pool=lambda exp: FirstAttemptFails(exp, exp.new_model()))
    (row,) = runs.read_history(tmp_path / "r" / "history.csv")
    assert row["attempts"] == "2"
    answers = runs.read_history(tmp_path / "r" / "clients.csv")
    assert [(a["attempt"], int(a["client"]), a["status"], a["reason"]) for a in answers] == [
        ("1", c, "dropped", "site offline") for c in sample_clients(cfg.clients, 2, cfg.seed, 0)
    ] + [("2", c, "used", "") for c in sample_clients(cfg.clients, 2, cfg.seed, 0, attempt=1)]
    assert row["clients_used"] == "2" and row["clients_dropped"] == "2"


def test_too_few_clients_after_the_retries_stops_with_one_clear_line(data_config, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--profile",
                "smoke",
                "--config",
                str(data_config),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
                "--inject-failures",
                "1",
                "--round-retries",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedlib: error: round 1: fewer than 1 client(s) returned a usable update in 2 attempt(s)")
    assert "\n" not in err and "--resume" in err
    assert not (tmp_path / "r" / "final.json").exists()


def test_a_client_over_the_time_limit_is_dropped(data_dir, tmp_path):
    with pytest.raises(RoundFailed, match=r"timeout \(\d+\.\d s > 1e-06 s\)"):
        run(smoke(data_dir, rounds=1, client_timeout=1e-6, round_retries=0), tmp_path / "r", progress=False)


def test_same_seed_gives_identical_history_and_weights(data_dir, tmp_path):
    cfg = smoke(data_dir, rounds=3, inject_failures=0.3, seed=11)
    run(cfg, tmp_path / "a", progress=False)
    run(cfg, tmp_path / "b", progress=False)
    assert history_without_time(tmp_path / "a") == history_without_time(tmp_path / "b")
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


def _train_argv(data_config, out, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedlib.cli",
        "train",
        "--profile",
        "smoke",
        "--rounds",
        "4",
        "--quiet",
        "--out",
        str(out),
        "--config",
        str(data_config),
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(data_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(_train_argv(data_config, out), check=True, capture_output=True)
    return out


def _wait_for(predicate, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill point: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill point not reached in time")
        time.sleep(0.01)


@pytest.mark.parametrize("kill_point", ["first checkpoint", "second history row", "third round started"])
def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(data_config, uninterrupted, tmp_path, kill_point):
    full, cut = uninterrupted, tmp_path / "cut"
    ckpt = cut / "checkpoints" / "last.pt"
    point = {
        "first checkpoint": lambda: ckpt.exists(),
        "second history row": lambda: len(runs.read_history(cut / "history.csv")) >= 2,
        # Mid-round: a moment after round 2's checkpoint, while round 3 trains.
        "third round started": lambda: (
            runs.load_checkpoint(cut) is not None and runs.load_checkpoint(cut)["round"] >= 2
        ),
    }[kill_point]
    proc = subprocess.Popen(_train_argv(data_config, cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(point, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert not (cut / "final.json").exists()
    assert runs.load_checkpoint(cut) is not None  # never half-written: it loads
    resumed = subprocess.run(_train_argv(data_config, cut, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(full), weights(cut))
    assert history_without_time(full) == history_without_time(cut)


# The CLI with round 2's checkpoint stuck half-written in the background writer: the
# process is killed with that write in flight.
STUCK_WRITE = """
import io, sys, threading
from pathlib import Path
import torch
from fedlib.run import io as runs
from fedlib.cli import main
real, calls = runs.save_torch, []
def save_torch(path, obj):
    calls.append(Path(path).name)
    if calls[-1] != "next.pt" or calls.count("next.pt") != 2:
        return real(path, obj)
    def half(fh):
        data = io.BytesIO()
        torch.save(obj, data)
        fh.write(data.getvalue()[: len(data.getvalue()) // 2])
        fh.flush()
        Path(sys.argv[1]).touch()
        threading.Event().wait()
    runs.atomic_write(path, half)
runs.save_torch = save_torch
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_during_a_background_checkpoint_write_keeps_the_one_before(data_config, uninterrupted, tmp_path):
    full, cut, stuck = uninterrupted, tmp_path / "cut", tmp_path / "stuck"
    argv = [sys.executable, "-c", STUCK_WRITE, str(stuck), *_train_argv(data_config, cut)[3:]]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(stuck.exists, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    partial = list((cut / "checkpoints").glob(".next.pt.*.tmp"))
    assert len(partial) == 1  # round 2's checkpoint, half written when killed
    assert runs.load_checkpoint(cut)["round"] == 1  # round 1's is intact
    assert len(runs.read_history(cut / "history.csv")) >= 2  # rows that the resume must drop
    resumed = subprocess.run(_train_argv(data_config, cut, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(full), weights(cut))
    assert history_without_time(full) == history_without_time(cut)


def test_a_damaged_checkpoint_names_the_good_one(data_dir, tmp_path, capsys):
    cfg = smoke(data_dir, rounds=3)
    run(cfg, tmp_path / "r", progress=False)
    (tmp_path / "r" / "final.json").unlink()  # as if killed at the end
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "r"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {last} is damaged" in err
    assert f"the previous good checkpoint is {last.with_name('previous.pt')}" in err
