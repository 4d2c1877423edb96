"""A real Flower deployment on one machine: one SuperLink and N SuperNodes on loopback.

Each process is the one a hospital federation runs, started as a hospital starts it:
``flower-superlink`` with TLS and SuperNode authentication, and stock
``flower-supernode``s that authenticate with their own keys (registered with ``flwr
supernode register`` before they start) and each serve their ClientApps on a port of
their own. Certificates and keys are made in the federation's folder
(``fedlib.deploy.credentials``). Everything listens on 127.0.0.1 only; each process has
a private ``FLWR_HOME``, telemetry and update checks off and no runtime dependency
installation, so nothing but loopback is used. ``secure=False`` runs it all
``--insecure`` instead.

Flower starts further processes of its own (SuperExec, and a ServerApp or ClientApp
process per run and message), some in new sessions, so a process group does not hold
them all. Every process started here therefore carries a tag in its environment, which
children inherit; ``stop`` ends every live process with the tag (terminate, then kill),
also after an error or Ctrl-C.

``warm=True`` starts fedlib's warm SuperNodes instead (``fedlib.deploy.warm``: shorter
idle waits and ClientApps forked from a process that has imported fedlib once). They
patch Flower internals and are opt-in; stock is what a hospital runs.

``run_local`` is ``fedlib flower-local``: such a federation, one run on it (or, with
``keep_up``, runs submitted by hand until Ctrl-C), and every process stopped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import config
from ..config import TrainConfig
from ..errors import UserError
from ..flower.connection import CONNECTION, flower_env, plain, write_connection
from ..flower.engine import num_sites, run_flower
from .credentials import TLSFiles, make_node_key, make_tls

TAG = "FEDLIB_FLOWER_FEDERATION"
# Flower's SuperExec looks for tasks every FLWR_SUPEREXEC_TASK_POLL_INTERVAL s (default 1); a
# supported setting, so the loopback federation sets it to 0.2 s for stock and warm alike.
SUPEREXEC_POLL = "0.2"


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; it stays free in practice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``TAG=tag``."""
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        env = proc.info["environ"] or {}
        if env.get(TAG) == tag and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


class LocalFederation:
    """``with LocalFederation(n, workdir) as fed:`` a SuperLink at ``fed.address`` and n
    SuperNodes (node config ``partition-id=i num-partitions=n``, or ``node_configs[i]``),
    stopped on exit. ``fed.root_certificates`` is the CA file to reach it with (None when
    ``secure=False``)."""

    def __init__(
        self,
        supernodes: int,
        workdir: str | Path,
        start_timeout: float = 60.0,
        warm: bool = False,
        secure: bool = True,
        node_configs: list[str] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.start_timeout, self.warm, self.secure = start_timeout, warm, secure
        self.node_configs = node_configs or [f"partition-id={i} num-partitions={supernodes}" for i in range(supernodes)]
        self.home = self.workdir / "flwr-home"
        self.tag = uuid.uuid4().hex
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.tls: TLSFiles | None = None
        self.supernode_command = ["flower-supernode"]

    @property
    def root_certificates(self) -> str | None:
        return str(self.tls.ca) if self.tls else None

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.secure:
            self.tls = make_tls(self.workdir / "certs")
            security = [
                "--ssl-ca-certfile",
                str(self.tls.ca),
                "--ssl-certfile",
                str(self.tls.certificate),
                "--ssl-keyfile",
                str(self.tls.key),
                "--enable-supernode-auth",
            ]
        else:
            security = ["--insecure"]
        write_connection(self.home, self.address, self.root_certificates)
        self._spawn(
            "superlink",
            "flower-superlink",
            *security,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        )
        self._wait_listening()
        if self.warm:
            from .warm import supernode_command

            self.supernode_command = supernode_command()
        for i, node_config in enumerate(self.node_configs):
            self.start_supernode(f"supernode-{i}", node_config)

    def start_supernode(
        self, name: str, node_config: str, register: bool = True, key: str | None = None, superlink: str | None = None
    ) -> subprocess.Popen:
        """Start one more SuperNode called ``name`` (its log: logs/NAME.log). With TLS it gets a
        key pair of its own, registered unless ``register=False`` (then the SuperLink refuses
        it); ``key`` names an earlier SuperNode whose key it takes, so it comes back as that node.
        ``superlink``: the address it connects to (default the SuperLink's; e.g. a gateway's)."""
        security = ["--insecure"]
        if self.secure:
            key = self.workdir / "keys" / (key or name)
            if not key.exists():
                make_node_key(key)
                if register:
                    self.flwr("supernode", "register", str(key) + ".pub", CONNECTION)
            security = ["--root-certificates", str(self.tls.ca), "--auth-supernode-private-key", str(key)]
        return self._spawn(
            name,
            *self.supernode_command,
            *security,
            "--superlink",
            superlink or self.address,
            "--port",  # the SuperNode's own ClientApp API: one port per SuperNode on a machine
            str(free_port()),
            "--node-config",
            node_config,
        )

    def flwr(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``flwr ARGS`` against this SuperLink (the coordinator's CLI); its output."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise UserError(
                f"flwr {' '.join(args)} failed (exit code {done.returncode}): {plain(done.stdout + done.stderr)}"
            )
        return done.stdout

    def env(self) -> dict[str, str]:
        """Flower's environment (``flower_env``) with this federation's tag, which every child inherits."""
        return {**flower_env(self.home), TAG: self.tag}

    def _spawn(self, name: str, *command: str) -> subprocess.Popen:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = self.env()
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL)
        with open(log, "wb") as fh:
            self.procs[name] = subprocess.Popen(
                command, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return self.procs[name]

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise UserError(
            f"the SuperLink did not listen on {self.address} within {self.start_timeout:g} s; "
            f"see {self.workdir / 'logs' / 'superlink.log'}."
        )

    def check_alive(self) -> None:
        """Raise if a SuperLink or SuperNode has exited (it should run until ``stop``)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise UserError(
                    f"the {name} exited with code {proc.returncode}; see {self.workdir / 'logs' / (name + '.log')}."
                )

    def stop(self, grace: float = 10.0) -> None:
        """End every process of this federation: terminate, wait ``grace`` s, then kill."""
        for _ in range(3):  # a dying parent may still have started a child
            procs = tagged(self.tag)
            if not procs:
                break
            for proc in procs:
                _signal(proc, psutil.Process.terminate)
            _, alive = psutil.wait_procs(procs, timeout=grace)
            for proc in alive:
                _signal(proc, psutil.Process.kill)
            psutil.wait_procs(alive, timeout=grace)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # reap our own children


def _signal(proc: psutil.Process, send) -> None:
    try:
        send(proc)
    except psutil.NoSuchProcess:
        pass


@dataclass(frozen=True)
class LocalRun:
    """How ``fedlib flower-local`` runs besides the config: ``keep_up`` waits for runs submitted
    by hand instead of running one; ``workdir`` holds certificates, keys and logs (default: a
    temporary folder, removed after); ``warm``: fedlib's warm SuperNodes; the rest as for
    ``run_flower``."""

    keep_up: bool = False
    workdir: str | Path | None = None
    warm: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def run_local(cfg: TrainConfig, out: str | Path | None, how: LocalRun = LocalRun()) -> dict | None:
    """``fedlib flower-local``: a SuperLink (TLS, SuperNode authentication) and one stock
    SuperNode per client on loopback (``how.warm``: fedlib's warm ones); runs ``cfg`` on them
    into ``out``, or with ``how.keep_up`` waits for runs until Ctrl-C. Stops them all."""
    cfg = config.replace(config.absolute_paths(cfg), engine="flower")
    sites = num_sites(cfg, Path(out or "."), how.resume, how.progress)
    own = how.workdir is None
    workdir = Path(how.workdir or tempfile.mkdtemp(prefix="fedlib-flower-"))
    with LocalFederation(sites, workdir, warm=how.warm) as fed:
        if how.keep_up:
            _serve_until_interrupted(fed, cfg, sites)
            final = None
        else:
            try:
                final = run_flower(
                    cfg,
                    out,
                    resume=how.resume,
                    overwrite=how.overwrite,
                    progress=how.progress,
                    superlink=fed.address,
                    root_certificates=fed.root_certificates,
                )
            except UserError as exc:
                raise UserError(f"{exc} (Flower logs: {workdir / 'logs'})") from None
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return final


def _serve_until_interrupted(fed: LocalFederation, cfg: TrainConfig, sites: int) -> None:
    print(
        f"SuperLink on {fed.address} with {sites} SuperNodes (partition-id 0 to {sites - 1}); "
        f"logs in {fed.workdir / 'logs'}. Submit a run from another shell:\n"
        f"  fedlib train --engine flower --superlink {fed.address} --root-certificates {fed.root_certificates} "
        f"--profile {cfg.profile} "
        f"--clients {cfg.clients} --out runs/flower-demo\n"
        "Ctrl-C stops the SuperLink and the SuperNodes.",
        flush=True,
    )
    try:
        while True:
            fed.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping the SuperLink and the SuperNodes", flush=True)
