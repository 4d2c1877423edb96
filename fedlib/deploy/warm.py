"""Warm SuperNodes (opt-in: ``fedlib flower-local --warm``): every patch of Flower's
internals that fedlib makes lives here, checked before use.

Flower 1.42 runs every message in a new ``flwr-clientapp`` process, which imports
PyTorch and fedlib again (about 3 s on a laptop CPU, more than a quick round's
training), and a SuperNode asks the SuperLink for work every 3 s. No supported Flower
setting shortens either (its warm executor pools serve Kubernetes and other task types
only). A warm SuperNode is ``python -m fedlib.deploy.warm supernode ARGS``:
``flower-supernode ARGS --isolation process`` with its idle waits cut to ``POLL`` s,
next to ``python -m fedlib.deploy.warm clientapp-executor``, which plays Flower's
SuperExec for it and starts each ClientApp from a fork server that imported fedlib
once. The child runs Flower's own ``run_clientapp``, so messages, the Runtime API and
the maths are Flower's and fedlib's as on a stock SuperNode.

Fork safety: the fork server is a fresh interpreter (``multiprocessing``'s forkserver)
started before the executor opens any connection; it imports fedlib (no threads, no
channels) and forks one child per message, so no child inherits a gRPC channel, an
HTTP client, an OpenMP thread pool or Flower's exit handlers.

The patches (``PATCHED``) are written against Flower ``FLOWER_VERSION``. ``problems()``
checks the installed Flower's version and every attribute used before anything is
touched; on any mismatch ``supernode_command`` warns in one line and falls back to the
stock ``flower-supernode``. tests/test_flower_warm.py fails loudly when an upgrade
removes what is patched here.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import warnings

FLOWER_VERSION = "1.42.0"  # the Flower release these patches were written and tested against
POLL = 0.2  # seconds a warm SuperNode waits between looks for work (stock: 3 s and 0.5 s)
MODULE = "fedlib.deploy.warm"  # this file as a command: python -m fedlib.deploy.warm ...
APP_MODULE = "fedlib.flower.apps"  # what the fork server imports once

# (module, attribute, what fedlib does with it). Every entry is checked by problems().
PATCHED = [
    ("flwr.supernode.start_client_internal", "time", "replaced: its sleep() is capped at POLL s"),
    ("flwr.supernode.cli.flower_supernode", "flower_supernode", "called as the SuperNode's main"),
    ("flwr.supercore.superexec.run_superexec", "get_executor", "replaced: returns fedlib's ForkExecutor"),
    ("flwr.supercore.superexec.run_superexec", "run_superexec", "called as the executor's main"),
    ("flwr.supercore.superexec.executor.subprocess_executor", "SubprocessExecutor", "non-ClientApp tasks"),
    ("flwr.supercore.superexec.executor.types", "LaunchResult", "what launch() returns"),
    ("flwr.supercore.constant", "TaskType", "TaskType.CLIENT_APP picks the forked path"),
    ("flwr.supernode.runtime.run_clientapp", "run_clientapp", "the body of flwr-clientapp, in each child"),
    ("flwr.supercore.tls", "validate_and_resolve_root_certificates", "the child's TLS settings"),
]
# Keyword arguments fedlib passes, per called function.
ARGUMENTS = {
    ("flwr.supercore.superexec.run_superexec", "run_superexec"): {
        "runtime_api_address",
        "insecure",
        "root_certificates_path",
        "parent_pid",
        "runtime_dependency_install",
    },
    ("flwr.supernode.runtime.run_clientapp", "run_clientapp"): {
        "runtime_api_address",
        "token",
        "insecure",
        "certificates",
        "parent_pid",
        "runtime_dependency_install",
    },
}


def problems() -> list[str]:
    """What keeps the warm patches from applying to the installed Flower (empty: they apply)."""
    import flwr

    found = []
    if flwr.__version__ != FLOWER_VERSION:
        found.append(f"Flower {flwr.__version__} is installed, the warm SuperNode is written for {FLOWER_VERSION}")
    for module_name, attribute, _ in PATCHED:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            found.append(f"{module_name} cannot be imported ({exc})")
            continue
        if not hasattr(module, attribute):
            found.append(f"{module_name}.{attribute} is gone")
            continue
        needed = ARGUMENTS.get((module_name, attribute))
        missing = needed - set(inspect.signature(getattr(module, attribute)).parameters) if needed else None
        if missing:
            found.append(f"{module_name}.{attribute} takes no {', '.join(sorted(missing))}")
    loop = sys.modules.get("flwr.supernode.start_client_internal")
    if loop is not None and getattr(loop, "time", None) is not None and not hasattr(loop.time, "sleep"):
        found.append("flwr.supernode.start_client_internal.time has no sleep()")
    types = sys.modules.get("flwr.supercore.superexec.executor.types")
    if types is not None and hasattr(types, "ExecutionSpec"):
        fields = set(getattr(types.ExecutionSpec, "__dataclass_fields__", {}))
        wanted = {"task_type", "runtime_api_address", "token", "insecure", "root_certificates_path"}
        wanted |= {"runtime_dependency_install", "parent_pid", "suppress_output"}
        if not wanted <= fields:
            found.append(f"ExecutionSpec lacks {', '.join(sorted(wanted - fields))}")
    constant = sys.modules.get("flwr.supercore.constant")
    if constant is not None and hasattr(constant, "TaskType") and not hasattr(constant.TaskType, "CLIENT_APP"):
        found.append("TaskType.CLIENT_APP is gone")
    return found


def supernode_command() -> list[str]:
    """How to start a warm SuperNode; stock ``flower-supernode`` (with a one-line warning)
    when the installed Flower is not the one the patches were checked against."""
    found = problems()
    if found:
        warnings.warn(f"warm SuperNodes are off, stock ones run instead: {'; '.join(found)}", stacklevel=2)
        return ["flower-supernode"]
    return [sys.executable, "-m", MODULE, "supernode"]


def _fast_sleep(seconds: float = POLL) -> None:
    """Cap a SuperNode's idle waits at ``seconds``: it sleeps 3 s when the SuperLink has no
    message for it and 0.5 s while it waits for a ClientApp's reply."""
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

    found = problems()
    if found:  # started by hand on another Flower: run the stock SuperNode, as supernode_command would
        print(f"fedlib: warning: stock SuperNode instead: {'; '.join(found)}", file=sys.stderr, flush=True)
        os.execvp("flower-supernode", ["flower-supernode", *argv])
    from flwr.supernode.cli.flower_supernode import flower_supernode

    known = argparse.ArgumentParser(add_help=False)
    known.add_argument("--host", default="127.0.0.1")
    known.add_argument("--port", default="9094")
    known.add_argument("--isolation")
    known.add_argument("--ssl-ca-certfile")  # the Runtime API's TLS, as Flower's own SuperExec gets it
    args, _ = known.parse_known_args(argv)
    if args.isolation not in (None, "process"):
        sys.exit(f"python -m {MODULE} supernode runs its own ClientApp executor; leave out --isolation.")
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
    """``flower-superexec`` for one SuperNode (``--isolation process``) whose ClientApp
    processes are forked by a fork server that has imported the ClientApp module."""
    import argparse
    import multiprocessing
    from multiprocessing import forkserver

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE} clientapp-executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--app-module", default=APP_MODULE)
    args = parser.parse_args(argv)

    # The fork server starts now, before this process opens any connection or thread.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([args.app_module])
    forkserver.ensure_running()
    from flwr.supercore.superexec import run_superexec as superexec

    executor = ForkExecutor(context)
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
    ClientApp task in a child of the fork server, calling Flower's ``run_clientapp``;
    other task types start their command as Flower does."""

    def __init__(self, context):
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self.fallback, self.context, self.children = SubprocessExecutor(), context, []

    def get_eligible_capacity(self, supported_task_types, **kwargs):
        return self.fallback.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, *args, **kwargs) -> None:
        self.fallback.wait_for_capacity(*args, **kwargs)

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self.fallback.launch(spec)
        child = self.context.Process(target=clientapp_child, args=(spec,), name=f"clientapp-{spec.task_id}")
        child.start()
        self.children.append(child)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the children that have ended."""
        for child in [c for c in self.children if c.exitcode is not None]:
            child.join()
            self.children.remove(child)

    def close(self) -> None:
        self.fallback.close()


def clientapp_child(spec) -> None:
    """In a child of the fork server: what ``flwr-clientapp --token ...`` does."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    if spec.suppress_output:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
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
