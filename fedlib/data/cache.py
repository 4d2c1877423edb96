"""Decode each COVIDx image once into a fixed-size, one-channel uint8 array on disk.

Decoding a 1-4k px PNG costs tens of milliseconds; a training run reads every
image hundreds of times (100 rounds x 3 local epochs). So a split is decoded,
resized so its shorter side is ``cache_size(image_size)`` and centre-cropped to
a square once, and stored as one ``.npy`` file of shape (N, S, S, 1) that later
runs memory-map. X-rays are grey: one channel is a third of the disk and of the
page cache (COVIDx CXR-4's 84,818 images at 256 px take 5.6 GB, not 16.7 GB);
``fedlib.data.transforms`` replicates it to the model's three channels on the
device, per batch, with the random crop and flip. A colour image is stored as
its luma (PIL's ``convert("L")``); a grey one, all COVIDx but a handful, has
exactly the bytes it had as three equal channels.

A build writes each row with ``os.pwrite`` at its offset in the file, from the
decoding processes, never through a memory map: its resident memory is that of
decoding a few images, whatever the number of images (the page cache holds the
written rows, and the kernel writes them out and drops them as it needs).

The cache file name holds a sha256 of the split file's bytes, the image
folder's absolute path, S, ``FORMAT_VERSION`` and each listed image's size and
modification time: edit the split file, replace or truncate an image, point at
another folder or change the size and a new file is built (a damaged image then
stops the build in one line); the old one is left alone (delete the cache
folder to reclaim the space).

A build writes ``<name>.<pid>.tmp`` and renames it when complete. Ctrl-C
(SIGINT) or SIGTERM during a build stops the decode workers, removes the
temporary file and ends the process (SIGTERM with exit code 143), so the next
run builds the cache afresh; only SIGKILL can leave a ``.tmp`` file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fedlib.data.covidx import Layout, Record, read_split
from fedlib.data.images import _decode
from fedlib.errors import UserError

FORMAT_VERSION = 2  # bump when preprocess() changes, so old caches are not trusted (2: one channel)
CHANNELS = 1  # stored channels: grey
_LAYOUT = Layout()  # the default Layout; frozen, so one shared instance is safe


def cache_size(image_size: int) -> int:
    """Side of the stored square: the paper resizes to 256 before cropping 224, so keep that ratio."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}; the paper uses 224.")
    return round(image_size * 256 / 224)


def preprocess(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, antialiased), centre-crop a square.

    Sizes and offsets follow torchvision's ``Resize(size)`` + ``CenterCrop(size)``.
    The image is resized as one grey channel (a colour image as its luma; a grey
    image's three equal channels would give these bytes three times).
    Returns uint8 of shape (size, size, 1).
    """
    if img.mode != "L":
        img = img.convert("L")
    width, height = img.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))[:, :, None]


class RowWriter:
    """Writes rows of a ``.npy`` file in place with ``os.pwrite``: no memory map, so writing
    does not grow the process's resident memory."""

    def __init__(self, path) -> None:
        header = np.load(path, mmap_mode="r")  # maps the file, reads none of its rows
        self.offset, self.row_bytes = header.offset, header[0].nbytes if len(header) else 0
        del header
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, index: int, row: np.ndarray) -> None:
        data = np.ascontiguousarray(row, dtype=np.uint8).tobytes()
        if len(data) != self.row_bytes:
            raise ValueError(f"row of {len(data)} bytes where the file holds rows of {self.row_bytes}")
        os.pwrite(self.fd, data, self.offset + index * self.row_bytes)

    def close(self) -> None:
        os.close(self.fd)


_CHUNK = 4  # images per message to a worker: few, so that a first bad image stops the build soon
# A worker takes about 0.3 s to start (numpy and PIL) and a radiograph 20-100 ms to
# decode, so below this many images starting workers costs more than it saves.
_PARALLEL_FROM = 32


def _fill(out_path: Path, records: list[Record], image_dir: Path, size: int, progress: bool, desc: str) -> None:
    """Decode every record into row i of the .npy file ``out_path``, on up to os.cpu_count() processes.

    Processes, not threads: PIL releases the GIL while resizing but not while
    it inflates a PNG, the larger cost, so threads cannot overlap it. Outside
    POSIX the work runs in this process.
    """
    paths = [str(image_dir / r.filename) for r in records]
    workers = min(os.cpu_count() or 1, len(paths))
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        if workers < 2 or len(paths) < _PARALLEL_FROM or os.name != "posix" or not sys.executable:
            out = RowWriter(out_path)
            try:
                for i, path in enumerate(paths):
                    out.write(i, preprocess(_decode(path), size))
                    bar.update()
            finally:
                out.close()
            return
        _fill_on_workers(out_path, paths, size, workers, bar)


def _fill_on_workers(out_path: Path, paths: list[str], size: int, workers: int, bar) -> None:
    """Deal chunks of images, in file order, to worker processes that write their rows themselves.

    Each worker is a fresh interpreter (``_start_worker``) with a socket of its
    own, over which it gets chunks and sends back only counts. So stopping it
    at any moment is a plain SIGTERM: no lock shared with other workers, no
    half-sent array (either of which can hang ``multiprocessing.Pool``).
    """
    workers_: dict = {}  # our end of each worker's socket -> its process
    in_flight: dict = {}  # our end of each worker's socket -> chunks sent and not answered
    chunks = iter(range(0, len(paths), _CHUNK))
    errors: list[tuple[int, str, bool]] = []  # (index, message, is a bug)
    idle = False  # every worker is waiting for work, so closing its socket ends it

    def deal(conn) -> None:
        start = next(chunks, None)
        if start is not None:
            try:
                conn.send([(i, paths[i]) for i in range(start, min(start + _CHUNK, len(paths)))])
            except OSError:
                raise _worker_died(workers_[conn], out_path) from None
            in_flight[conn] += 1

    try:
        for _ in range(workers):
            conn, proc = _start_worker(out_path, size)
            workers_[conn], in_flight[conn] = proc, 0
        for conn in [*workers_, *workers_]:  # two chunks each, so no worker waits for this process to be scheduled
            deal(conn)
        while any(in_flight.values()):
            for conn in wait([c for c, n in in_flight.items() if n]):
                in_flight[conn] -= 1
                try:
                    done, error = conn.recv()
                except (EOFError, OSError):
                    raise _worker_died(workers_[conn], out_path) from None
                bar.update(done)
                if error:
                    errors.append(error)
                elif not errors:  # after an error, only let the chunks in flight finish
                    deal(conn)
        idle = True
        if errors:
            # chunks go out in file order, so once none is in flight every image before
            # the first error has been tried: report the first bad image listed
            index, message, bug = min(errors)
            if bug:
                raise RuntimeError(f"decoding {paths[index]} failed in a worker:\n{message}")
            raise UserError(message)
    finally:
        for conn, proc in workers_.items():
            conn.close()  # a worker waiting for work reads end-of-file and leaves
            if not idle:
                proc.terminate()  # workers die at once on SIGTERM, whatever they are doing
        for proc in workers_.values():
            proc.wait()


def _worker_died(proc, out_path: Path) -> Exception:
    code = proc.wait()
    if code == -signal.SIGBUS:  # a write into the memory-mapped file found no disk block to land in
        return OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)}: a decoding worker was killed by SIGBUS writing it",
            str(out_path),
        )
    return RuntimeError(
        f"an image decoding worker ended unexpectedly (exit code {code}) while building "
        f"{out_path}; its error, if any, is above"
    )


# A worker's whole program: the parent's import path, then ``_serve``.
_WORKER = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from fedlib.data.cache import _serve; _serve()"


def _start_worker(out_path: Path, size: int):
    """A worker process and our end of its socket.

    A fresh interpreter rather than a multiprocessing fork: a forked worker
    inherits the caller's signal handlers (Flower's exit handlers ran in
    workers as a pool stopped them) and any lock its threads held, and a
    spawned or fork-server worker imports the caller's main script. It runs
    in a process group of its own, so Ctrl-C at a terminal reaches only the
    parent, which stops the workers; one whose parent is gone reads
    end-of-file and leaves. Start-up is about 0.3 s (numpy and PIL, not torch).
    """
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(sys.path), str(theirs.fileno()), str(out_path), str(size)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return Connection(ours.detach()), proc


def _serve() -> None:
    """Worker: decode the chunks the parent sends into rows of the output; reply with a count and any error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent alone handles Ctrl-C, by stopping us
    fd, out_path, size = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    conn = Connection(fd)
    out = RowWriter(out_path)
    while True:
        try:
            jobs = conn.recv()
        except EOFError:  # no more work, or the parent is gone
            out.close()
            return
        done, error = 0, None
        for index, path in jobs:
            try:
                out.write(index, preprocess(_decode(path), size))
            except UserError as err:
                error = (index, str(err), False)
                break
            except Exception:
                error = (index, traceback.format_exc(), True)
                break
            done += 1
        try:
            conn.send((done, error))
        except OSError:  # the parent is gone
            return


def _labels(records: list[Record]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.int64)


def decode_split(
    root, split: str, image_size: int, layout: Layout = _LAYOUT
) -> tuple[np.ndarray, np.ndarray, list[Record]]:
    """Like ``load_split_arrays`` but decodes every image now, into memory (tests, benchmarks)."""
    size = cache_size(image_size)
    records, image_dir = read_split(root, split, layout)
    with tempfile.TemporaryDirectory(prefix="fedlib-decode-") as tmp:
        path = Path(tmp) / "images.npy"
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(records), size, size, CHANNELS))
        _fill(path, records, image_dir, size, progress=False, desc="")
        images = np.load(path)
    return images, _labels(records), records


def cache_key(split_file: Path, image_dir: Path, size: int, records: list[Record] = ()) -> str:
    """Hex sha256 of what the cached pixels depend on: the split file, the image folder, the
    size, and each listed image's size and modification time (a replaced image rebuilds)."""
    digest = hashlib.sha256()
    digest.update(f"fedlib-cache-v{FORMAT_VERSION}\0{image_dir.resolve()}\0{size}\0".encode())
    digest.update(split_file.read_bytes())
    for record in records:
        stat = (image_dir / record.filename).stat()
        digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def default_cache_dir(root) -> Path:
    """``<root>/.fedlib_cache`` where the data root is writable, else ``~/.cache/fedlib``."""
    beside = Path(root) / ".fedlib_cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    return Path.home() / ".cache" / "fedlib"


def load_split_arrays(
    root,
    split: str,
    image_size: int,
    layout: Layout = _LAYOUT,
    cache_dir=None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[Record]]:
    """Images, labels and records of one split, decoding only on the first call.

    images: read-only ``np.memmap`` uint8 (N, S, S, 1) with S = cache_size(image_size);
    labels: int64 (N,) indices into the task's class names; records: the split file's lines.
    """
    size = cache_size(image_size)
    records, image_dir = read_split(root, split, layout)
    split_file = Path(root) / getattr(layout, f"{split}_split")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the cache folder {cache_dir} ({err}); pass a writable cache_dir.") from err
    path = cache_dir / f"{split}_{size}px_{cache_key(split_file, image_dir, size, records)[:24]}.npy"
    shape = (len(records), size, size, CHANNELS)

    images = _open_cached(path, shape)
    if images is None:
        desc = f"caching {split} at {size}px"
        _build(path, shape, lambda tmp: _fill(tmp, records, image_dir, size, progress, desc))
        images = _open_cached(path, shape)
        if images is None:
            raise RuntimeError(f"cache file {path} was written but does not read back as {shape} uint8")
    return images, _labels(records), records


def _open_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None when there is none or it does not match (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != shape or images.dtype != np.uint8:
        return None
    return images


def _build(path: Path, shape, fill) -> None:
    """Write the cache beside its final name with ``fill(tmp)``, then rename: a stopped build
    leaves no file.

    The temporary name carries the process id, so two processes building the
    same cache at once (e.g. Flower clients) do not write into each other's file.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    _check_free_space(path, int(np.prod(shape)))
    try:
        with _sigterm_raises():
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            del out  # the workers open the file themselves
            _allocate(tmp)
            fill(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Room left free beside a cache: other files (checkpoints, logs) still need to be written.
_SPARE = 64 * 2**20


def _check_free_space(path: Path, size: int) -> None:
    """Refuse a build the disk cannot hold, before any file is written (its size is known)."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # cannot tell: the build itself reports a full disk
    if free < size + _SPARE:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)}: the image cache needs {_mb(size)} and {path.parent} has "
            f"{_mb(free)} free; free space or delete old caches there",
            str(path),
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def _allocate(tmp: Path) -> None:
    """Give the sparse .npy file its disk blocks now: a full disk is then an error here, and
    never a SIGBUS in a worker writing into the memory-mapped file."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err.errno, err.strerror, str(tmp)) from None
    finally:
        os.close(fd)


@contextmanager
def _sigterm_raises():
    """Turn SIGTERM into SystemExit(143) meanwhile, so the build cleans up before the process ends.

    Only where SIGTERM would otherwise kill at once: a handler someone else set
    (Flower's) is left alone, and only the main thread may set one.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
