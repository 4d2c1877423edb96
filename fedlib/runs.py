"""Moved: file writing and checkpoints to ``fedlib.run.io``, the run folder's rules to
``fedlib.run.folder``. This module re-exports them while modules, tests and benchmarks
still import ``fedlib.runs``; remove it once nothing does.

A test that replaces a function here (``monkeypatch.setattr(runs, ...)``) reaches only the
callers that look it up through this module: ``fedlib.checkpoint`` calls ``runs.save_checkpoint``,
but ``save_checkpoint`` itself calls ``fedlib.run.io.save_torch``.
"""

from .run.folder import (
    PROGRESS,
    check_flags,
    check_target,
    is_finished,
    progress_files,
    watch_progress,
)
from .run.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    read_history,
    read_json,
    save_checkpoint,
    save_torch,
    signals_deferred,
    write_history,
    write_json,
)

__all__ = [
    "PROGRESS",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_flags",
    "check_target",
    "is_finished",
    "load_checkpoint",
    "progress_files",
    "read_history",
    "read_json",
    "save_checkpoint",
    "save_torch",
    "signals_deferred",
    "watch_progress",
    "write_history",
    "write_json",
]
