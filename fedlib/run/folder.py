"""Run folders: what one holds, where each goes, and the rules for writing one.

```
runs/<name>/
  config.json        the resolved TrainConfig (enough to re-run)
  history.csv        one row per round (federated) or epoch (pooled, local)
  clients.csv        federated only: one row per client and attempt of a round
  final.json         final train (no augmentation) and test metrics, written last
  progress           one line: the step done of the steps, losses, accuracy, time elapsed and left
  .fedlib-run        marker: this folder is a fedlib run (what --overwrite may replace)
  checkpoints/last.pt       model, optimizer and server state, progress
  checkpoints/previous.pt   the checkpoint before last.pt, kept in case last.pt is damaged
  checkpoints/client<c>.pt  local mode only: client c's final model (last.pt holds only the latest)
```
A run has finished when it holds config.json and final.json (``is_finished``). Each
file is written whole or not at all (``fedlib.run.io``). One process at a time holds
a run (an OS lock on ``.<name>.lock`` beside it, ``locked``), and a run that replaces
another trains beside it and swaps in only when finished (``transaction``).

Names. ``fedlib reproduce`` trains ``runs/<profile>/<data tag>/<model>-<mode>-seed<seed>``
(``run_name``), the tag being the data set's name and the first 8 characters of its
fingerprint, e.g. ``runs/quick/synthetic-1a2b3c4d``; the profile's own synthetic set
draws into ``figures/`` and ``reports/<profile>/``, any other data set into
``figures/<profile>-<data tag>/`` and ``reports/<profile>-<data tag>/`` (``reproduce_paths``).
``fedlib study`` trains ``runs/study/<profile>/<data tag>/<partition>-<method>-seed<seed>``
(``study_run_name``; ``study_paths``).

Reuse. A run folder is reused only when its config.json is the config it would be
trained with (``wanted_config``), data fingerprint included, the hardware aside
(``config_differences``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import config
from ..errors import UserError
from .io import atomic_write_text
from .marker import MARKER, MARKER_HEAD, check_config, write_config  # noqa: F401 (re-exported)

PROGRESS = "progress"  # the run's one-line status, rewritten after each round or epoch (fedlib.loop)
# What a run folder holds; a folder of only these (and config.json) is a run of an older fedlib
# that had no marker yet.
RUN_ENTRIES = {
    MARKER,
    "config.json",
    "history.csv",
    "clients.csv",
    "final.json",
    "checkpoints",
    "gradcam.png",
    PROGRESS,
}
# Config keys a run may change between training and reuse, as on --resume: they say where
# it ran, not what it learned.
HARDWARE_KEYS = ("device", "amp", "channels_last", "parallel_clients")
# Where the data are, not what they are: when both configs carry the same fingerprint,
# a moved checkout or data folder still reuses its runs.
LOCATION_KEYS = ("data", "data_dir")
# Keys config.json gained after runs were written, and what a run written without them did:
# every run before issue 23 trained the three-class task without a published validation split.
ADDED_KEYS = {"task": "three-class", "val_split": None, "val_dir": "val"}
# The parameters of 01_train that pick one run of a profile (``run_config``; None: the profile's).
RUN_KEYS = ("model", "mode", "data", "seed", "device")


# ---------------------------------------------------------------- names


def run_name(model: str, mode: str, seed: int) -> str:
    """The folder name of one (model, mode, seed) run inside a reproduction's runs_dir."""
    return f"{model}-{mode}-seed{seed}"


def partition_label(partition: str, alpha: float | None) -> str:
    return partition if alpha is None else f"{partition}{alpha:g}"


def study_run_name(partition: str, alpha: float | None, method: str, seed: int) -> str:
    """The folder name of one cell of the non-IID study; pooled training ignores the
    partition, so one pooled run per seed serves every partition."""
    if method == "pooled":
        return f"pooled-seed{seed}"
    return f"{partition_label(partition, alpha)}-{method}-seed{seed}"


@dataclass(frozen=True)
class DataSet:
    """The data set a reproduction trains on: where it is and what it is."""

    root: Path
    fingerprint: str  # fedlib.data.identity.fingerprint, as the runs record it
    name: str  # "synthetic", or the folder's name
    layout: object = None  # the fedlib.data.covidx.Layout it is read with (Kaggle's names detected)
    task: str = "three-class"  # as its labels (and --task) say

    @property
    def tag(self) -> str:
        """The folder name for its runs: ``<name>-<fingerprint[:8]>``."""
        return f"{self.name}-{self.fingerprint[:8]}"


def data_set(cfg: config.TrainConfig, progress: bool = True) -> DataSet:
    """The data set ``cfg`` trains on (generating the synthetic one on first use), checked
    as training would read it, with the fingerprint a run records."""
    from ..data.identity import fingerprint
    from ..data.resolve import check_splits, data_layout, ensure_data_root

    root = ensure_data_root(cfg, progress)
    layout = data_layout(cfg)
    task = check_splits(root, layout)  # a wrong --train-split, a partial download, mixed labels: one sentence here
    name = "synthetic" if cfg.data == "synthetic" else re.sub(r"[^A-Za-z0-9._-]+", "_", root.resolve().name)
    return DataSet(root, fingerprint(root, layout), name, layout, task)


def is_profile_synthetic(cfg: config.TrainConfig) -> bool:
    """True for the synthetic set the profile generates by default (what figures/ shows)."""
    if cfg.data != "synthetic":
        return False
    default = config.resolve(cfg.profile, None)
    return all(
        getattr(cfg, f.name) == getattr(default, f.name) for f in dataclasses.fields(cfg) if f.name.startswith("synth_")
    )


def default_runs_dir(profile: str, data: DataSet) -> Path:
    return Path("runs") / profile / data.tag


def default_run_dir(cfg: config.TrainConfig, progress: bool = True) -> Path:
    """Where ``fedlib reproduce`` trains ``cfg``: ``runs/<profile>/<data tag>/<model>-<mode>-seed<seed>``."""
    return default_runs_dir(cfg.profile, data_set(cfg, progress)) / run_name(cfg.model, cfg.mode, cfg.seed)


class Paths(NamedTuple):
    """The default folders of a reproduction."""

    runs: Path
    figures: Path
    reports: Path  # the executed notebooks


def reproduce_paths(profile: str, data: DataSet, profile_synthetic: bool) -> Paths:
    """Default folders of ``fedlib reproduce``: the profile's synthetic set keeps ``figures/``
    and ``reports/<profile>/``; another data set gets ``<dir>/<profile>-<data tag>/`` in both."""
    if profile_synthetic:
        return Paths(default_runs_dir(profile, data), Path("figures"), Path("reports") / profile)
    label = f"{profile}-{data.tag}"
    return Paths(default_runs_dir(profile, data), Path("figures") / label, Path("reports") / label)


class StudyPaths(NamedTuple):
    """The default folders of ``fedlib study``."""

    runs: Path
    figures: Path
    report: Path  # the executed 05_non_iid notebook


def study_paths(profile: str, data: str, tag: str) -> StudyPaths:
    """Default folders of ``fedlib study`` for ``data`` (as ``--data`` names it; ``tag`` its
    ``DataSet.tag``). The quick study on the default synthetic set is what figures/study
    holds; any other data set or profile gets folders of its own, so one never overwrites another."""
    default = data == "synthetic" and profile == "quick"
    label = profile if default else f"{profile}-{tag}"
    figures = Path("figures/study") if default else Path("figures/study") / label
    return StudyPaths(Path("runs/study") / profile / tag, figures, Path(f"reports/study/05_non_iid-{label}.ipynb"))


# ---------------------------------------------------------------- the config a run gets


def run_config(parameters: Mapping) -> config.TrainConfig:
    """The config of one run from 01_train's parameters: ``profile``; ``model``, ``mode``,
    ``data``, ``seed`` and ``device`` (absent or None: the profile's); ``overrides``, other
    TrainConfig fields. Notebook 01 and ``fedlib reproduce`` resolve a run's config here."""
    named = {key: parameters[key] for key in RUN_KEYS if parameters.get(key) is not None}
    return config.resolve(parameters["profile"], None, **{**parameters.get("overrides", {}), **named})


def wanted_config(cfg: config.TrainConfig, data: DataSet) -> dict:
    """config.json as ``cfg`` would record it: absolute data paths and the data's fingerprint."""
    from ..data.resolve import recorded

    if data.layout is not None:  # the task as the run records it
        cfg = recorded(cfg, data.task)
    cfg = dataclasses.replace(config.absolute_paths(cfg), data_fingerprint=data.fingerprint)
    return json.loads(json.dumps(config.to_dict(cfg)))  # as JSON has it (tuples as lists)


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """The keys in which a run's config.json (``saved``) differs from the config it would get,
    sorted: the hardware aside, and the data's location too when both carry one fingerprint."""
    ignored = set(HARDWARE_KEYS)
    saved = {**ADDED_KEYS, **saved}
    if saved.get("data_fingerprint") is not None and saved.get("data_fingerprint") == wanted.get("data_fingerprint"):
        ignored |= set(LOCATION_KEYS)
    return sorted(k for k in set(saved) | set(wanted) if k not in ignored and saved.get(k) != wanted.get(k))


# ---------------------------------------------------------------- what a folder holds


def is_finished(run_dir: Path) -> bool:
    """A run has finished when its folder holds config.json and final.json (written last)."""
    return (Path(run_dir) / "final.json").is_file() and (Path(run_dir) / "config.json").is_file()


def is_run_folder(path: Path) -> bool:
    """True for a folder fedlib made for a run (its marker, or an older run's files only)."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    entries = {p.name for p in path.iterdir()} if path.is_dir() else set()
    return "config.json" in entries and entries <= RUN_ENTRIES


def data_roots(cfg: config.TrainConfig) -> list[Path]:
    """The folders a run reads its data from (a run folder may never hold one)."""
    return [Path(cfg.data_dir) if cfg.data == "synthetic" else Path(cfg.data)]


# ---------------------------------------------------------------- writing one: target, lock, transaction


def check_flags(*, resume: bool, overwrite: bool) -> None:
    """--resume keeps a run, --overwrite replaces it: never both."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one of them.")


def check_target(run_dir: Path, *, resume: bool, overwrite: bool, data_roots=()) -> None:
    """Refuse a run directory that cannot be used, before any work or any move.

    ``data_roots`` are the folders the run reads: a run folder may never hold one.
    """
    run_dir = Path(run_dir)
    check_flags(resume=resume, overwrite=overwrite)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder; choose another --out.")
    parent = run_dir.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"cannot create the output folder {parent}: {blocker} is a file; choose another --out.")
    target = run_dir.resolve()
    for root in data_roots:
        root = Path(root).resolve()
        if root == target or target in root.parents:
            raise UserError(f"--out {run_dir} holds the data this run reads ({root}); choose another --out.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the output folder {parent} ({exc.strerror}); choose a writable --out."
        ) from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"the output folder {parent} is not writable; choose a writable --out.")
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / "config.json").exists():
            raise UserError(f"--resume: {run_dir} holds no run to resume; drop --resume to start it.")
    elif occupied and not is_run_folder(run_dir):
        if overwrite:
            raise UserError(
                f"--overwrite replaces only fedlib run folders, and {run_dir} is not one (no "
                f"{MARKER} file); choose another --out, or move that folder away yourself."
            )
        raise UserError(
            f"{run_dir} is not empty and is not a fedlib run folder (no {MARKER} file); choose another --out."
        )
    elif occupied and not overwrite:
        if is_finished(run_dir):
            raise UserError(
                f"{run_dir} already holds a finished run; pass --overwrite to replace it "
                "(it stays until the new run has finished), or choose another --out."
            )
        raise UserError(
            f"{run_dir} already holds an unfinished run; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out."
        )


def real_out(run_dir) -> Path:
    """The run folder a command writes: the target of a symbolic link (renames and deletions
    act on the folder itself, never on the link), else ``run_dir`` as given."""
    run_dir = Path(run_dir)
    if not run_dir.is_symlink():
        return run_dir
    target = Path(os.path.realpath(run_dir))
    if target.is_symlink():  # realpath stops where links go round in a loop
        raise UserError(
            f"--out {run_dir} is a symbolic link that leads round in a loop; point it at a folder or choose another --out."
        )
    return target


def recover_leftovers(run_dir: Path) -> None:
    """``recover`` under the lock, when a killed replacement left anything beside the run
    (checked before the target is judged: a kill between the two renames leaves no run)."""
    run_dir = Path(run_dir)
    _, replacing, replaced = _siblings(run_dir)
    if any(p.exists() or p.is_symlink() for p in (replacing, replaced)):
        with locked(run_dir):
            recover(run_dir)


def progress_files(run_dir: Path) -> tuple[Path, Path]:
    """Where a run into ``run_dir`` writes its status line: in place, or in the replacement
    that --overwrite trains beside the run (``transaction``)."""
    _, replacing, _ = _siblings(Path(run_dir))
    return Path(run_dir) / PROGRESS, replacing / PROGRESS


def _siblings(run_dir: Path) -> tuple[Path, Path, Path]:
    """(lock file, the replacement being trained, the replaced run awaiting deletion)."""
    return tuple(run_dir.with_name(f".{run_dir.name}.{kind}") for kind in ("lock", "replacing", "replaced"))


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold an exclusive OS lock on the run's name for the duration (released on any exit,
    also SIGKILL, so a lock is never stale); a second process is refused at once."""
    lock_path, _, _ = _siblings(Path(run_dir))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise UserError(
                f"{run_dir} is in use by {holder}; wait for it to finish or stop it, or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def recover(run_dir: Path) -> None:
    """Finish or undo a replacement that a killed process left half done (call under the lock)."""
    run_dir = Path(run_dir)
    _, replacing, replaced = _siblings(run_dir)
    if replaced.exists() or replaced.is_symlink():
        if not run_dir.exists():  # killed between the two renames of a finished replacement
            os.replace(replacing if is_finished(replacing) else replaced, run_dir)
        _remove(replaced)
    if replacing.exists() or replacing.is_symlink():  # a replacement that never finished: the old run stands
        _remove(replacing)


def _remove(path: Path) -> None:
    """Delete a folder left beside a run; a link (left by an older fedlib) only as a link."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def transaction(run_dir: Path, *, resume: bool):
    """Yield the folder a run writes into; the run folder changes only as a whole.

    A new run, or a resumed one, writes in place (a killed run can be resumed). A run
    that replaces an earlier one (--overwrite) trains in the sibling ``.<name>.replacing``
    and takes the earlier run's place only once it has finished; any failure before then
    removes the replacement and leaves the earlier run exactly as it was.
    """
    run_dir = Path(run_dir)
    with locked(run_dir):
        recover(run_dir)
        _, replacing, replaced = _siblings(run_dir)
        if resume or not (run_dir.is_dir() and any(run_dir.iterdir())):
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / MARKER).is_file():  # a resumed run's marker keeps its copy of config.json
                atomic_write_text(run_dir / MARKER, MARKER_HEAD)
            try:
                yield run_dir
            except BaseException as exc:
                if (run_dir / "config.json").exists():
                    exc.add_note(
                        f"{run_dir} keeps what was done so far; continue it with the same command and --resume"
                    )
                raise
            return
        replacing.mkdir()
        try:
            atomic_write_text(replacing / MARKER, MARKER_HEAD)
            yield replacing
        except BaseException as exc:
            shutil.rmtree(replacing, ignore_errors=True)
            exc.add_note(f"the earlier run in {run_dir} is unchanged")
            raise
        os.replace(run_dir, replaced)
        os.replace(replacing, run_dir)
        shutil.rmtree(replaced)


@contextlib.contextmanager
def watch_progress(run_dir: Path, show, interval: float = 2.0):
    """Show each new status line of the run training into ``run_dir`` (its ``progress`` file,
    ``fedlib.loop``) while the block runs, from a thread that looks every ``interval`` seconds,
    and once more at the end. A line that was there before the block began is not shown."""
    paths = progress_files(run_dir)
    stale = {path: _read_line(path) for path in paths}
    shown = [None]

    def look() -> None:
        for path in paths:
            line = _read_line(path)
            if line and line != stale[path] and line != shown[0]:
                shown[0] = line
                show(line)

    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            look()

    thread = threading.Thread(target=poll, name="fedlib-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        look()


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # not written yet, or its folder renamed meanwhile
        return None
