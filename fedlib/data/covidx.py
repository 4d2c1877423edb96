"""COVIDx on disk: split files, image folders and image decoding.

A COVIDx release is a folder with two split files and two image folders::

    <root>/train_split.txt   one image per line: patientid filename label source
    <root>/test_split.txt
    <root>/train/            the images the train split names (PNG, some JPEG)
    <root>/test/

Releases name the split files differently (``train_split_v3.txt`` is the one
the paper used), so every name is a field of ``Layout``.

Class indices follow the authors' code, not the order of the COVIDx labels:
``CLASSES[i]`` is the name of class ``i``, so pneumonia=0, normal=1,
COVID-19=2. Every other module (metrics, plots, partitions) uses this tuple.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedlib.errors import UserError

CLASSES = ("pneumonia", "normal", "COVID-19")  # the authors' index map: pneumonia=0, normal=1, COVID-19=2
_LABEL_INDEX = {name.lower(): i for i, name in enumerate(CLASSES)}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Layout:
    """File and folder names inside a COVIDx root; paths are relative to the root."""

    train_split: str = "train_split.txt"  # COVIDx v4+ name; the paper's v3 release calls it train_split_v3.txt
    test_split: str = "test_split.txt"  # likewise test_split_v3.txt for v3
    train_dir: str = "train"  # the folder the COVID-Net scripts create
    test_dir: str = "test"  # likewise for the test images


@dataclass(frozen=True)
class Record:
    """One line of a split file."""

    patient_id: str
    filename: str
    label: int  # index into CLASSES
    source: str  # data set of origin (cohen, rsna, ...); "unknown" for the old 3-column form


def parse_split_file(path) -> list[Record]:
    """Read a COVIDx split file into records, in file order.

    Each non-blank line is ``patientid filename label [source [extra ...]]``,
    separated by whitespace. Three columns is the oldest form (source becomes
    "unknown"); columns beyond the fourth, which some releases carry, are
    ignored. Labels are matched case-insensitively against ``CLASSES`` and
    nothing else: spellings such as ``covid`` or ``COVID19`` and the binary
    ``positive``/``negative`` releases are rejected rather than guessed at.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Split file {path} does not exist; check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"Split file {path} is not UTF-8 text ({err.reason}); point at a COVIDx split file.") from err

    records: list[Record] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) < 3:
            raise UserError(
                f"{path} line {number}: expected 'patientid filename label [source]' but found "
                f"{len(columns)} column(s) in {line.strip()!r}; fix or remove the line."
            )
        patient_id, filename, label_name = columns[:3]
        label = _LABEL_INDEX.get(label_name.lower())
        if label is None:
            raise UserError(
                f"{path} line {number}: unknown label {label_name!r}; valid labels are "
                f"{', '.join(CLASSES)} (any case)."
            )
        if filename in first_line:
            raise UserError(
                f"{path} lines {first_line[filename]} and {number} both list {filename!r}; "
                "remove one of them."
            )
        first_line[filename] = number
        source = columns[3] if len(columns) >= 4 else "unknown"
        records.append(Record(patient_id, filename, label, source))
    if not records:
        raise UserError(f"Split file {path} has no records; point at a non-empty COVIDx split file.")
    return records


def load_image(path) -> Image.Image:
    """Decode one image file into an RGB PIL image (grayscale replicated).

    Alpha is dropped, palettes and CMYK are converted by PIL. Images with more
    than 8 bits (16-bit PNG ``I;16``, 32-bit ``I``, float ``F``) are stretched
    from their own minimum..maximum to 0..255: the 16-bit CXRs in COVIDx often
    hold 12-bit data, which dividing by 65535 would leave nearly black, and
    PIL's plain ``convert("RGB")`` (what the authors' code does) clips every
    value above 255 to white. A constant image maps to 0.
    """
    return _decode(path).convert("RGB")


def _decode(path) -> Image.Image:
    """Decode to mode L (grayscale) or RGB; ``load_image`` and the cache share it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Image file {path} does not exist; check the split file and the image folder.")
    if path.stat().st_size == 0:
        raise UserError(f"Image file {path} is empty (0 bytes); download it again or remove its line from the split file.")
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so a truncated file fails here and not later
            return _to_l_or_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(
            f"Image file {path} cannot be decoded ({err}); download it again or remove its line from the split file."
        ) from err


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("L", "RGB"):
        return img.copy()
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"Unknown split {split!r}; use 'train' or 'test'.")


def _check_root(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"Data root {root} is not a folder; pass the COVIDx folder that holds the split files "
            "and the train/ and test/ image folders."
        )
    return root


def _split_file(root: Path, split: str, layout: Layout) -> Path:
    field = f"{split}_split"
    path = root / getattr(layout, field)
    if not path.is_file():
        raise UserError(
            f"Split file {path} does not exist; set Layout.{field} (CLI --{field.replace('_', '-')}) "
            "to the name your COVIDx release uses, e.g. train_split_v3.txt / test_split_v3.txt."
        )
    return path


def read_split(root, split: str, layout: Layout = Layout()) -> tuple[list[Record], Path]:
    """Records of one split and the folder holding its images.

    Checks up front that every listed image exists, so a partial download
    fails here with a count instead of halfway through a cache build.
    """
    _check_split(split)
    root = _check_root(root)
    split_path = _split_file(root, split, layout)
    records = parse_split_file(split_path)
    field = f"{split}_dir"
    image_dir = root / getattr(layout, field)
    if not image_dir.is_dir():
        raise UserError(f"Image folder {image_dir} does not exist; set Layout.{field} (CLI --{field.replace('_', '-')}) to the folder holding the {split} images.")
    present = set(os.listdir(image_dir))
    missing = [r.filename for r in records if r.filename not in present and not (image_dir / r.filename).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(records)} images listed in {split_path} are "
            f"missing from {image_dir} (first: {missing[0]!r}); finish the download or fix the split file."
        )
    return records, image_dir


def summarize(root, layout: Layout = Layout()) -> dict:
    """Image counts per split, per class and per source; reads only the split files.

    Returns ``{"train": {"normal": n, "pneumonia": n, "COVID-19": n, "total": n},
    "test": {...}, "sources": {"train": {source: n}, "test": {...}}}``.
    """
    root = _check_root(root)
    summary: dict = {"sources": {}}
    for split in SPLITS:
        records = parse_split_file(_split_file(root, split, layout))
        labels = Counter(r.label for r in records)
        counts = {name: labels[i] for i, name in enumerate(CLASSES)}
        counts["total"] = len(records)
        summary[split] = counts
        summary["sources"][split] = dict(sorted(Counter(r.source for r in records).items()))
    return {"train": summary["train"], "test": summary["test"], "sources": summary["sources"]}


def patient_overlap(root, layout: Layout = Layout()) -> list[str]:
    """Sorted patient ids that appear in both splits: a train/test leak worth a warning."""
    root = _check_root(root)
    train, test = (
        {r.patient_id for r in parse_split_file(_split_file(root, split, layout))} for split in SPLITS
    )
    return sorted(train & test)
