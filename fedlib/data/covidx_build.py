"""Assemble a COVIDx folder from the public sources a user downloaded, and check one.

``build`` takes a release's split files (the paper's ``train_split_v3.txt`` and
``test_split_v3.txt``; a validation file too where a release has one) and the folders
of its sources, finds every listed image by its name in the source its line names
(the fourth column), and copies or converts it into ``<out>/train/``, ``test/`` or
``val/``. It writes the split files fedlib reads by default (``train_split.txt``,
``test_split.txt``, ``val_split.txt``: the lines of the given files, unchanged) and
``covidx-manifest.csv``: one row per image, ``split,file,source,bytes,sha256``.

Where each source's images are and how they are named: ``fedlib.data.covidx_sources``.

Other files are copied byte for byte. Every image is written to a temporary name in
its folder and renamed, so an interrupted build leaves no half-written image; the
manifest is rewritten (atomically) every ``FLUSH_EVERY`` images and when the build
stops, so a second run re-reads and hashes what the manifest holds and copies only
what is absent or different. ``check`` verifies a folder against its split files and
manifest: missing, extra and changed files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from fedlib.data.covidx import read_split_file
from fedlib.data.covidx_sources import SOURCES, Source, open_source
from fedlib.errors import UserError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "{split}_split.txt"  # fedlib's default Layout names (and val_split.txt beside them)
MANIFEST = "covidx-manifest.csv"
COLUMNS = ("split", "file", "source", "bytes", "sha256")
FLUSH_EVERY = 200  # images between manifest rewrites: what a hard kill can make a rerun hash again
SHOWN = 3  # names an error shows per source
AHEAD = 4  # images per worker converted ahead of the writer
_GIVE = "give each source's folder with --source NAME=DIR, in the version the split files were made from"
_TMP = ".covidx-tmp-"  # prefix of the temporary names images are written under


@dataclass
class BuildReport:
    written: int = 0  # images copied or converted by this run
    kept: int = 0  # images the manifest already held with the same hash
    dropped: dict[str, list[str]] = field(default_factory=dict)  # source -> names left out (--allow-missing)
    counts: dict[str, int] = field(default_factory=dict)  # split -> images in the folder

    def describe(self, out) -> str:
        sizes = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        text = f"{out}: {sizes} images ({self.written} written, {self.kept} already there)"
        if self.dropped:
            gone = sum(len(v) for v in self.dropped.values())
            by_source = ", ".join(f"{s} {len(v)}" for s, v in self.dropped.items())
            text += f"; {gone} line(s) left out of the split files, their images absent ({by_source})"
        return text


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Item:
    split: str
    file: str
    source: str
    path: Path  # in the source


def plan(splits: dict[str, Path], sources: dict[str, Source]) -> tuple[list[Item], dict[str, list[str]]]:
    """Every listed image found in its source, and source -> names not found (in split-file order)."""
    items, missing = [], {}
    for split, path in splits.items():
        for record in read_split_file(path)[0]:
            found = _find(record.filename, record.source, sources)
            if found is None:
                missing.setdefault(record.source, []).append(record.filename)
            else:
                items.append(Item(split, record.filename, found[0], found[1]))
    return items, missing


def _find(filename: str, source: str, sources: dict[str, Source]) -> tuple[str, Path] | None:
    candidates = sources if source == "unknown" else {source: sources[source]} if source in sources else {}
    for name, src in candidates.items():  # a 3-column line (source "unknown") is looked for in every source
        if filename in src.index:
            return name, src.index[filename]
    return None


def missing_message(missing: dict[str, list[str]], total: int, sources: dict[str, Source]) -> str:
    """One sentence: how many listed images each source lacks, the first names, and the fix."""
    parts = []
    for source, names in missing.items():
        shown = ", ".join(names[:SHOWN]) + (" ..." if len(names) > SHOWN else "")
        why = "" if source in sources else (" (no --source given)" if source in SOURCES else " (unknown source)")
        parts.append(f"{source} {len(names)}{why}: {shown}")
    gone = sum(len(v) for v in missing.values())
    return (
        f"{gone} of {total} listed images are absent from their sources ({'; '.join(parts)}); {_GIVE}, or pass "
        "--allow-missing to build without those lines"
    )


# ---------------------------------------------------------------------------- the manifest


def read_manifest(root) -> dict[tuple[str, str], tuple[str, int, str]]:
    """(split, file) -> (source, bytes, sha256); empty when there is no manifest yet."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    rows = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise UserError(f"{path} is not a covidx manifest (columns {', '.join(COLUMNS)}); move it away.")
        for number, row in enumerate(reader, start=2):
            try:
                if row["split"] not in SPLIT_NAMES or len(row["sha256"] or "") != 64:
                    raise ValueError(f"split {row['split']!r}, sha256 {row['sha256']!r}")
                rows[(row["split"], row["file"])] = (row["source"], int(row["bytes"]), row["sha256"])
            except (TypeError, ValueError) as err:
                raise UserError(
                    f"{path} line {number} is damaged ({err}); run covidx build again to rewrite it."
                ) from err
    return rows


def write_manifest(root, rows: dict[tuple[str, str], tuple[str, int, str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    order = {s: i for i, s in enumerate(SPLIT_NAMES)}
    for (split, file), (source, size, digest) in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        writer.writerow((split, file, source, size, digest))
    write_atomic(Path(root) / MANIFEST, text.getvalue().encode(), sync=True)


def write_atomic(path: Path, data: bytes, sync: bool = False) -> None:
    """``data`` into ``path`` through a temporary name in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# ---------------------------------------------------------------------------- build


def build(splits: dict[str, Path], sources: dict[str, Path], out, allow_missing=False, progress=None, workers=1):
    """Assemble ``out`` from ``splits`` ({"train": file, "test": file[, "val": file]}) and ``sources``
    ({name: folder}); returns a ``BuildReport``. ``progress(iterable, total)`` wraps the images to
    write (tqdm) when given; ``workers`` processes read and convert images when above 1."""
    out = Path(out)
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown or not {"train", "test"} <= set(splits):
        raise UserError(f"covidx build needs a train and a test split file (and at most a val one), not {unknown}.")
    opened = {name: open_source(name, root) for name, root in sources.items()}
    items, missing = plan(splits, opened)
    if missing and not allow_missing:
        raise UserError(missing_message(missing, len(items) + sum(map(len, missing.values())), opened))
    report = BuildReport(dropped=missing, counts={s: sum(i.split == s for i in items) for s in splits})
    empty = [s for s, n in report.counts.items() if n == 0]
    if empty:
        raise UserError(f"none of the images the {empty[0]} split file {splits[empty[0]]} lists was found; {_GIVE}.")
    _check_out(out)
    planned = {(i.split, i.file) for i in items}
    rows = {key: row for key, row in read_manifest(out).items() if key in planned}
    write_manifest(out, rows)  # from the start: an interrupted first run is still recognised as a build
    todo = [item for item in items if not _holds(out, rows, item)]
    report.kept = len(items) - len(todo)
    produced = _produce_all(todo, opened, workers)
    try:
        for n, (item, data) in enumerate(progress(produced, len(todo)) if progress else produced, start=1):
            write_image(out / item.split / item.file, data)
            rows[(item.split, item.file)] = (item.source, len(data), hashlib.sha256(data).hexdigest())
            report.written = n
            if n % FLUSH_EVERY == 0:
                write_manifest(out, rows)
    finally:
        produced.close()  # stops the workers now, not when the exception is forgotten
        write_manifest(out, rows)
    dropped = {name for names in missing.values() for name in names}
    for split, path in splits.items():
        write_atomic(out / SPLIT_FILE.format(split=split), _kept_lines(path, dropped), sync=True)
    return report


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a new folder for the COVIDx images.")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(
            f"--out {out} holds files but no {MANIFEST}, so it is no earlier covidx build; name a new or empty folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, *(out / split for split in SPLIT_NAMES)):  # what a killed run left under temporary names
        for leftover in folder.glob(f"{_TMP}*") if folder.is_dir() else ():
            leftover.unlink()


def _holds(out: Path, rows: dict, item: Item) -> bool:
    """Whether the manifest records the image and the file on disk has the recorded size and hash."""
    known = rows.get((item.split, item.file))
    dest = out / item.split / item.file
    return known is not None and dest.is_file() and sha256_of(dest) == known[1:]


def produce(convert, path: Path) -> bytes:
    """The bytes an image is written as: ``convert(path)``, or the source file's own when None."""
    return convert(path) if convert else read_source(path)


def _produce_all(todo: list[Item], opened: dict[str, Source], workers: int):
    """(item, bytes) in ``todo``'s order. With ``workers`` > 1 the reading and converting runs in
    that many processes, at most ``AHEAD`` images per worker waiting, so memory stays bounded."""
    if workers <= 1:
        for item in todo:
            yield item, produce(opened[item.source].convert, item.path)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupts)
    waiting: deque = deque()
    try:
        for item in todo:
            waiting.append((item, pool.submit(produce, opened[item.source].convert, item.path)))
            if len(waiting) >= AHEAD * workers:
                first, future = waiting.popleft()
                yield first, future.result()
        while waiting:
            first, future = waiting.popleft()
            yield first, future.result()
    except BrokenProcessPool as err:
        raise UserError(
            f"a worker process converting images ended abruptly ({err}; out of memory?); the images written so far "
            "are kept: run the same command again, with fewer --workers"
        ) from err
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ignore_interrupts() -> None:
    """A worker leaves Ctrl-C to the build, which stops it (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_source(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err}); give this user read access to it.") from err


def write_image(dest: Path, data: bytes) -> None:
    """One image, whole or not at all (tests interrupt a build here)."""
    write_atomic(dest, data)


def _kept_lines(path: Path, dropped: set[str]) -> bytes:
    lines = [
        line
        for line in Path(path).read_text(encoding="utf-8-sig").splitlines()
        if line.split() and (len(line.split()) < 2 or line.split()[1] not in dropped)
    ]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------- check


@dataclass
class CheckReport:
    missing: list[str] = field(default_factory=list)  # listed in a split file, not on disk
    extra: list[str] = field(default_factory=list)  # on disk in a split's folder, not listed
    changed: list[str] = field(default_factory=list)  # on disk but not as the manifest records it
    images: dict[str, int] = field(default_factory=dict)  # split -> listed images

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def describe(self, root) -> str:
        if self.ok:
            sizes = ", ".join(f"{split} {n}" for split, n in self.images.items())
            return f"OK: {root} holds the images its split files list ({sizes}), each as {MANIFEST} records it"
        parts = [
            f"{len(names)} {what} (first: {', '.join(names[:SHOWN])})"
            for what, names in (("missing", self.missing), ("extra", self.extra), ("changed", self.changed))
            if names
        ]
        return (
            f"{root} does not match its split files and {MANIFEST}: {'; '.join(parts)}; run the same "
            "fedlib covidx build again to restore it (extra files are left for you to move away)"
        )


def check(root) -> CheckReport:
    """Compare ``root``'s image folders with its split files and manifest (every file hashed)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root} is not a folder; pass the folder fedlib covidx build made.")
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} has no {MANIFEST}; check a folder made by fedlib covidx build.")
    rows = read_manifest(root)
    report = CheckReport()
    for split in SPLIT_NAMES:
        split_file = root / SPLIT_FILE.format(split=split)
        if not split_file.is_file():
            if split != "val" or any(key[0] == "val" for key in rows):
                report.missing.append(split_file.name)
            continue
        listed = [f"{split}/{r.filename}" for r in read_split_file(split_file)[0]]
        report.images[split] = len(listed)
        folder = root / split
        on_disk = {str(p.relative_to(root)) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
        report.extra += sorted(on_disk - set(listed))
        for name in listed:
            if name not in on_disk:
                report.missing.append(name)
            elif rows.get((split, name[len(split) + 1 :]), (None,))[1:] != sha256_of(root / name):
                report.changed.append(name)
    return report
