"""Checkpoints written beside training, not in its way.

``Writer.submit`` copies the state to the CPU at once (training changes weights and Adam's
moments in place) and writes the copy with ``io.save_checkpoint`` in a background thread:
the same temporary file and renames (last.pt, previous.pt), so a crash at any moment leaves
a checkpoint that loads. At most one write is in flight: the next ``submit`` waits for the
one before. Leaving the ``with`` block waits for the write in flight, also on an error or
Ctrl-C/SIGTERM, so an interrupt lets the file being written finish first. A failed write is
raised in the training thread, at the next ``submit`` or at the end.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import torch

from .run import io


def cpu_snapshot(obj, memo: dict | None = None):
    """A copy of ``obj`` that training cannot change: each tensor cloned to the CPU (once per
    tensor, so a tensor held twice stays one), containers copied, anything else deep-copied."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().to("cpu", copy=True)
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = copy.copy(obj)  # keeps the mapping's type and attributes (a state_dict's _metadata)
        for key, value in obj.items():
            out[key] = cpu_snapshot(value, memo)
        return out
    if isinstance(obj, list | tuple):
        items = [cpu_snapshot(v, memo) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return copy.deepcopy(obj)


class Writer:
    """One background checkpoint write at a time for ``train_loop``."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, run_dir: Path, state: dict) -> None:
        """Wait for the write before, snapshot ``state`` now, write it in the background."""
        self.wait()
        snapshot = cpu_snapshot(state)
        # Started with Ctrl-C and SIGTERM blocked, the thread keeps them blocked for its life:
        # they reach the training thread, whose exit waits for this write.
        with io.signals_deferred():
            self._thread = threading.Thread(target=self._write, args=(run_dir, snapshot), name="fedlib-checkpoint")
            self._thread.start()

    def _write(self, run_dir: Path, snapshot: dict) -> None:
        try:
            io.save_checkpoint(run_dir, snapshot)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the write in flight is on disk (an interrupt meanwhile waits for it);
        raise the error of a write that failed."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with io.signals_deferred():
                thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.wait()
            return False
        try:
            self.wait()
        except BaseException as failed:  # the first error stays the one raised
            exc.add_note(f"the checkpoint being written when it happened failed too: {failed!r}")
        return False
