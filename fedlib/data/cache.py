"""Decode each COVIDx image once into a fixed-size uint8 array on disk.

Decoding a 1-4k px PNG costs tens of milliseconds; a training run reads every
image hundreds of times (100 rounds x 3 local epochs). So a split is decoded,
resized so its shorter side is ``cache_size(image_size)`` and centre-cropped to
a square once, and stored as one ``.npy`` file of shape (N, S, S, 3) that later
runs memory-map. The random crop and flip happen per batch on the stored
arrays (``fedlib.data.transforms``).

The cache file name holds a sha256 of the split file's bytes, the image
folder's absolute path, S and ``FORMAT_VERSION``: edit the split file, point
at another folder or change the size and a new file is built; the old one is
left alone (delete the cache folder to reclaim the space). Replacing an image
file in place keeps the same key; delete the cache after doing that.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fedlib.data.covidx import Layout, Record, _decode, read_split
from fedlib.errors import UserError

FORMAT_VERSION = 1  # bump when preprocess() changes, so old caches are not trusted
_LAYOUT = Layout()  # the default Layout; frozen, so one shared instance is safe


def cache_size(image_size: int) -> int:
    """Side of the stored square: the paper resizes to 256 before cropping 224, so keep that ratio."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}; the paper uses 224.")
    return round(image_size * 256 / 224)


def preprocess(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, antialiased), centre-crop a square.

    Sizes and offsets follow torchvision's ``Resize(size)`` + ``CenterCrop(size)``.
    Grayscale images are resized as one channel and then replicated, which
    gives the same bytes as resizing their RGB form, at a third of the cost.
    Returns uint8 of shape (size, size, 3).
    """
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    width, height = img.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    pixels = np.asarray(img.crop((left, top, left + size, top + size)))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def _decode_one(job: tuple[str, int]) -> np.ndarray:
    path, size = job
    return preprocess(_decode(path), size)


def _fill(out: np.ndarray, records: list[Record], image_dir: Path, size: int, progress: bool, desc: str) -> None:
    """Decode every record into ``out[i]``, on up to os.cpu_count() worker processes.

    Processes, not threads: PIL releases the GIL while resizing but not while
    it inflates a PNG, the larger cost, so threads cannot overlap it. Workers are forked (as torch's DataLoader
    does on Linux) so they start in milliseconds; where fork is unavailable
    the work runs in this process.
    """
    jobs = [(str(image_dir / r.filename), size) for r in records]
    workers = min(os.cpu_count() or 1, len(jobs))
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress) as bar:
        if workers < 2 or "fork" not in mp.get_all_start_methods():
            for i, job in enumerate(jobs):
                out[i] = _decode_one(job)
                bar.update()
            return
        with mp.get_context("fork").Pool(workers) as pool:
            # in file order, so the first bad image reported is the first one listed
            for i, pixels in enumerate(pool.imap(_decode_one, jobs, chunksize=4)):
                out[i] = pixels
                bar.update()


def _labels(records: list[Record]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.int64)


def decode_split(root, split: str, image_size: int, layout: Layout = _LAYOUT) -> tuple[np.ndarray, np.ndarray, list[Record]]:
    """Like ``load_split_arrays`` but decodes every image now, in memory (tests, benchmarks)."""
    size = cache_size(image_size)
    records, image_dir = read_split(root, split, layout)
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    _fill(images, records, image_dir, size, progress=False, desc="")
    return images, _labels(records), records


def cache_key(split_file: Path, image_dir: Path, size: int) -> str:
    """Hex sha256 of what the cached pixels depend on."""
    digest = hashlib.sha256()
    digest.update(f"fedlib-cache-v{FORMAT_VERSION}\0{image_dir.resolve()}\0{size}\0".encode())
    digest.update(split_file.read_bytes())
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

    images: read-only ``np.memmap`` uint8 (N, S, S, 3) with S = cache_size(image_size);
    labels: int64 (N,) indices into CLASSES; records: the split file's lines.
    """
    size = cache_size(image_size)
    records, image_dir = read_split(root, split, layout)
    split_file = Path(root) / getattr(layout, f"{split}_split")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the cache folder {cache_dir} ({err}); pass a writable cache_dir.") from err
    path = cache_dir / f"{split}_{size}px_{cache_key(split_file, image_dir, size)[:24]}.npy"
    shape = (len(records), size, size, 3)

    images = _open_cached(path, shape)
    if images is None:
        _build(path, shape, records, image_dir, size, progress, desc=f"caching {split} at {size}px")
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


def _build(path: Path, shape, records, image_dir: Path, size: int, progress: bool, desc: str) -> None:
    """Write the cache beside its final name, then rename: a killed build leaves only a .tmp file.

    The temporary name carries the process id, so two processes building the
    same cache at once (e.g. Flower clients) do not write into each other's file.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(out, records, image_dir, size, progress, desc)
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
