"""Issue 15: ``--parallel-clients N`` trains a round's clients in N worker processes, and every
update is the sequential one, bit for bit (one thread per client on both sides: pytest-xdist
runs each test process with one thread, and a worker gets the parent's threads divided by N)."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import assert_same_weights, history_without_time, smoke, weights

from fedlib.errors import UserError
from fedlib.experiment import setup
from fedlib.federated import InProcessClients, cpu_state
from fedlib.run import io
from fedlib.runner import train as run


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sequential side's thread count equals a worker's
    yield
    torch.set_num_threads(threads)


def four_sites(data_dir, **overrides):
    # Four clients a round, so that two workers each train two and the answers come back out of order.
    return smoke(data_dir, rounds=2, clients=4, fraction=1.0, synth_n_train=48, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        # MobileNet-v2's classifier has dropout (the process-wide generator) and Adam kept per client.
        dict(model="mobilenet_v2", keep_optimizer_state=True),
        # FedBN: each client starts from its own normalization layers; one client fails on purpose.
        dict(model="resnet18", strategy="fedbn", inject_failures=0.3, seed=1),
    ],
    ids=["dropout-kept-adam", "fedbn-faults"],
)
def test_parallel_clients_give_the_sequential_run_bit_for_bit(data_dir, tmp_path, overrides):
    sequential, parallel = tmp_path / "one", tmp_path / "three"
    run(four_sites(data_dir, **overrides), sequential, progress=False)
    run(four_sites(data_dir, parallel_clients=3, **overrides), parallel, progress=False)

    assert_same_weights(weights(sequential), weights(parallel))
    assert history_without_time(sequential) == history_without_time(parallel)
    assert io.read_history(sequential / "clients.csv") == io.read_history(parallel / "clients.csv")
    one, three = io.load_checkpoint(sequential), io.load_checkpoint(parallel)
    for c, state in one.get("client_optimizers", {}).items():  # Adam's moments came back from the workers
        assert_same_weights(state["state"][0], three["client_optimizers"][c]["state"][0])
    assert set(one.get("local_states", {})) == set(three.get("local_states", {}))
    assert io.read_json(parallel / "config.json")["parallel_clients"] == 3


def test_updates_come_back_in_client_order_with_at_most_n_in_flight(data_dir, tmp_path, monkeypatch):
    exp = setup(four_sites(data_dir, parallel_clients=2), tmp_path, progress=False)
    model = exp.new_model()
    pool = InProcessClients(exp, model)
    held = []  # updates in flight or waiting, each time the pool waits for an answer
    collect = pool.workers.__class__._collect

    def watching(self, busy, done, idle):
        held.append(len(busy) + len(done))
        return collect(self, busy, done, idle)

    monkeypatch.setattr(pool.workers.__class__, "_collect", watching)
    try:
        results = list(pool.fit_round(0, [3, 0, 2, 1], cpu_state(model), attempt=0))
        pids = [p.pid for p in pool.workers.procs]
    finally:
        pool.close()
    assert [r.client for r in results] == [3, 0, 2, 1]
    assert all(r.update is not None and r.update.num_examples == len(exp.parts[r.client]) for r in results)
    assert held and max(held) <= 2
    assert len(pids) == 2 and not pool.workers.procs
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_dies_ends_the_run_in_one_line_and_resume_finishes_it(data_dir, tmp_path, monkeypatch):
    cfg = four_sites(data_dir, model="resnet18", parallel_clients=2)
    # The uninterrupted run trains its clients one after another: the same updates, bit for bit
    # (the test above), without starting two more workers that import PyTorch.
    run(four_sites(data_dir, model="resnet18"), tmp_path / "whole", progress=False)
    real = InProcessClients.fit_round

    def killing(self, round_idx, clients, global_state, attempt, local_states=None):
        for i, res in enumerate(real(self, round_idx, clients, global_state, attempt, local_states)):
            yield res
            if round_idx == 1 and i == 0:  # round 2: a worker is killed (as by the OOM killer)
                self.workers.procs[0].kill()

    monkeypatch.setattr(InProcessClients, "fit_round", killing)
    with pytest.raises(UserError, match=r"a --parallel-clients worker died while training client \d .*--resume"):
        run(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(InProcessClients, "fit_round", real)
    run(cfg, tmp_path / "cut", resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))
    assert history_without_time(tmp_path / "whole") == history_without_time(tmp_path / "cut")
