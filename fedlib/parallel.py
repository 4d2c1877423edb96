"""``--parallel-clients N``: a round's sampled clients trained up to N at a time.

N worker processes each hold one model replica, so memory grows with N, not with the
clients a round samples, and at most N updates are in flight or waiting. A worker opens
the run's cached images as the same read-only memory map and trains a client with
``fedlib.client.fit``, exactly the call the sequential pool makes, from the same global
weights. All randomness of that call derives from (seed, round, client), and dropout draws
from the worker's own process-wide generator, seeded per call; so each client's update is
the sequential one, bit for bit at equal thread counts (each worker gets the process's
threads divided by N). Updates come back in client order.

Processes rather than threads: dropout draws from PyTorch's process-wide generator, which
two threads would share (and reseed under each other), and a batch's host work (the
augmentation's draws, Python) holds the GIL. On a GPU the workers share the device, each
with its own CUDA context: while one worker's host prepares a batch, another's kernels run.
"""

from __future__ import annotations

import io
import signal
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing import connection, get_context

import numpy as np
import torch

from . import client
from .errors import UserError
from .experiment import Experiment, new_model

# (its starting weights, the client's task: which round and client, optimizer state, the strategy's extra): one job
Job = tuple[dict, "client.Task"]
# (update or None, optimizer state, seconds the fit took, why it failed or None): one outcome
Outcome = tuple["client.Update | None", "dict | None", float, "str | None"]


def dumps(obj) -> bytes:
    """``obj`` (tensors, dicts, an ``Update``) as bytes: a pipe carries them whole, with no
    shared-memory file descriptors to run out of."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False)  # our own worker's bytes, never a file


def image_source(images: np.ndarray):
    """What a worker opens to read ``images``: the cache file it maps, or the array itself."""
    name = getattr(images, "filename", None)
    if isinstance(images, np.memmap) and name and np.load(name, mmap_mode="r").shape == images.shape:
        return str(name)
    return np.asarray(images)


def fit_outcome(model, data: tuple, cfg, hw, task: client.Task) -> Outcome:
    """``client.fit`` of ``task.client`` on ``model`` (holding its start weights) and ``data``
    (images, labels, its indices), timed, with a failure caught as the reason it is dropped:
    what both pools make of one client."""
    started = time.perf_counter()
    try:
        update, opt = client.fit(model, data, cfg, hw, task)
    except Exception as exc:  # a failing site must not take the federation down
        return None, None, time.perf_counter() - started, f"raised {type(exc).__name__}: {exc}"
    return update, opt, time.perf_counter() - started, None


def _serve(conn, cfg, hw, num_classes: int, data: tuple, threads: int) -> None:
    """A worker: one model replica, then jobs until the pool sends None or goes away.
    ``data``: (the images or the cache file they map, the labels)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends us
    torch.set_num_threads(threads)
    images, labels = data
    images = np.load(images, mmap_mode="r") if isinstance(images, str) else images
    model = new_model(cfg, num_classes, hw)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        state, indices, task = job
        model.load_state_dict(loads(state))
        update, opt, took, error = fit_outcome(model, (images, labels, indices), cfg, hw, loads(task))
        conn.send(dumps((update, opt if cfg.keep_optimizer_state else None, took, error)))


class Workers:
    """N worker processes for one run, started at the first round and ended by ``close``."""

    def __init__(self, exp: Experiment, n: int):
        self.exp, self.n = exp, n
        self.procs: list = []
        self.conns: list = []

    def _start(self) -> None:
        if self.procs:
            return
        exp, ctx = self.exp, get_context("spawn")  # a fresh interpreter: no inherited threads or handlers
        threads = max(1, torch.get_num_threads() // self.n)
        data = (image_source(exp.data.train_images), exp.data.train_labels)
        args = (exp.cfg, exp.hw, len(exp.data.classes), data)
        for _ in range(self.n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, *args, threads), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def fit(self, jobs: list[Job]) -> Iterator[tuple[int, Outcome]]:
        """Each job's outcome, in the jobs' order; at most N updates are in flight or waiting
        to be taken. A generator left early ends the workers (a later call starts new ones)."""
        self._start()
        order, queue = [task.client for _, task in jobs], deque(jobs)
        parts, blobs = self.exp.parts, {}  # a start state shared by several clients is serialised once
        idle, busy, done = list(range(self.n)), {}, {}
        try:
            while order:
                while idle and queue and len(busy) + len(done) < self.n:
                    w = idle.pop()
                    state, task = queue.popleft()
                    c = busy[w] = task.client
                    if id(state) not in blobs:
                        blobs[id(state)] = dumps(state)
                    try:
                        self.conns[w].send((blobs[id(state)], parts[c], dumps(task)))
                    except OSError:
                        self._died(w, c)
                if order[0] not in done:
                    self._collect(busy, done, idle)
                    continue
                c = order.pop(0)
                yield c, loads(done.pop(c))
        finally:
            if busy:  # left early: what they are training is nobody's any more
                self.close(abort=True)

    def _collect(self, busy: dict, done: dict, idle: list) -> None:
        """Wait for at least one busy worker's answer; a worker that died is the run's end."""
        conns = {self.conns[w]: w for w in busy}
        deaths = {self.procs[w].sentinel: w for w in busy}
        for ready in connection.wait([*conns, *deaths]):
            w, data = conns.get(ready, deaths.get(ready)), None
            if w not in busy:  # answered, then died: its answer is taken, the next job will see it
                continue
            if ready in conns:
                try:
                    data = ready.recv()
                except (EOFError, OSError):  # gone before, or while, answering
                    pass
            if data is None:
                self._died(w, busy[w])
            done[busy.pop(w)] = data
            idle.append(w)

    def _died(self, w: int, c: int) -> None:
        self.procs[w].join(timeout=5)
        code = self.procs[w].exitcode
        self.close(abort=True)
        raise UserError(
            f"a --parallel-clients worker died while training client {c} (exit code {code}; -9 is "
            "usually the system running out of memory); continue with --resume and fewer --parallel-clients."
        )

    def close(self, abort: bool = False) -> None:
        """End the workers: asked to stop after their job, or killed (``abort``)."""
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if abort:
                proc.kill()
            else:
                try:
                    conn.send(None)
                except OSError:
                    pass
        for conn, proc in zip(self.conns, self.procs, strict=True):
            proc.join()
            conn.close()
        self.procs, self.conns = [], []
