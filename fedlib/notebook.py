"""Executing notebooks with papermill: one (``execute``), or several at once (``execute_all``).

``fedlib reproduce`` trains each (model, mode, seed) in its own executed copy of 01_train.
On a CPU, two notebooks whose kernels have one thread each use two cores better than one
kernel with two threads (BENCHMARKS.md: at the quick profile's 64 px a convolution does not
split well over two threads), so ``execute_all`` runs ``jobs`` of them at once, each
kernel with ``threads`` torch threads (set through ``OMP_NUM_THREADS``, which torch reads
when the kernel imports it).

A kernel's arithmetic depends on its thread count, so a run's weights depend on the
threads it had, not on how many ran beside it: ``--jobs 2`` on 2 cores and ``--jobs 1
--threads 1`` train the same weights.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import UserError
from .run.folder import watch_progress

KERNEL = "fedlib"  # registered by `make setup` (python -m ipykernel install --sys-prefix --name fedlib)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _show(line: str) -> None:
    tqdm.write(f"    {line}")  # above papermill's cell counter, which tqdm redraws below


def execute(
    notebook: Path,
    report: Path,
    parameters: dict,
    *,
    progress: bool = True,
    run_dir: Path | None = None,
    show: Callable[[str], None] = _show,
) -> Path:
    """Run one notebook with papermill into ``report`` (atomically); failures raise UserError.
    With ``run_dir`` (a training notebook's run) and ``progress``, its status lines are shown
    as it trains (``watch_progress``) through ``show``: papermill shows only its cell counter,
    and only when ``show`` is the default (one notebook at a time)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    report.parent.mkdir(parents=True, exist_ok=True)
    running = report.with_name(f".{report.stem}.running.ipynb")
    failed = report.with_name(f"{report.stem}.failed.ipynb")
    watching = watch_progress(run_dir, show) if progress and run_dir is not None else nullcontext()
    try:
        with watching:
            pm.execute_notebook(
                str(notebook),
                str(running),
                parameters=parameters,
                kernel_name=KERNEL,
                progress_bar=progress and show is _show,
                log_output=False,
                cwd=os.getcwd(),
                # the kernel's own log (start-up warnings; on Ctrl-C or SIGTERM, the traceback of its
                # closed sockets) would interleave with our lines; a cell's error reaches us as a message
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: one line, not asyncio's report of the cell it cut short
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise
    except PapermillExecutionError as err:
        os.replace(running, failed)
        lines = [line.strip() for line in err.source.splitlines() if line.strip()]
        # The line that names the cell: the first that is not a magic, an import or a comment.
        shown = next(
            (ln for ln in lines if not ln.startswith(("%", "#", "import ", "from "))), lines[0] if lines else ""
        )
        raise UserError(
            f"notebook {notebook.name} failed in cell index {err.cell_index} (In [{err.exec_count}]: {shown!r}) "
            f"with {err.ename}: {err.evalue.rstrip('.')}; the executed notebook is kept at {failed}."
        ) from None
    except Exception as err:  # the kernel died, is not registered, timed out, ...
        kept = ""
        if running.exists():
            os.replace(running, failed)
            kept = f" The partly executed notebook is kept at {failed}."
        hint = (
            " Register the kernel with `make setup` (python -m ipykernel install --sys-prefix --name fedlib)."
            if "kernel" in str(err).lower()
            else ""
        )
        raise UserError(f"notebook {notebook.name} could not run ({type(err).__name__}: {err}).{kept}{hint}") from None
    except BaseException:  # Ctrl-C: keep what ran, under the failed name
        if running.exists():
            os.replace(running, failed)
        raise
    os.replace(running, report)
    failed.unlink(missing_ok=True)
    return report


@dataclass(frozen=True)
class Job:
    """One notebook to execute: ``execute``'s arguments."""

    notebook: Path
    report: Path
    parameters: dict
    run_dir: Path | None = None  # a training notebook's run folder (its status lines are shown)
    title: str = ""  # printed when the notebook starts


@contextmanager
def kernel_threads(threads: int | None) -> Iterator[None]:
    """Kernels started inside the block use ``threads`` CPU threads (None: as torch decides)."""
    if threads is None:
        yield
        return
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_all(jobs: Sequence[Job], workers: int, *, progress: bool = True, threads: int | None = None) -> list[Path]:
    """``execute`` each job, ``workers`` at a time, each kernel with ``threads`` threads; the
    reports in the jobs' order. The first failure stops the jobs not yet started, lets the
    running ones finish, and is raised; Ctrl-C or SIGTERM interrupts the running kernels,
    whose notebooks are kept under their ``.failed`` names."""
    with kernel_threads(threads):
        if workers <= 1:
            return [_run(job, progress, _show) for job in jobs]
        stop = threading.Event()  # set by the first failure: no job starts after it
        pool = ThreadPoolExecutor(workers, thread_name_prefix="fedlib-notebook")
        futures = [pool.submit(_run_unless, stop, job, progress) for job in jobs]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C, SIGTERM: stop the kernels, not only our threads
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            while True:  # again each second: a kernel that was starting has a cell to interrupt now
                _interrupt_kernels()
                if not wait(futures, timeout=1.0).not_done:
                    break
            raise
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:  # the first failure in the jobs' order
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()
    return [future.result() for future in futures]


def _run(job: Job, progress: bool, show: Callable[[str], None]) -> Path:
    if job.title:
        tqdm.write(job.title)
    return execute(job.notebook, job.report, job.parameters, progress=progress, run_dir=job.run_dir, show=show)


def _run_unless(stop: threading.Event, job: Job, progress: bool) -> Path | None:
    """``_run`` in a worker thread, unless an earlier job failed (then None: not started)."""
    if stop.is_set():
        return None
    try:
        return _run(job, progress, _tagged(job))
    except BaseException:
        stop.set()
        raise


def _tagged(job: Job) -> Callable[[str], None]:
    name = job.run_dir.name if job.run_dir is not None else job.report.stem
    return lambda line: tqdm.write(f"    {name}: {line}")


def _interrupt_kernels() -> None:
    """SIGINT to this process's child processes (the kernels papermill started), as Ctrl-C in a
    terminal gives them; a SIGTERM to fedlib alone would otherwise leave them training."""
    import psutil

    for child in psutil.Process().children():
        try:
            child.send_signal(signal.SIGINT)
        except psutil.Error:
            pass
