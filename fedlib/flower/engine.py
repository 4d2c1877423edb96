"""``fedlib train --engine flower-sim | flower``: hand a FedAvg run to Flower.

``flower-sim`` runs the ServerApp in this process and the ClientApps in Flower's
simulation runtime (Ray actors). ``flower`` submits the Flower App to a running
SuperLink with ``flwr run``; the ServerApp then runs on the SuperLink's machine
and writes the run directory there. Either way the run directory is written by
``fedlib.runner.train``, as for the in-process engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import astuple, dataclass
from pathlib import Path

import tomli_w

from .. import config
from ..config import TrainConfig
from ..errors import UserError
from ..experiment import setup
from ..run import folder, io
from .connection import CONNECTION, flower_env, plain, write_connection

START_TIMEOUT = 180.0  # seconds from `flwr run` until the ServerApp must have said it started
APP_DIR = Path(__file__).parent / "app"  # the Flower App (pyproject.toml) that `flwr run` submits


@dataclass(frozen=True)
class RunFlags:
    """How a run treats its folder and the terminal, as ``fedlib.runner.train`` takes them."""

    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def run_flower(
    cfg: TrainConfig,
    out: str | Path,
    *,
    superlink: str | None = None,
    root_certificates: str | None = None,
    timeout: float | None = None,
    **flags,
) -> dict:
    """Train ``cfg`` (engine flower-sim or flower) into ``out``; returns final.json's content.

    ``superlink`` (HOST:PORT) and ``root_certificates`` (a CA file for TLS; without
    it the connection is insecure) are for ``flower``; ``timeout`` bounds its wait.
    ``flags``: ``RunFlags``' resume, overwrite and progress.
    """
    resume, overwrite, progress = astuple(RunFlags(**flags))
    if cfg.keep_optimizer_state:
        raise UserError(
            f"--keep-optimizer-state is not supported with --engine {cfg.engine} (the quick "
            "profile turns it on for ResNeXt-50); pass --no-keep-optimizer-state or use "
            "--engine inprocess."
        )
    out = Path(out).resolve()
    folder.check_target(out, resume=resume, overwrite=overwrite)
    cfg = config.absolute_paths(cfg)
    if cfg.engine == "flower-sim":
        simulate(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    elif superlink is None:
        raise UserError(
            "--engine flower needs --superlink HOST:PORT of a running SuperLink; "
            "try `fedlib flower-local` for one on this machine."
        )
    else:
        submit(
            cfg,
            out,
            superlink,
            root_certificates=root_certificates,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            timeout=timeout,
        )
    return io.read_json(out / "final.json")


def num_sites(cfg: TrainConfig, out: Path, resume: bool, progress: bool) -> int:
    """How many clients the run has (by_source: one per source). Loading the data
    here also writes the synthetic set before any site process looks for it."""
    if resume and (out / "config.json").exists():
        cfg = TrainConfig(**io.read_json(out / "config.json"))
    return len(setup(cfg, out, progress).parts)


def simulate(cfg: TrainConfig, out: Path, *, resume: bool, overwrite: bool, progress: bool) -> None:
    """The run on Flower's simulation runtime: one virtual SuperNode per client."""
    import ray
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from .apps import client_app, serve

    sites = num_sites(cfg, out, resume, progress)
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        serve(grid, context, cfg, out, resume=resume, overwrite=overwrite, progress=progress)

    # One actor with every core trains the clients in turn, as in-process does.
    gpus = 1.0 if cfg.device != "cpu" and _cuda() else 0.0
    cpus = os.cpu_count() or 1
    backend = {
        "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
        "init_args": {"num_cpus": cpus, "num_gpus": int(gpus), "logging_level": "error", "log_to_driver": progress},
    }
    pythonpath = os.environ.get("PYTHONPATH")  # Flower's Ray backend overwrites it
    try:
        run_simulation(server_app, client_app, num_supernodes=sites, backend_config=backend, verbose_logging=False)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def submit(
    cfg: TrainConfig,
    out: Path,
    superlink: str,
    *,
    root_certificates: str | None,
    timeout: float | None,
    **flags,
) -> None:
    """``flwr run`` of fedlib's Flower App on the SuperLink at ``superlink``; waits for the end.
    ``flags``: ``RunFlags``' resume, overwrite and progress."""
    resume, overwrite, progress = astuple(RunFlags(**flags))
    from .apps import ERROR_MARK

    with tempfile.TemporaryDirectory(prefix="fedlib-flwr-") as tmp:
        home = Path(tmp) / "flwr-home"
        write_connection(home, superlink, root_certificates)
        run_config = Path(tmp) / "run-config.toml"
        run_config.write_text(
            tomli_w.dumps(
                {
                    "train-config": json.dumps(config.to_dict(cfg)),
                    "run-dir": str(out),
                    "resume": resume,
                    "overwrite": overwrite,
                }
            )
        )
        command = [
            str(Path(sys.executable).parent / "flwr"),
            "run",
            str(APP_DIR),
            CONNECTION,
            "--run-config",
            str(run_config),
            "--stream",
        ]
        # The ServerApp writes the run folder; on the coordinator (where it lives) its status
        # line after each round is shown here, between Flower's log lines.
        watching = folder.watch_progress(out, _show) if progress else contextlib.nullcontext()
        with watching:
            code, tail, stopped = _follow(command, flower_env(home), progress, timeout)
    errors = [line.split(ERROR_MARK, 1)[1].strip() for line in tail if ERROR_MARK in line]
    if errors:
        raise UserError(plain(errors[-1]))
    if stopped == "start":
        raise UserError(
            f"the SuperLink at {superlink} took the run but its ServerApp did not start within {START_TIMEOUT:g} s; "
            "see the SuperLink's log (a server certificate without the address the SuperLink's own SuperExec "
            "uses, IP:127.0.0.1, fails there with 'IP address mismatch'), then `flwr stop` the run."
        )
    if stopped == "deadline":
        raise UserError(
            f"the Flower run did not finish within --deadline {timeout:g} s; `flwr stop` it on the SuperLink."
        )
    if not (out / "final.json").exists():
        raise UserError(
            f"the Flower run ended (flwr exit code {code}) without writing {out / 'final.json'}; "
            f"its log ends with: {plain(' | '.join(line.strip() for line in tail[-5:]))}"
        )


def _show(line: str) -> None:
    print(f"fedlib: {line}", file=sys.stderr, flush=True)


def _follow(command: list[str], env: dict, echo: bool, timeout: float | None) -> tuple[int, list[str], str | None]:
    """Run ``command`` (``flwr run ... --stream``), echoing its output if asked; (exit code,
    last lines, why it was stopped: "start" when the ServerApp did not say it started within
    ``START_TIMEOUT`` s, "deadline" after ``timeout`` s, else None)."""
    from .apps import STARTED_MARK

    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    started, stopped = threading.Event(), []

    def watch() -> None:
        if not started.wait(START_TIMEOUT if timeout is None else min(START_TIMEOUT, timeout)):
            stopped.append("start" if timeout is None or timeout > START_TIMEOUT else "deadline")
            proc.kill()
        elif timeout is not None and proc.poll() is None:
            try:
                proc.wait(max(timeout - (time.monotonic() - begun), 0))
            except subprocess.TimeoutExpired:
                stopped.append("deadline")
                proc.kill()

    begun = time.monotonic()
    watcher = threading.Thread(target=watch, daemon=True)
    tail: deque[str] = deque(maxlen=200)
    try:
        watcher.start()
        for line in proc.stdout:
            tail.append(line)
            if STARTED_MARK in line:
                started.set()
            if echo:
                sys.stderr.write(line)
        proc.wait()
    finally:
        started.set()  # the watcher stops waiting
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    watcher.join()
    return proc.returncode, list(tail), stopped[0] if stopped else None
