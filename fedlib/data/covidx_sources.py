"""The five public sources of COVIDx: their published layouts, and the file each split line names.

Sources, as published, and how a split line names their images. COVID-Net's
``create_COVIDx_v3.ipynb`` wrote the v3 split files (github.com/lindawangg/COVID-Net,
read at commit a888987; the copy beside the v3 split files in github.com/LoganCome/FL4COVID
has the same code cells), and its names are these:

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

Every source is checked against its layout when it is opened: a folder of another layout
is one UserError naming it and what to pass instead.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedlib.errors import UserError, quoted

SOURCES = ("cohen", "fig1", "actmed", "sirm", "rsna")

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
