"""A real Flower deployment on one machine: one SuperLink and N SuperNodes on loopback.

Each process is the one a hospital federation runs (``flower-superlink``,
``flower-supernode``), only on 127.0.0.1 without TLS (``--insecure``), on free
ports, with a private ``FLWR_HOME``, telemetry and update checks off and no
runtime dependency installation, so nothing but loopback is used.

Flower starts further processes of its own (SuperExec, and a ServerApp or
ClientApp process per run and message), some in new sessions, so a process
group does not hold them all. Every process started here therefore carries a
tag in its environment, which children inherit; ``stop`` ends every live
process with the tag (terminate, then kill), also after an error or Ctrl-C.

Speed (``warm=True``, the default). Flower 1.42 runs every message in a new
``flwr-clientapp`` process, which imports PyTorch and fedlib again (about 3 s
on a laptop CPU, more than a quick round's training), and a SuperNode asks the
SuperLink for work every 3 s. ``warm`` starts each SuperNode through
``python -m fedlib.flower.local supernode`` (``flower-supernode`` itself, with
its idle waits cut to ``POLL`` s) with ``--isolation process``, next to a
``python -m fedlib.flower.local clientapp-executor`` that plays Flower's
SuperExec for it: it imports the ClientApp module once and forks a child per
message that runs Flower's own ``flwr-clientapp`` code (``run_clientapp``).
Messages, the Runtime API and the maths are Flower's and fedlib's as before;
only process start-up and idle waiting are shorter. ``warm=False`` runs the
stock ``flower-supernode`` (subprocess isolation), as a site without fedlib's
helpers would. Both patch Flower internals of version 1.42 (see ``_fast_sleep``
and ``ForkExecutor``); a newer Flower may need them checked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from ..errors import UserError

TAG = "FEDLIB_FLOWER_FEDERATION"
CONNECTION = "fedlib"  # the SuperLink connection's name in FLWR_HOME/config.toml
POLL = 0.2  # seconds a warm SuperNode waits between looks for work (stock: 3 s)
# Flower's SuperExec looks for tasks every FLWR_SUPEREXEC_TASK_POLL_INTERVAL s (default 1).
SUPEREXEC_POLL = "0.2"
MODULE = "fedlib.flower.local"  # this file as a command: python -m fedlib.flower.local ...
APP_MODULE = "fedlib.flower.apps"  # what a warm ClientApp executor imports before it forks


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; it stays free in practice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path, tag: str | None = None) -> dict[str, str]:
    """The environment of Flower's processes: this Python's Flower, a private home, offline."""
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp by name: use this Python's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if tag is not None:
        env[TAG] = tag
    return env


def write_connection(home: Path, address: str, root_certificates: str | None = None) -> None:
    """FLWR_HOME/config.toml naming the SuperLink that `flwr run ... fedlib` talks to."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{Path(root_certificates).resolve()}"' if root_certificates else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\n{security}\n'
    )


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
    SuperNodes (node config ``partition-id=i num-partitions=n``), stopped on exit."""

    def __init__(self, supernodes: int, workdir: str | Path, start_timeout: float = 60.0, warm: bool = True):
        self.supernodes, self.workdir = supernodes, Path(workdir).resolve()
        self.start_timeout, self.warm = start_timeout, warm
        self.home = self.workdir / "flwr-home"
        self.tag = uuid.uuid4().hex
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

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
        write_connection(self.home, self.address)
        self._spawn(
            "superlink",
            "flower-superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        )
        self._wait_listening()
        for i in range(self.supernodes):
            command = [sys.executable, "-m", MODULE, "supernode"] if self.warm else ["flower-supernode"]
            self._spawn(
                f"supernode-{i}",
                *command,
                "--insecure",
                "--superlink",
                self.address,
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={i} num-partitions={self.supernodes}",
            )

    def _spawn(self, name: str, *command: str) -> subprocess.Popen:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = flower_env(self.home, self.tag)
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


# ---- the warm SuperNode and ClientApp executor (``python -m fedlib.flower.local ...``) -----------


def _fast_sleep(seconds: float = POLL) -> None:
    """Cut a SuperNode's idle waits: it sleeps 3 s when the SuperLink has no message for
    it and 0.5 s while it waits for a ClientApp's reply; both become ``seconds``."""
    import time as real_time

    import flwr.supernode.start_client_internal as supernode_loop

    class _Time:
        def __getattr__(self, name):
            return getattr(real_time, name)

        @staticmethod
        def sleep(s: float) -> None:
            real_time.sleep(min(s, seconds))

    supernode_loop.time = _Time()  # the module's only use of time is sleep


def run_supernode(argv: list[str]) -> None:
    """``flower-supernode ARGV`` with shorter idle waits and ``--isolation process``, served
    by a warm ClientApp executor that this process starts as its child (as the stock
    SuperNode starts ``flower-superexec``); both stop when it stops."""
    import argparse

    from flwr.supernode.cli.flower_supernode import flower_supernode

    known = argparse.ArgumentParser(add_help=False)
    known.add_argument("--host", default="127.0.0.1")
    known.add_argument("--port", default="9094")
    known.add_argument("--isolation")
    known.add_argument("--ssl-ca-certfile")  # the Runtime API's TLS, as Flower's own SuperExec gets it
    args, _ = known.parse_known_args(argv)
    if args.isolation not in (None, "process"):
        sys.exit("python -m fedlib.flower.local supernode runs its own ClientApp executor; leave out --isolation.")
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    tls = ["--root-certificates", args.ssl_ca_certfile] if args.ssl_ca_certfile else ["--insecure"]
    executor = [
        sys.executable,
        "-m",
        MODULE,
        "clientapp-executor",
        *tls,
        "--runtime-api-address",
        f"{host}:{args.port}",
        "--parent-pid",
        str(os.getpid()),
    ]
    subprocess.Popen(executor, stdin=subprocess.DEVNULL)  # noqa: S603 -- reaped by init if we die first
    _fast_sleep()
    sys.argv = ["flower-supernode", *argv, *([] if args.isolation else ["--isolation", "process"])]
    flower_supernode()


def run_clientapp_executor(argv: list[str]) -> None:
    """``flower-superexec`` for one SuperNode (``--isolation process``) that forks its
    ClientApp processes from itself, with the ClientApp module already imported."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="python -m fedlib.flower.local clientapp-executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--app-module", default=APP_MODULE)
    args = parser.parse_args(argv)

    importlib.import_module(args.app_module)  # PyTorch and fedlib, once; every fork inherits them
    from flwr.supercore.superexec import run_superexec as superexec

    executor = ForkExecutor()
    superexec.get_executor = lambda *a, **k: executor
    superexec.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


class ForkExecutor:
    """A SuperExec executor (flwr.supercore.superexec.executor.types.Executor) that runs a
    ClientApp task in a forked child calling Flower's ``run_clientapp``, the body of the
    ``flwr-clientapp`` command; other task types start their command as Flower does."""

    def __init__(self):
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self.fallback, self.owner, self.children = SubprocessExecutor(), os.getpid(), set()

    def get_eligible_capacity(self, supported_task_types, **kwargs):
        return self.fallback.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, *args, **kwargs) -> None:
        self.fallback.wait_for_capacity(*args, **kwargs)

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self.fallback.launch(spec)
        pid = os.fork()
        if pid == 0:
            os._exit(_clientapp_child(spec))
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the children that have ended."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        if os.getpid() == self.owner:
            self.fallback.close()


def _clientapp_child(spec) -> int:
    """In the forked child: what ``flwr-clientapp --token ...`` would do; its exit code."""
    from flwr.supercore.exit import exit_handler
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        with exit_handler._lock_handlers:  # the parent's handlers close the parent's connections
            exit_handler.registered_exit_handlers.clear()
        if spec.suppress_output:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 -- the child must never return into the parent's loop
        import traceback

        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"supernode": run_supernode, "clientapp-executor": run_clientapp_executor}
    if not argv or argv[0] not in commands:
        sys.exit(f"usage: python -m {MODULE} {{{','.join(commands)}}} ARGS...")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
