"""fedlib on Flower: what leaves a site, and parity of Flower's simulation and of a real
loopback deployment (SuperLink + SuperNodes) with the in-process engine."""

import json
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import assert_same_weights, history_without_time, smoke, weights

from fedlib import config
from fedlib.client import InjectedFault, Update
from fedlib.deploy import LocalFederation
from fedlib.deploy.local import tagged
from fedlib.errors import UserError
from fedlib.flower import apps, run_flower
from fedlib.flower.apps import failure_reason
from fedlib.flower.messages import read_train_request, read_update, train_request, update_reply
from fedlib.flower.site import load_site
from fedlib.launch import run
from fedlib.run import io

pytest.importorskip("ray")  # flwr[simulation]

DEADLINE = 240  # seconds any one Flower run may take here before the test fails
# Seconds one event of a run may take on an idle 2-core machine: a round (the first one imports
# PyTorch in every ClientApp; a round that loses a site waits for its heartbeat to stop), a
# SuperNode's start. ``wait_for`` stretches them by the machine's load, so a test that runs
# beside other CPU-bound work waits longer instead of failing.
EVENT_LIMIT = 150


def load_factor() -> float:
    """How many times more work than cores the machine has now (1 when idle)."""
    import os

    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def wait_for(what: str, done, limit: float = EVENT_LIMIT, alive=lambda: True, state=lambda: "") -> float:
    """Poll ``done()`` until it holds; fail naming ``what`` was awaited, for how long, and
    ``state()``, when ``limit`` seconds (times the load factor) pass or ``alive()`` turns false.
    Returns the seconds waited."""
    import time

    started, limit = time.monotonic(), limit * load_factor()
    while not done():
        waited = time.monotonic() - started
        assert alive(), f"gave up waiting for {what} after {waited:.0f} s: what it waited on ended; {state()}"
        assert waited < limit, f"waited {limit:.0f} s (load factor {load_factor():.1f}) for {what}; {state()}"
        time.sleep(0.2)
    return time.monotonic() - started


def live_children():
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def assert_same_run(a, b):
    """Same final weights, bit for bit, and the same history.csv apart from wall time."""
    assert_same_weights(weights(a), weights(b))
    assert history_without_time(a) == history_without_time(b)
    assert (b / "final.json").exists() and (b / "config.json").exists()


def test_a_site_reply_holds_only_arrays_a_count_and_scalars():
    state = {
        "w": torch.randn(3, 2),
        "bn.num_batches_tracked": torch.tensor(7),
        "h": torch.ones(5, dtype=torch.bfloat16),
    }
    update = Update(state, num_examples=12, loss=0.25, metrics={"dp_epsilon": 1.5})
    reply = update_reply(update)
    assert set(reply) == {"arrays", "metrics"}
    assert not reply.config_records  # no free-form fields that could carry names or ids
    assert list(reply.array_records["arrays"]) == ["state"]  # the whole model as one array of bytes
    assert all(type(v) in (int, float) for v in reply.metric_records["metrics"].values())
    back = read_update(reply, like={k: torch.zeros_like(v) for k, v in state.items()})
    assert back.num_examples == 12 and back.loss == 0.25 and back.metrics == {"dp_epsilon": 1.5}
    for key, value in state.items():
        assert back.state[key].dtype == value.dtype and torch.equal(back.state[key], value)


def test_a_packed_state_is_read_only_with_the_model_it_came_from():
    from fedlib.flower.messages import pack, unpack
    from fedlib.models import build_model

    model = build_model("mobilenet_v2", num_classes=3)
    state = model.state_dict()
    record = pack(state)
    assert len(list(record)) == 1 and len(state) > 300  # one array where Flower would move 300+
    back = unpack(record, model.state_dict())
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    shorter = dict(state)
    shorter.pop(next(iter(shorter)))
    with pytest.raises(ValueError, match="bytes"):
        unpack(record, shorter)  # another model: refused, never misread


def test_a_failing_site_tells_only_the_exception_type():
    assert (
        failure_reason(FileNotFoundError("/data/site/patient-17.png"))
        == "raised FileNotFoundError (details in the site's log)"
    )
    assert (
        failure_reason(InjectedFault("injected failure of client 1 in round 2"))
        == "raised InjectedFault: injected failure of client 1 in round 2"
    )  # as in-process


def test_a_train_request_round_trips(data_dir):
    cfg = smoke(data_dir)
    from fedlib.flower.messages import pack, unpack

    state = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}

    packed, got_cfg, round_idx, attempt, client = read_train_request(train_request(pack(state), cfg, 4, 1, 2))
    assert torch.equal(unpack(packed, state)["w"], state["w"])
    assert got_cfg == cfg and (round_idx, attempt, client) == (4, 1, 2)


def test_simulation_equals_inprocess(data_dir, tmp_path):
    # FedBN: each site starts from its own normalization layers, which travel in the messages.
    cfg = smoke(data_dir, rounds=2, strategy="fedbn")
    run(cfg, tmp_path / "inprocess", progress=False)
    before = live_children()
    final = run_flower(config.replace(cfg, engine="flower-sim"), tmp_path / "sim", progress=False)
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(started, timeout=15)
    assert [p.pid for p in alive] == []  # Ray is shut down
    assert_same_run(tmp_path / "inprocess", tmp_path / "sim")
    assert io.read_json(tmp_path / "sim" / "config.json")["engine"] == "flower-sim"
    assert final["test"]["n"] == cfg.synth_n_test


def submit(cfg, out, fed, progress=False, deadline=DEADLINE):
    """``fedlib train --engine flower`` against the loopback federation, over its TLS."""
    return run_flower(
        config.replace(cfg, engine="flower"),
        out,
        progress=progress,
        superlink=fed.address,
        root_certificates=fed.root_certificates,
        timeout=deadline,
    )


def test_deployment_equals_inprocess_reports_a_failed_run_and_stops_every_process(data_dir, tmp_path):
    # Stock SuperNodes, as a hospital runs them: TLS (certificates made for the test) and node
    # authentication (keys registered with `flwr supernode register`). A SuperNode whose key was
    # not registered is refused. FedProx: the proximal term is computed at the site, from the
    # config it is sent. Then a second run on the same SuperNodes with the coordinate-wise
    # median: a server-side strategy that needs every update of the round (the server
    # optimizers run on a deployment in the killed-SuperNode test below). Last, a run in which
    # every site fails on purpose and no retry is allowed: the ServerApp stops with RoundFailed,
    # reported in one line, and the federation still stops every process (one federation serves
    # the three runs: each start of a SuperLink and its SuperNodes costs seconds of CPU).
    cfg = smoke(data_dir, rounds=2, clients=3, fraction=1.0, client_timeout=60.0, strategy="fedprox", proximal_mu=0.1)
    median = config.replace(cfg, strategy="median", rounds=1)
    failing = smoke(
        data_dir, rounds=1, clients=3, fraction=1.0, inject_failures=1.0, round_retries=0, client_timeout=60.0
    )
    run(cfg, tmp_path / "inprocess", progress=False)
    run(median, tmp_path / "median-inprocess", progress=False)
    with LocalFederation(3, tmp_path / "flower", start_timeout=60) as fed:
        assert fed.supernode_command == ["flower-supernode"] and fed.root_certificates is not None
        stranger = fed.start_supernode("stranger", "partition-id=0 num-partitions=3", register=False)
        submit(cfg, tmp_path / "flower-run", fed)
        submit(median, tmp_path / "median-flower", fed)
        assert stranger.wait(timeout=60) != 0  # refused, not serving partition 0 beside supernode-0
        assert "Failed to activate SuperNode" in (fed.workdir / "logs" / "stranger.log").read_text()
        with pytest.raises(UserError, match="round 1: fewer than 1 client") as failed:
            submit(failing, tmp_path / "failed", fed)
        assert tagged(fed.tag)  # the processes were really there
    assert tagged(fed.tag) == [] and all(p.poll() is not None for p in fed.procs.values())
    assert not set(str(failed.value)) & set("╭╮╰╯│─")  # one plain line, no Flower panel borders
    assert not (tmp_path / "failed" / "final.json").exists()
    assert_same_run(tmp_path / "inprocess", tmp_path / "flower-run")
    assert_same_run(tmp_path / "median-inprocess", tmp_path / "median-flower")
    np.testing.assert_equal(
        io.read_json(tmp_path / "flower-run" / "final.json")["client_sizes"],
        io.read_json(tmp_path / "inprocess" / "final.json")["client_sizes"],
    )


def test_a_hospital_supernode_loads_its_uncached_images_inside_its_clientapp(tmp_path, capsys):
    # Two hospitals with their own COVIDx folders, never read before: each stock SuperNode's
    # ClientApp builds the image cache itself (on worker processes: 36 images each), then trains.
    from conftest import write_covidx

    def rows(prefix, n):
        labels = ("pneumonia", "normal", "COVID-19")
        return [(f"{prefix}{i}", f"{prefix}{i}.png", labels[i % 3]) for i in range(n)]

    hospitals = [write_covidx(tmp_path / f"h{i}", rows(f"h{i}-", 36 + 3 * i), rows(f"h{i}t-", 6)) for i in range(2)]
    evaluation = write_covidx(tmp_path / "eval", rows("e", 9), rows("et", 9))
    cfg = config.resolve("smoke", data=str(evaluation), rounds=1, clients=2, fraction=1.0, client_timeout=120.0)
    nodes = [f'partition-id={i} data-dir="{h}"' for i, h in enumerate(hospitals)]
    with LocalFederation(2, tmp_path / "flower", start_timeout=60, node_configs=nodes) as fed:
        submit(cfg, tmp_path / "r", fed, progress=True)
    assert tagged(fed.tag) == []
    shown = capsys.readouterr().err  # the ServerApp's log, and the run's status after its round
    assert apps.STARTED_MARK in shown and "fedlib: fedavg resnet18: round 1/1, train loss" in shown
    answers = io.read_history(tmp_path / "r" / "clients.csv")
    sizes = [
        len(load_site(json.dumps(config.to_dict(cfg)), json.dumps({"partition-id": 0, "data-dir": str(h)}))[1])
        for h in hospitals
    ]  # each hospital's own training split, less its validation hold-out
    assert sizes[0] < sizes[1] <= 39
    assert [(a["client"], a["status"], int(a["num_examples"])) for a in answers] == [
        ("0", "used", sizes[0]),
        ("1", "used", sizes[1]),
    ]
    for h in hospitals:  # built by the ClientApp, where the image files are
        assert list((h / ".fedlib_cache").glob("*.npy"))
    logs = "".join(f.read_text() for f in (fed.workdir / "logs").glob("*.log"))
    assert "authentication failed" not in logs


def test_federation_stops_when_the_caller_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with LocalFederation(2, tmp_path / "flower") as fed:
            raise KeyboardInterrupt
    assert tagged(fed.tag) == [] and all(p.poll() is not None for p in fed.procs.values())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(engine="flower"), "--engine flower needs --superlink"),
        (dict(engine="flower-sim", keep_optimizer_state=True), "--keep-optimizer-state is not supported"),
    ],
)
def test_flower_engine_user_errors(data_dir, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        run(smoke(data_dir, **overrides), tmp_path / "r", progress=False)


def test_secure_aggregation_matches_fedavg_within_its_quantisation(data_dir, tmp_path):
    from fedlib.flower.secagg import quantisation_bound

    cfg = smoke(data_dir, rounds=1, fraction=1.0)  # one round from the same start: compare the aggregates
    run(cfg, tmp_path / "plain", progress=False)
    run_flower(config.replace(cfg, engine="flower-sim", secagg=True), tmp_path / "secagg", progress=False)
    sizes = io.read_json(tmp_path / "plain" / "final.json")["client_sizes"]
    bound = quantisation_bound(len(sizes), sizes)
    plain, masked = weights(tmp_path / "plain"), weights(tmp_path / "secagg")
    worst = 0.0
    for key, value in plain.items():
        if value.is_floating_point():
            worst = max(worst, (value.double() - masked[key].double()).abs().max().item())
        else:
            assert torch.equal(value, masked[key]), key  # BatchNorm counters come back exact
    assert 0 < worst <= 1.05 * bound  # quantised (not a plain average in disguise), within the bound
    (row,) = io.read_history(tmp_path / "secagg" / "history.csv")
    assert row["clients_used"] == "3" and row["clients_dropped"] == "0"
    answers = io.read_history(tmp_path / "secagg" / "clients.csv")
    assert [(a["client"], a["status"], a["reason"]) for a in answers] == [
        (str(c), "used", "secure aggregate") for c in range(3)
    ]
    assert [int(a["num_examples"]) for a in answers] == sizes


def test_a_supernode_killed_mid_run_is_dropped_and_one_that_comes_back_is_used_again(data_dir, tmp_path):
    """Waits on events, each with its own limit stretched by the machine's load (``wait_for``):
    round 1, the round that loses the site, the site's return, then every later round. Under
    load (3-5 on 2 cores) one deadline for the whole run was missed twice in a row."""
    import signal
    import threading

    from fedlib.data.resolve import ensure_data_root

    # FedAdam: the server optimizer's state carries over a round that lost a site.
    cfg = smoke(
        data_dir,
        engine="flower",
        rounds=5,
        clients=3,
        fraction=1.0,
        client_timeout=120.0,  # a first round's ClientApps import PyTorch on a loaded machine; the dead
        min_clients=2,  # SuperNode does not cost it: the SuperLink answers for it once its heartbeat stops
        strategy="fedadam",
        server_lr=0.01,
    )
    ensure_data_root(cfg, progress=False)  # written once here, not by four processes at once
    out, outcome = tmp_path / "r", {}

    def rows() -> int:
        return len(io.read_history(out / "history.csv"))

    def state() -> str:
        return f"history.csv has {rows()} of {cfg.rounds} rounds; the run: {outcome or 'still running'}"

    def round_done(n: int) -> None:
        wait_for(f"round {n} to end (row {n} of history.csv)", lambda: rows() >= n, alive=worker.is_alive, state=state)

    with LocalFederation(3, tmp_path / "flower", start_timeout=60 * load_factor()) as fed:

        def train():
            try:  # the run's own deadline is only a backstop: the waits below say what took too long
                outcome["final"] = submit(cfg, out, fed, deadline=(cfg.rounds + 2) * EVENT_LIMIT * load_factor())
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        worker = threading.Thread(target=train, daemon=True)
        worker.start()
        round_done(1)
        site = psutil.Process(fed.procs["supernode-2"].pid)
        for proc in [*site.children(recursive=True), site]:  # the site's machine goes down
            proc.send_signal(signal.SIGKILL)
        round_done(2)  # round 2 ends without it
        fed.start_supernode("supernode-2-back", fed.node_configs[2], key="supernode-2")  # same key: same node
        log = fed.workdir / "logs" / "supernode-2-back.log"
        wait_for(
            "the restarted SuperNode to activate with the SuperLink ('SuperNode ID' in its log)",
            lambda: "SuperNode ID" in log.read_text(),
            alive=lambda: fed.procs["supernode-2-back"].poll() is None,
            state=state,
        )
        back = rows() + 2  # the first round that starts after that
        for n in range(rows() + 1, cfg.rounds + 1):
            round_done(n)
        wait_for("the run to write final.json and return", lambda: not worker.is_alive(), state=state)
    assert tagged(fed.tag) == []
    assert "error" not in outcome, outcome.get("error")
    used = [row["clients_used"] for row in io.read_history(out / "history.csv")]
    assert back <= 5, f"the SuperNode came back too late to be tested ({used})"
    assert used[:2] == ["3", "2"] and set(used[back - 1 :]) == {"3"}, (used, back)
    # The last attempt of each round (on a loaded machine a first attempt can time out and be retried).
    answers = io.read_history(out / "clients.csv")
    last = {a["round"]: a["attempt"] for a in answers}
    final = [a for a in answers if a["attempt"] == last[a["round"]]]
    assert [(a["round"], a["client"], a["status"]) for a in final if int(a["round"]) in (1, 2, back)] == [
        (str(r), str(c), "dropped" if (r, c) == (2, 2) else "used") for r in (1, 2, back) for c in range(3)
    ]
    assert "Node Unavailable" in final[5]["reason"] or final[5]["reason"].startswith("timeout")
    assert io.load_checkpoint(out)["strategy"]["strategy"] == "fedadam"  # the server optimizer's state is kept


def test_behind_the_readmes_fleet_gateway_hospitals_train_but_cannot_use_the_control_api(data_dir, tmp_path):
    # The README's nginx block, as written but for names, paths and ports: SuperNodes reach the
    # SuperLink only through it; `flwr` through it is refused, and works from the coordinator.
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import time

    from conftest import readme_block

    from fedlib.deploy.local import CONNECTION, flower_env, free_port, write_connection

    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (.ci/run installs nginx-light)")
    cfg = smoke(data_dir, rounds=1, clients=2, fraction=1.0, client_timeout=120.0)
    with LocalFederation(0, tmp_path / "flower", start_timeout=60) as fed:
        port, certs = free_port(), fed.workdir / "certs"
        server = readme_block("server {")
        for old, new in [
            ("listen 8443", f"listen 127.0.0.1:{port}"),
            ("127.0.0.1:8000", fed.address),
            ("/path/to/server.pem", str(certs / "server.pem")),
            ("/path/to/server.key", str(certs / "server.key")),
            ("/path/to/ca.crt", str(certs / "ca.crt")),
            ("coordinator.example.org", "localhost"),
        ]:
            assert old in server
            server = server.replace(old, new)
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers that can write the test's folders
        (prefix / "nginx.conf").write_text(
            f"{user}pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{}}\n"
            f"http {{\naccess_log {prefix}/logs/access.log;\nclient_body_temp_path {prefix}/body;\n"
            f"proxy_temp_path {prefix}/proxy;\n{server}}}\n"
        )
        gateway = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                assert gateway.poll() is None, gateway.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            for i in range(2):
                fed.start_supernode(
                    f"supernode-{i}", f"partition-id={i} num-partitions=2", superlink=f"127.0.0.1:{port}"
                )
            hospital = tmp_path / "hospital-home"  # a hospital's flwr, pointed at the gateway
            write_connection(hospital, f"127.0.0.1:{port}", fed.root_certificates)
            for command in (["supernode", "register", str(fed.workdir / "keys" / "supernode-0.pub")], ["ls"]):
                refused = subprocess.run(
                    [str(Path(sys.executable).parent / "flwr"), *command, CONNECTION],
                    env=flower_env(hospital),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert refused.returncode != 0, refused.stdout
            fed.flwr("ls", CONNECTION)  # the coordinator's own flwr reaches the Control API
            run(cfg, tmp_path / "inprocess", progress=False)
            submit(cfg, tmp_path / "r", fed)
        finally:
            gateway.send_signal(signal.SIGQUIT)
            gateway.wait(30)
    assert_same_weights(weights(tmp_path / "inprocess"), weights(tmp_path / "r"))
    paths = [line.split('"')[1].split()[1] for line in (prefix / "logs" / "access.log").read_text().splitlines()]
    statuses = [line.split('"')[2].split()[0] for line in (prefix / "logs" / "access.log").read_text().splitlines()]
    assert any(p.startswith("/v1/fleet/") for p in paths)
    assert {s for p, s in zip(paths, statuses, strict=True) if not p.startswith("/v1/fleet/")} == {"403"}
