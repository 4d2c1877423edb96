"""Assemble a COVIDx folder from the public sources a user downloaded, and check one.

``build`` takes a release's split files (the paper's ``train_split_v3.txt`` and
``test_split_v3.txt``; a validation file too where a release has one) and the folders
of its sources, finds every listed image by its name in the source its line names
(the fourth column), and copies or converts it into ``<out>/train/``, ``test/`` or
``val/``. It writes the split files fedlib reads by default (``train_split.txt``,
``test_split.txt``, ``val_split.txt``: the lines of the given files, unchanged) and
``covidx-manifest.csv``: one row per image, ``split,file,source,bytes,sha256``.

Sources, as published, and how a split line names their images. COVID-Net's
``create_COVIDx_v3.ipynb`` wrote the v3 split files (github.com/lindawangg/COVID-Net,
read at commit a888987; the copy next to the v3 split files in
github.com/LoganCome/FL4COVID is the same notebook), and its names are these:

- ``cohen``: github.com/ieee8023/covid-chestxray-dataset, ``metadata.csv`` (columns
  ``patientid, finding, view, folder, filename, ...``) and ``images/``; a line names
  the file as its ``filename`` column does.
- ``fig1``: github.com/agchung/Figure1-COVID-chestxray-dataset, ``metadata.csv``
  (``patientid, finding, ...``, no file column) and ``images/``; a line names
  ``<patientid>.jpg`` or ``.png``, the file in ``images/``.
- ``actmed``: github.com/agchung/Actualmed-COVID-chestxray-dataset, ``metadata.csv``
  (``patientid, finding, imagename, ...``) and ``images/``; a line names ``imagename``.
- ``sirm``: Kaggle's COVID-19 Radiography Database in the release the notebook read,
  a ``COVID-19/`` folder of ``COVID-19 (N).png``; the notebook removed the spaces from
  the name (``COVID-19(N).png``) and wrote the image in grey (OpenCV's BGR-to-grey,
  the ITU-R 601 weights PIL's ``convert("L")`` uses), so this does too. Later
  releases renamed the files (``COVID/images/COVID-N.png``) without a published
  mapping to the old names; such a folder is refused rather than guessed at.
- ``rsna``: Kaggle's RSNA Pneumonia Detection Challenge, ``stage_2_train_images/
  <patientId>.dcm``; a line names ``<patientId>.png``, converted by ``fedlib.data.dicom``.

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
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedlib.data.covidx import read_split_file
from fedlib.errors import UserError, quoted

SOURCES = ("cohen", "fig1", "actmed", "sirm", "rsna")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "{split}_split.txt"  # fedlib's default Layout names (and val_split.txt beside them)
MANIFEST = "covidx-manifest.csv"
COLUMNS = ("split", "file", "source", "bytes", "sha256")
FLUSH_EVERY = 200  # images between manifest rewrites: what a hard kill can make a rerun hash again
SHOWN = 3  # names an error shows per source
_GIVE = "give each source's folder with --source NAME=DIR, in the version the split files were made from"
_TMP = ".covidx-tmp-"  # prefix of the temporary names images are written under

# Published layout of each source that has a metadata.csv: (where, columns a line's name needs).
_GITHUB = {
    "cohen": ("github.com/ieee8023/covid-chestxray-dataset", ("patientid", "finding", "filename")),
    "fig1": ("github.com/agchung/Figure1-COVID-chestxray-dataset", ("patientid", "finding")),
    "actmed": ("github.com/agchung/Actualmed-COVID-chestxray-dataset", ("patientid", "finding", "imagename")),
}


@dataclass
class Source:
    """One source folder: where each image a split line can name lives, and how it is written."""

    name: str
    root: Path
    index: dict[str, Path]  # the name a split line uses -> the file in the source
    convert: Callable[[Path], bytes] | None = None  # None: copied byte for byte


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


# ---------------------------------------------------------------------------- sources


def open_source(name: str, root) -> Source:
    """The source ``name`` at ``root``, its layout checked; a folder of another layout is a UserError."""
    root = Path(root)
    if name not in SOURCES:
        raise UserError(f"--source {quoted(name)}: unknown source; covidx build knows {', '.join(SOURCES)}.")
    if not root.is_dir():
        raise UserError(f"--source {name}={root}: no such folder; pass the folder the {name} source was unpacked to.")
    if name in _GITHUB:
        return _github_source(name, root)
    if name == "sirm":
        return Source(name, root, _sirm_index(root), convert=_grey_png)
    images = root / "stage_2_train_images"
    if not images.is_dir():
        inside = " (it holds .dcm files itself: pass its parent)" if any(root.glob("*.dcm")) else ""
        raise UserError(
            f"--source rsna={root} is not the RSNA Pneumonia Detection Challenge's layout: it has no "
            f"stage_2_train_images/ folder{inside}; pass the folder Kaggle's download unpacks to."
        )
    from fedlib.data.dicom import dicom_to_png

    index = {f"{p.name[:-4]}.png": p for p in _files(images) if p.name.endswith(".dcm")}
    return Source(name, root, index, convert=dicom_to_png)


def _github_source(name: str, root: Path) -> Source:
    where, needed = _GITHUB[name]
    metadata = root / "metadata.csv"
    fix = f"pass a clone of {where} (the folder holding metadata.csv and images/)"
    if not metadata.is_file():
        raise UserError(f"--source {name}={root} has no metadata.csv, so it is not {where}; {fix}.")
    with metadata.open(encoding="latin-1", newline="") as fh:  # Figure1's file is not UTF-8
        header = [c.strip() for c in next(csv.reader(fh), [])]
    absent = [c for c in needed if c not in header]
    if absent:
        raise UserError(
            f"{metadata} has no column {', '.join(map(repr, absent))}, so {root} is not {name}'s layout "
            f"({where}); {fix}."
        )
    if not (root / "images").is_dir():
        raise UserError(f"--source {name}={root} has no images/ folder; {fix}.")
    return Source(name, root, {p.name: p for p in _files(root / "images")})


def _sirm_index(root: Path) -> dict[str, Path]:
    folder = root / "COVID-19"
    if folder.is_dir():
        return {p.name.replace(" ", ""): p for p in _files(folder)}
    later = next((p for p in (root / "COVID", root / "COVID-19_Radiography_Dataset") if p.is_dir()), None)
    why = (
        f"it holds {later.name}/, a later release whose files were renamed (COVID-N.png) with no published "
        "mapping to the names the split files use (COVID-19(N).png)"
        if later
        else "it has no COVID-19/ folder"
    )
    raise UserError(
        f"--source sirm={root} is not the COVID-19 Radiography Database release the split files were made "
        f"from: {why}; pass the folder holding COVID-19/ with 'COVID-19 (N).png' files (the spring-2020 release)."
    )


def _files(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_file()]
    except OSError as err:
        raise UserError(
            f"{folder} cannot be listed ({err.strerror or err}); give this user read access to it."
        ) from err


def _grey_png(path: Path) -> bytes:
    """The image in 8-bit grey, as PNG (JPEG, quality 95 as OpenCV writes, for a .jpg name)."""
    from fedlib.data.covidx import load_image  # refuses undecodable and absurdly sized files in one line

    buffer = io.BytesIO()
    fmt = "PNG" if path.name.lower().endswith(".png") else "JPEG"
    load_image(path).convert("L").save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


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


def build(splits: dict[str, Path], sources: dict[str, Path], out, allow_missing: bool = False, progress=None):
    """Assemble ``out`` from ``splits`` ({"train": file, "test": file[, "val": file]}) and ``sources``
    ({name: folder}); returns a ``BuildReport``. ``progress`` wraps the item list (tqdm) when given."""
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
    try:
        for n, item in enumerate(progress(items) if progress else items, start=1):
            if _place(item, out, rows, opened[item.source]):
                report.written += 1
            else:
                report.kept += 1
            if n % FLUSH_EVERY == 0:
                write_manifest(out, rows)
    finally:
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


def _place(item: Item, out: Path, rows: dict, source: Source) -> bool:
    """Write one image unless the manifest holds it with the hash it has on disk; True if written."""
    dest = out / item.split / item.file
    known = rows.get((item.split, item.file))
    if known and dest.is_file() and sha256_of(dest) == known[1:]:
        return False
    data = source.convert(item.path) if source.convert else read_source(item.path)
    write_image(dest, data)
    rows[(item.split, item.file)] = (item.source, len(data), hashlib.sha256(data).hexdigest())
    return True


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
