"""COVIDx on disk: split files, image folders and image decoding.

A COVIDx release is a folder with two split files and two image folders::

    <root>/train_split.txt   one image per line: patientid filename label source
    <root>/test_split.txt
    <root>/train/            the images the train split names (PNG, some JPEG)
    <root>/test/

Releases name the split files differently (``train_split_v3.txt`` is the one
the paper used), so every name is a field of ``Layout``.

Two tasks, decided by the split files' labels: ``pneumonia``/``normal``/``COVID-19``
(any case; the paper's v3 and COVIDx up to v9A) is the three-class task, whose
indices follow the authors' code, not the order of the COVIDx labels: ``CLASSES[i]``
is the name of class ``i``, so pneumonia=0, normal=1, COVID-19=2.
``positive``/``negative`` (Kaggle's COVIDx CXR-2/3/4, COVID-Net's v7B-v9B) is the
binary task: negative=0, positive=1 (``BINARY_CLASSES``). ``Layout.task``
"binary" on a three-class folder maps pneumonia and normal to negative and
COVID-19 to positive (COVID-Net's convention). ``class_names(task)`` is the one
place that names the classes; a loaded data set carries them (``Dataset.classes``)
and every metric, table and figure takes them from there.

Real releases list some images more than once (the earliest COVIDx train split
has one line per RSNA annotation box): a repeat with the same label is kept
once, from its first line, with a ``RepeatedImageWarning``; a repeat with
another label is an error.

Every image must lie inside its split's image folder. A file name that is
absolute or has a ``..`` part is refused. A symbolic link (to a file, or a
linked sub-folder on the way) is followed only when its target resolves inside
the data root or inside the image folder's own resolved location; any other
link is refused. So a split file, or a folder of links unpacked from an
archive, cannot make fedlib read files elsewhere, while linking a whole image
folder to another disk (``train -> /mnt/disk/covidx/train``) still works.

Images are decoded by ``fedlib.data.images`` (``load_image`` is re-exported here),
which refuses a header claiming more pixels than a radiograph can have.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fedlib.data.images import _decode, _not_a_file, load_image  # noqa: F401 (re-exported: the image reader)
from fedlib.errors import UserError, quoted

CLASSES = ("pneumonia", "normal", "COVID-19")  # the authors' index map: pneumonia=0, normal=1, COVID-19=2
BINARY_CLASSES = ("negative", "positive")  # COVIDx's binary releases: negative=0, positive=1
THREE_CLASS, BINARY = "three-class", "binary"
TASKS = ("auto", BINARY, THREE_CLASS)  # Layout.task: auto = as the split files' labels say
_VOCABULARIES = {THREE_CLASS: CLASSES, BINARY: BINARY_CLASSES}
# label (lower case) -> (task, index into that task's classes)
_LABEL_INDEX = {name.lower(): (task, i) for task, names in _VOCABULARIES.items() for i, name in enumerate(names)}
# The three-class labels as the binary task counts them: pneumonia and normal are negative.
_TO_BINARY = (0, 0, 1)
SPLITS = ("train", "test")
SPLITS_WITH_VAL = ("train", "val", "test")


def class_names(task: str) -> tuple[str, ...]:
    """The class names of a resolved task ("binary" or "three-class"), index order."""
    return _VOCABULARIES[task]


def positive_class(classes) -> str:
    """The class whose sensitivity is "COVID-19 sensitivity": COVID-19, or positive in the binary task."""
    return "COVID-19" if "COVID-19" in classes else classes[-1]


# COVIDx v9's train split is about 2.5 MB (30,000 lines); a split file twenty-five times that is
# the wrong file (or 100 MB of padding, which once made a 419 MB error line), refused unread.
MAX_SPLIT_BYTES = 64 * 2**20


class RepeatedImageWarning(UserWarning):
    """A split file lists an image more than once with the same label; it is used once."""


@dataclass(frozen=True)
class Layout:
    """File and folder names inside a COVIDx root; paths are relative to the root."""

    train_split: str = "train_split.txt"  # COVIDx v4+ name; the paper's v3 release calls it train_split_v3.txt
    test_split: str = "test_split.txt"  # likewise test_split_v3.txt for v3
    train_dir: str = "train"  # the folder the COVID-Net scripts create
    test_dir: str = "test"  # likewise for the test images
    val_split: str | None = None  # a published validation split (val.txt in COVIDx CXR-3/4); None: none
    val_dir: str = "val"  # the folder of its images
    task: str = "auto"  # auto (as the labels say) | binary | three-class; see the module docstring

    def split_names(self) -> tuple[str, ...]:
        """The splits this layout has: train and test, and val when a validation split is named."""
        return SPLITS_WITH_VAL if self.val_split is not None else SPLITS


@dataclass(frozen=True)
class Record:
    """One line of a split file."""

    patient_id: str
    filename: str
    label: int  # index into class_names(task)
    source: str  # data set of origin (cohen, rsna, ...); "unknown" for the old 3-column form
    task: str = THREE_CLASS  # whose labels: "three-class" (CLASSES) or "binary" (BINARY_CLASSES)


@dataclass(frozen=True)
class Repeats:
    """Lines of a split file that list an image already listed, with the same label."""

    lines: int = 0  # such lines, all skipped
    names: tuple[str, ...] = ()  # the images they list, each once, in file order
    other_patient: int = 0  # of those lines, how many give another patient id (the first line's is kept)

    def describe(self, path) -> str:
        """The warning, one sentence naming the split file."""
        shown = ", ".join(repr(n) for n in self.names[:_SHOWN]) + (" ..." if len(self.names) > _SHOWN else "")
        other = f"; {self.other_patient} of them give another patient id" if self.other_patient else ""
        return (
            f"{path}: {self.lines} line(s) list an image already listed with the same label "
            f"({len(self.names)} image(s): {shown}){other}; each image is used once, as its first line says."
        )


_SHOWN = 5  # repeated names a warning shows


def parse_split_file(path) -> list[Record]:
    """Read a COVIDx split file into records, in file order.

    Each non-blank line is ``patientid filename label [source [extra ...]]``,
    separated by whitespace. Three columns is the oldest form (source becomes
    "unknown"); columns beyond the fourth, which some releases carry, are
    ignored. Labels are matched case-insensitively against ``CLASSES`` or
    ``BINARY_CLASSES`` and nothing else (spellings such as ``covid`` or
    ``COVID19`` are rejected rather than guessed at); a file that mixes the two
    is an error naming the first line of each. Each record says its task.
    An image listed again with the same label is kept once, from its first
    line, with a ``RepeatedImageWarning``; with another label it is an error.
    File names cannot contain spaces.
    """
    records, repeats = read_split_file(path)
    if repeats.lines:
        warnings.warn(repeats.describe(path), RepeatedImageWarning, stacklevel=2)
    return records


def read_split_file(path) -> tuple[list[Record], Repeats]:
    """``parse_split_file`` without the warning: the records and what was repeated."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"Split file {path} {_not_a_file(path)}; check the path.")
        if path.stat().st_size > MAX_SPLIT_BYTES:
            raise UserError(
                f"Split file {path} holds {path.stat().st_size} bytes, more than a COVIDx split file can "
                f"(at most {MAX_SPLIT_BYTES}); point at the right file."
            )
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"Split file {path} is not UTF-8 text ({err.reason}); point at a COVIDx split file.") from err
    except OSError as err:  # PermissionError above all
        raise UserError(
            f"Split file {path} cannot be read ({err.strerror or err}); give this user read access to it."
        ) from err

    records: list[Record] = []
    first: dict[str, tuple[int, Record]] = {}  # file name -> (line number, record)
    repeated: dict[str, None] = {}  # an ordered set
    repeat_lines = other_patient = 0
    vocabulary = None  # (task, line number, line) of the first label
    for number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) < 3:
            raise UserError(
                f"{path} line {number}: expected 'patientid filename label [source]' but found "
                f"{len(columns)} column(s) in {quoted(line.strip())}; fix or remove the line."
            )
        patient_id, filename, label_name = columns[:3]
        found = _LABEL_INDEX.get(label_name.lower())
        if found is None:
            _unknown_label(path, number, columns)
        task, label = found
        if vocabulary is None:
            vocabulary = (task, number, line)
        elif task != vocabulary[0]:
            _mixed(path, vocabulary, (task, number, line))
        name = PurePosixPath(filename)
        if name.is_absolute() or ".." in name.parts:
            raise UserError(
                f"{path} line {number}: file name {quoted(filename)} points outside the image folder; "
                "list each image by its name inside the split's image folder."
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in filename):
            raise UserError(
                f"{path} line {number}: file name {quoted(filename)} holds a control character (a NUL byte, ...); "
                "fix the line or the file name."
            )
        key = str(name)  # compared after normalising: ./a.png and a//b.png are a.png and a/b.png
        if key in first:
            first_number, kept = first[key]
            if kept.label != label:
                raise UserError(
                    f"{path} lines {first_number} and {number} both list {quoted(filename)}, as "
                    f"{class_names(task)[kept.label]} and {class_names(task)[label]}; remove the line with the "
                    "wrong label."
                )
            repeat_lines += 1
            other_patient += patient_id != kept.patient_id
            repeated[filename] = None
            continue
        source = columns[3] if len(columns) >= 4 else "unknown"
        record = Record(patient_id, filename, label, source, task)
        first[key] = (number, record)
        records.append(record)
    if not records:
        raise UserError(f"Split file {path} has no records; point at a non-empty COVIDx split file.")
    return records, Repeats(repeat_lines, tuple(repeated), other_patient)


def _unknown_label(path: Path, number: int, columns: list[str]) -> None:
    """Raise for a third column that is not a label, saying why when a later column is one."""
    later = next((k for k in range(3, len(columns)) if columns[k].lower() in _LABEL_INDEX), None)
    if later is not None:  # the words before the label spilled over: a name with a space in it
        raise UserError(
            f"{path} line {number}: the label {columns[later]!r} is column {later + 1}, not 3, so the file "
            f"name seems to contain a space ({quoted(' '.join(columns[1:later]))}); file names with spaces are not "
            "supported, rename the file and its line."
        )
    raise UserError(
        f"{path} line {number}: unknown label {quoted(columns[2])}; valid labels are {', '.join(CLASSES)} "
        f"(three classes) or {', '.join(BINARY_CLASSES)} (binary), any case."
    )


def _mixed(path: Path, first: tuple, other: tuple) -> None:
    """Raise for a split file whose labels come from both vocabularies."""
    shown = " and ".join(
        f"the {task} labels (line {number}: {quoted(line.strip())})" for task, number, line in (first, other)
    )
    raise UserError(
        f"{path} mixes {shown}; a split file uses one vocabulary, fix the lines of the other "
        "(--task binary maps a three-class folder to positive/negative)."
    )


def _check_split(split: str, layout: Layout) -> None:
    if split == "val" and layout.val_split is None:
        raise UserError("No validation split is named; set Layout.val_split (CLI --val-split), e.g. val.txt.")
    if split not in SPLITS_WITH_VAL:
        raise UserError(f"Unknown split {split!r}; use 'train', 'val' or 'test'.")


def as_task(records: list[Record], task: str, path) -> list[Record]:
    """The records as ``task`` (a ``Layout.task``) counts them: as they are, or a three-class
    split's labels mapped to negative/positive. A binary split cannot become three-class."""
    if task not in TASKS:
        raise UserError(f"Unknown task {quoted(str(task))} (CLI --task); use {', '.join(TASKS)}.")
    have = records[0].task
    if task in ("auto", have):
        return records
    if task == THREE_CLASS:
        raise UserError(
            f"{path} has binary labels (positive/negative), which do not say pneumonia or normal; "
            "drop --task three-class to train the binary task, or use a three-class release."
        )
    return [Record(r.patient_id, r.filename, _TO_BINARY[r.label], r.source, BINARY) for r in records]


def task_of(by_split: dict[str, tuple[list[Record], Path]]) -> str:
    """The one task of a folder's splits ({split: (records, split file)}); splits whose labels
    disagree (a binary train split with a three-class test split) are an error naming both."""
    seen = {records[0].task: path for records, path in by_split.values()}
    if len(seen) > 1:
        (a, a_path), (b, b_path) = seen.items()
        raise UserError(
            f"{a_path} has {a} labels but {b_path} has {b} labels; give split files of one release, or "
            "--task binary to count both as negative/positive."
        )
    return next(iter(seen))


def _check_root(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"Data root {root} is not a folder; pass the COVIDx folder that holds the split files "
            "and the train/ and test/ image folders."
        )
    return root


def _in_root(root: Path, layout: Layout, field: str) -> Path:
    """``root / layout.<field>``, which must name something inside the data root, whether it
    came from an option or a config file (``../../etc/passwd`` once printed that file's first line)."""
    name = PurePosixPath(getattr(layout, field))
    if "\0" in str(name):
        raise UserError(f"Layout.{field} (CLI --{field.replace('_', '-')}) {quoted(str(name))} holds a NUL byte.")
    if name.is_absolute() or ".." in name.parts:
        raise UserError(
            f"Layout.{field} (CLI --{field.replace('_', '-')}) {quoted(str(name))} points outside the data root "
            f"{root}; name a file or folder inside it."
        )
    return root / name


def _split_file(root: Path, split: str, layout: Layout) -> Path:
    field = f"{split}_split"
    path = _in_root(root, layout, field)
    if not path.is_file():
        raise UserError(
            f"Split file {path} {_not_a_file(path)}; set Layout.{field} (CLI --{field.replace('_', '-')}) "
            "to the name your COVIDx release uses, e.g. "
            + ("val.txt (Kaggle's COVIDx CXR-3/4)." if split == "val" else "train_split_v3.txt / test_split_v3.txt.")
        )
    return path


def read_split(root, split: str, layout: Layout = Layout()) -> tuple[list[Record], Path]:
    """Records of one split and the folder holding its images.

    Checks up front that every listed image exists and lies inside the image
    folder, so a partial download fails here with a count instead of halfway
    through a cache build.
    """
    _check_split(split, layout)
    root = _check_root(root)
    split_path = _split_file(root, split, layout)
    records = as_task(parse_split_file(split_path), layout.task, split_path)
    field = f"{split}_dir"
    image_dir = _in_root(root, layout, field)
    if not image_dir.is_dir():
        raise UserError(
            f"Image folder {image_dir} does not exist; set Layout.{field} (CLI --{field.replace('_', '-')}) to the folder holding the {split} images."
        )
    is_link = _listing(image_dir)
    inside = (root.resolve(), image_dir.resolve())
    for r in records:
        # one listing answers the common case; names in sub-folders and links need a look each
        if is_link.get(r.filename, True):
            target = (image_dir / r.filename).resolve()
            if not any(target.is_relative_to(base) for base in inside):
                raise UserError(
                    f"{split_path} line {_line_of(split_path, r.filename)}: {quoted(r.filename)} is a link to "
                    f"{target}, outside the data root {root}; copy the image into {image_dir} or link the "
                    "whole image folder instead."
                )
    missing = [r.filename for r in records if r.filename not in is_link and not (image_dir / r.filename).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(records)} images listed in {split_path} are "
            f"missing from {image_dir} (first: {quoted(missing[0])}); finish the download or fix the split file."
        )
    return records, image_dir


def _listing(image_dir: Path) -> dict[str, bool]:
    """Name -> is a symbolic link, for every entry of the image folder."""
    try:
        with os.scandir(image_dir) as entries:
            return {entry.name: entry.is_symlink() for entry in entries}
    except OSError as err:  # PermissionError above all
        raise UserError(
            f"Image folder {image_dir} cannot be listed ({err.strerror or err}); give this user read access to it."
        ) from err


def _line_of(split_path: Path, filename: str) -> int:
    """Line number of the first line listing ``filename`` (only for error messages)."""
    for number, line in enumerate(split_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        columns = line.split()
        if len(columns) > 1 and columns[1] == filename:
            return number
    return 0


def summarize(root, layout: Layout = Layout()) -> dict:
    """Image counts per split, per class and per source; reads only the split files.

    Returns ``{"task": "three-class" | "binary", "train": {"pneumonia": n, "normal": n,
    "COVID-19": n, "total": n} (binary: "negative", "positive"), "test": {...}, ("val": {...}
    with a validation split), "sources": {"train": {source: n}, "test": {...}},
    "repeated": {"train": {"lines": n, "images": n, "other_patient_id": n, "first": [name, ...]},
    "test": {...}}}``; counts are of distinct images, "repeated" counts the
    lines that list an image again with the same label (see ``parse_split_file``).
    """
    root = _check_root(root)
    summary: dict = {"sources": {}, "repeated": {}}
    by_split = {}
    for split in layout.split_names():
        path = _split_file(root, split, layout)
        records, repeats = read_split_file(path)
        records = as_task(records, layout.task, path)
        by_split[split] = (records, path)
        labels = Counter(r.label for r in records)
        counts = {name: labels[i] for i, name in enumerate(class_names(records[0].task))}
        counts["total"] = len(records)
        summary[split] = counts
        summary["sources"][split] = dict(sorted(Counter(r.source for r in records).items()))
        summary["repeated"][split] = {
            "lines": repeats.lines,
            "images": len(repeats.names),
            "other_patient_id": repeats.other_patient,
            "first": list(repeats.names[:_SHOWN]),
        }
    task = task_of(by_split)
    splits = {split: summary[split] for split in layout.split_names()}
    return {"task": task, **splits, "sources": summary["sources"], "repeated": summary["repeated"]}


def patient_overlap(root, layout: Layout = Layout()) -> list[str]:
    """Sorted patient ids that appear in both splits: a train/test leak worth a warning."""
    root = _check_root(root)
    train, test = ({r.patient_id for r in read_split_file(_split_file(root, split, layout))[0]} for split in SPLITS)
    return sorted(train & test)
