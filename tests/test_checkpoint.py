"""fedlib.checkpoint: checkpoints written in a background thread, at most one in flight, from a
snapshot taken when they were asked for; their errors reach the training thread."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

from fedlib.checkpoint import Writer, cpu_snapshot
from fedlib.run import io


class Interrupted(BaseException):
    """Like a KeyboardInterrupt."""


@pytest.fixture
def gated(monkeypatch):
    """io.save_checkpoint that waits for ``gate`` before it writes, recording what it wrote."""
    gate, started, written = threading.Event(), [], []
    real = io.save_checkpoint

    def save(run_dir, state):
        started.append(state["round"])
        assert gate.wait(timeout=60), "the test never opened the gate"
        real(run_dir, state)
        written.append(state["round"])

    monkeypatch.setattr(io, "save_checkpoint", save)
    return gate, started, written


def test_the_snapshot_is_a_cpu_copy_that_keeps_shared_tensors_shared():
    weight = torch.arange(4.0)
    state = OrderedDict(w=weight)
    state._metadata = {"": {"version": 1}}
    snap = cpu_snapshot({"model": state, "optimizer": {"state": {0: {"exp_avg": weight}}, "lr": [1e-3]}, "n": 3})
    weight.add_(10)  # training moves on in place
    assert snap["model"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert snap["optimizer"]["state"][0]["exp_avg"] is snap["model"]["w"]
    assert isinstance(snap["model"], OrderedDict) and snap["model"]._metadata == {"": {"version": 1}}
    assert snap["optimizer"]["lr"] == [1e-3] and snap["n"] == 3


def test_a_write_holds_the_state_of_when_it_was_asked_for(tmp_path, gated):
    gate, started, written = gated
    weight = torch.zeros(3)
    with Writer() as writer:
        writer.submit(tmp_path, {"round": 1, "model": {"w": weight}})
        weight.add_(5)  # the next step trains while round 1's checkpoint is still being written
        gate.set()
    assert written == [1]
    assert io.load_checkpoint(tmp_path)["model"]["w"].tolist() == [0.0, 0.0, 0.0]


def test_at_most_one_write_is_in_flight(tmp_path, gated):
    gate, started, written = gated
    writer = Writer()
    writer.submit(tmp_path, {"round": 1})
    second = threading.Thread(target=writer.submit, args=(tmp_path, {"round": 2}))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive() and started == [1]  # round 2 waits for round 1's write
    gate.set()
    second.join(timeout=60)
    writer.wait()
    assert written == [1, 2]
    assert io.load_checkpoint(tmp_path)["round"] == 2
    assert torch.load(tmp_path / "checkpoints" / "previous.pt")["round"] == 1


def test_an_interrupt_waits_for_the_write_in_flight(tmp_path, gated):
    gate, started, written = gated
    with pytest.raises(Interrupted), Writer() as writer:
        writer.submit(tmp_path, {"round": 1})
        gate.set()
        raise Interrupted
    assert written == [1] and io.load_checkpoint(tmp_path)["round"] == 1


def test_a_failed_write_is_raised_in_the_training_thread(tmp_path, monkeypatch):
    def full(run_dir, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "save_checkpoint", full)
    writer = Writer()
    writer.submit(tmp_path, {"round": 1})
    with pytest.raises(OSError, match="No space left"):
        writer.submit(tmp_path, {"round": 2})  # the next checkpoint finds the failure
    with pytest.raises(OSError, match="No space left"), Writer() as writer:
        writer.submit(tmp_path, {"round": 1})  # the last one: raised on leaving
    with pytest.raises(Interrupted) as caught, Writer() as writer:
        writer.submit(tmp_path, {"round": 1})
        raise Interrupted
    assert "No space left" in caught.value.__notes__[0]  # the first error stays the one raised
