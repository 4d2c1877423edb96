"""fedlib covidx build / check on fabricated source trees in each source's published layout.

The trees are made here: tiny PNG/JPEG files, DICOM files written with pydicom, metadata.csv
files with the real header lines of ieee8023/covid-chestxray-dataset, agchung's Figure1 and
Actualmed repositories. No third-party image or label file is used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from fedlib.covidx_cli import add_commands, parse_sources
from fedlib.data import covidx_build as cb
from fedlib.data.covidx import read_split
from fedlib.data.dicom import dicom_to_gray8
from fedlib.errors import UserError

# The header lines as published (the v3-era columns the split files' names come from).
COHEN_HEADER = (
    "patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,intubation_present,went_icu,in_icu,"
    "needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,neutrophil_count,"
    "lymphocyte_count,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,other_notes,"
)
FIG1_HEADER = (
    "patientid,offset,sex,age,finding,survival,temperature,pO2 saturation,view,modality,originalfile,"
    "artifacts/distortion,notes"
)
ACTMED_HEADER = (
    "patientid,offset,sex,age,finding,survival,temperature,pO2 saturation,view,modality,imagename,"
    "artifacts/distortion,notes"
)
RSNA_NORMAL = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"
RSNA_PNEU = "00436515-870c-4b36-a041-de91049b9ab4"
RSNA_MONO1 = "00704310-78a8-4b38-8475-49f4573b2dbb"
ACTMED_FILE = "CR.1.2.840.113564.1722810170.20200318082923328940.1003000225002.png"

TRAIN = [
    "3 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg pneumonia cohen",
    "2 auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg COVID-19 cohen",
    "COVID-00001 COVID-00001.jpg COVID-19 fig1",
    f"ANON196 {ACTMED_FILE} COVID-19 actmed",
    "COVID-19(69) COVID-19(69).png COVID-19 sirm",
    f"{RSNA_NORMAL} {RSNA_NORMAL}.png normal rsna",
    f"{RSNA_PNEU} {RSNA_PNEU}.png pneumonia rsna",
]
TEST = [
    "19 covid-19-pneumonia-mild.JPG COVID-19 cohen",
    "COVID-00024 COVID-00024.png COVID-19 fig1",
    "COVID-19(119) COVID-19(119).png COVID-19 sirm",
    f"{RSNA_MONO1} {RSNA_MONO1}.png normal rsna",
]

# The MONOCHROME1 file: 12 bits stored, window centre 1000.5 and width 1001, so by PS3.3 C.11.2.1.2
# (linear: x <= 500 -> lowest, x > 1500 -> highest, else ((x - 1000) / 1000 + 0.5) of the 0..4095 range):
MONO1_STORED = np.array([[0, 500, 1000], [1500, 4095, 700]], dtype=np.uint16)
# ... then scaled to 0..255 (1000 -> 2047.5 -> 127.5 -> 128; 700 -> 819 -> 51) and inverted (255 - v).
MONO1_SHOWN = np.array([[255, 255, 127], [0, 0, 204]], dtype=np.uint8)


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, bits: int, **tags) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def image(path: Path, seed: int, mode: str = "L", size=(12, 10)) -> None:
    """A tiny image file in the format its name says."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def rsna_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (9, 11), dtype=np.uint8)


@pytest.fixture
def world(tmp_path):
    """Five source trees, two split files; returns (splits, sources, out)."""
    src = tmp_path / "sources"
    cohen = src / "covid-chestxray-dataset"
    (cohen / "images").mkdir(parents=True)
    (cohen / "metadata.csv").write_text(COHEN_HEADER + "\n")
    for k, name in enumerate(
        [
            "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg",
            "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg",
            "covid-19-pneumonia-mild.JPG",
            "not-in-any-split.png",
        ]
    ):
        image(cohen / "images" / name, k)
    fig1 = src / "Figure1-COVID-chestxray-dataset"
    (fig1 / "metadata.csv").parent.mkdir(parents=True)
    (fig1 / "metadata.csv").write_bytes((FIG1_HEADER + "\nCOVID-00001,,M,33,COVID-19,,,58\n").encode("latin-1"))
    image(fig1 / "images" / "COVID-00001.jpg", 10)
    image(fig1 / "images" / "COVID-00024.png", 11)
    actmed = src / "Actualmed-COVID-chestxray-dataset"
    (actmed / "metadata.csv").parent.mkdir(parents=True)
    (actmed / "metadata.csv").write_text(ACTMED_HEADER + "\n")
    image(actmed / "images" / ACTMED_FILE, 20)
    sirm = src / "COVID-19 Radiography Database"
    image(sirm / "COVID-19" / "COVID-19 (69).png", 30, mode="RGB")
    image(sirm / "COVID-19" / "COVID-19 (119).png", 31, mode="RGB")
    rsna = src / "rsna-pneumonia-detection-challenge"
    (rsna / "stage_2_train_labels.csv").parent.mkdir(parents=True)
    (rsna / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\n")
    write_dicom(rsna / "stage_2_train_images" / f"{RSNA_NORMAL}.dcm", rsna_pixels(40), "MONOCHROME2", 8)
    write_dicom(rsna / "stage_2_train_images" / f"{RSNA_PNEU}.dcm", rsna_pixels(41), "MONOCHROME2", 8)
    write_dicom(
        rsna / "stage_2_train_images" / f"{RSNA_MONO1}.dcm",
        MONO1_STORED,
        "MONOCHROME1",
        12,
        WindowCenter=1000.5,
        WindowWidth=1001,
    )
    splits = {"train": tmp_path / "train_split_v3.txt", "test": tmp_path / "test_split_v3.txt"}
    splits["train"].write_text("\n".join(TRAIN) + "\n")
    splits["test"].write_text("\n".join(TEST) + "\n")
    sources = {"cohen": cohen, "fig1": fig1, "actmed": actmed, "sirm": sirm, "rsna": rsna}
    return splits, sources, tmp_path / "covidx"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


# ---------------------------------------------------------------------------- building


def test_build_assembles_every_source_into_a_folder_fedlib_reads(world):
    splits, sources, out = world
    report = cb.build(splits, sources, out)
    assert (report.written, report.kept, report.counts) == (11, 0, {"train": 7, "test": 4})

    # GitHub sources: byte for byte
    for name in ("SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", ACTMED_FILE, "COVID-00001.jpg"):
        src = next(s / "images" / name for s in sources.values() if (s / "images" / name).is_file())
        assert (out / "train" / name).read_bytes() == src.read_bytes()
    # sirm: spaces gone from the name, the image in grey (the ITU-R 601 weights)
    with Image.open(sources["sirm"] / "COVID-19" / "COVID-19 (69).png") as img:
        expected = np.asarray(img.convert("L"))
    grey = Image.open(out / "train" / "COVID-19(69).png")
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), expected)
    # rsna: <patientId>.dcm -> <patientId>.png; an 8-bit MONOCHROME2 file keeps its values
    assert np.array_equal(pixels(out / "train" / f"{RSNA_NORMAL}.png"), rsna_pixels(40))
    assert np.array_equal(pixels(out / "test" / f"{RSNA_MONO1}.png"), MONO1_SHOWN)
    assert not (out / "train" / "not-in-any-split.png").exists()

    # the manifest records every image as it is on disk
    with (out / cb.MANIFEST).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 11 and set(rows[0]) == set(cb.COLUMNS)
    for row in rows:
        path = out / row["split"] / row["file"]
        assert (int(row["bytes"]), row["sha256"]) == (path.stat().st_size, sha(path))
    assert {r["source"] for r in rows} == set(cb.SOURCES)

    # the split files, under fedlib's default names, are the given lines; fedlib reads the folder
    assert (out / "train_split.txt").read_text() == splits["train"].read_text()
    records, folder = read_split(out, "train")
    assert [r.filename for r in records] == [line.split()[1] for line in TRAIN] and folder == out / "train"
    assert cb.check(out).ok


def test_worker_processes_give_the_same_folder_and_bring_back_a_bad_file(world, tmp_path):
    splits, sources, out = world
    cb.build(splits, sources, out)
    again = tmp_path / "again"
    assert cb.build(splits, sources, again, workers=2).written == 11
    assert (again / cb.MANIFEST).read_text() == (out / cb.MANIFEST).read_text()
    bad = sources["rsna"] / "stage_2_train_images" / f"{RSNA_PNEU}.dcm"
    bad.write_bytes(b"not a DICOM file")
    with pytest.raises(UserError, match=f"DICOM file {bad} cannot be read"):
        cb.build(splits, sources, tmp_path / "third", workers=2)


def test_a_validation_split_goes_to_val(world):
    splits, sources, out = world
    splits["val"] = splits["train"].with_name("val.txt")
    splits["val"].write_text(TRAIN[-1] + "\n")  # one RSNA image of train's, for the validation set
    splits["train"].write_text("\n".join(TRAIN[:-1]) + "\n")
    assert cb.build(splits, sources, out).counts == {"train": 6, "test": 4, "val": 1}
    assert (out / "val_split.txt").read_text() == TRAIN[-1] + "\n"
    assert np.array_equal(pixels(out / "val" / f"{RSNA_PNEU}.png"), rsna_pixels(41))
    assert not (out / "train" / f"{RSNA_PNEU}.png").exists()
    assert cb.check(out).images == {"train": 6, "val": 1, "test": 4}
    (out / "val_split.txt").unlink()
    assert cb.check(out).missing == ["val_split.txt"]  # the manifest has val images: its split file is due


def test_dicom_voi_lut_sequence_rescale_and_a_jpeg_baseline_file(tmp_path):
    # A VOI LUT Sequence (8 bits per entry) maps stored 0..3 to 0, 50, 200, 255; it wins over a window.
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 8])  # LUT Descriptor: 4 entries, the first for value 0, 8 bits
    lut.add_new(0x00283006, "US", [0, 50, 200, 255])  # LUT Data
    write_dicom(
        tmp_path / "lut.dcm",
        np.array([[0, 1], [2, 3]], dtype=np.uint16),
        "MONOCHROME2",
        12,
        VOILUTSequence=[lut],
        WindowCenter=1,
        WindowWidth=2,
    )
    assert dicom_to_gray8(tmp_path / "lut.dcm").tolist() == [[0, 50], [200, 255]]
    # No VOI transform: the rescaled range of 8 stored bits (slope 2, intercept -10: -10..500) to 0..255.
    write_dicom(
        tmp_path / "rescale.dcm",
        np.array([[0, 255, 5]], dtype=np.uint8),
        "MONOCHROME2",
        8,
        RescaleSlope=2,
        RescaleIntercept=-10,
    )
    assert dicom_to_gray8(tmp_path / "rescale.dcm").tolist() == [[0, 255, 5]]
    # JPEG Baseline, as compressed radiographs come: decoded through Pillow (lossy: within 2 levels)
    values = (np.arange(16 * 16).reshape(16, 16) % 200).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(values).save(jpeg, "JPEG", quality=100)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pydicom.encaps.encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    assert np.abs(dicom_to_gray8(tmp_path / "jpeg.dcm").astype(int) - values).max() <= 2


def test_absent_images_are_reported_per_source_and_nothing_is_written(world):
    splits, sources, out = world
    (sources["rsna"] / "stage_2_train_images" / f"{RSNA_PNEU}.dcm").unlink()
    (sources["cohen"] / "images" / "covid-19-pneumonia-mild.JPG").unlink()
    with pytest.raises(UserError) as err:
        cb.build(splits, sources, out)
    message = str(err.value)
    assert message.startswith("2 of 11 listed images are absent from their sources (")
    assert f"rsna 1: {RSNA_PNEU}.png" in message and "cohen 1: covid-19-pneumonia-mild.JPG" in message
    assert "--allow-missing" in message and not out.exists()
    # a source the split names but the command does not give is reported too, as such
    del sources["sirm"]
    with pytest.raises(UserError, match=r"sirm 2 \(no --source given\): COVID-19\(69\).png, COVID-19\(119\).png"):
        cb.build(splits, sources, out)


def test_allow_missing_writes_split_files_without_the_absent_lines(world):
    splits, sources, out = world
    (sources["fig1"] / "images" / "COVID-00024.png").unlink()
    report = cb.build(splits, sources, out, allow_missing=True)
    assert report.dropped == {"fig1": ["COVID-00024.png"]} and report.counts == {"train": 7, "test": 3}
    assert "1 line(s) left out of the split files, their images absent (fig1 1)" in report.describe(out)
    test_lines = (out / "test_split.txt").read_text().splitlines()
    assert test_lines == [line for line in TEST if "COVID-00024" not in line]
    assert cb.check(out).ok


class Killed(Exception):
    pass


def test_an_interrupted_build_resumes_and_a_second_run_copies_nothing(world, monkeypatch):
    splits, sources, out = world
    real, calls, limit = cb.write_image, [], [4]

    def dies_after_four(dest, data):
        if limit and len(calls) == limit[0]:
            raise Killed  # a Ctrl-C, a full disk or a crash between two images
        calls.append(dest.name)
        real(dest, data)

    monkeypatch.setattr(cb, "write_image", dies_after_four)
    with pytest.raises(Killed):
        cb.build(splits, sources, out)
    written = {p.name for p in out.rglob("*") if p.is_file() and p.parent != out}
    assert written == set(calls) and len(calls) == 4  # whole images only: no temporary file is left
    assert len(cb.read_manifest(out)) == 4 and not (out / "train_split.txt").exists()

    calls.clear()
    limit.clear()
    first = cb.build(splits, sources, out)
    assert (first.written, first.kept, len(calls)) == (7, 4, 7)
    calls.clear()
    (out / "test" / f"{RSNA_MONO1}.png").write_bytes(b"damaged")  # a changed file is written again
    second = cb.build(splits, sources, out)
    assert (second.written, second.kept, calls) == (1, 10, [f"{RSNA_MONO1}.png"])
    assert np.array_equal(pixels(out / "test" / f"{RSNA_MONO1}.png"), MONO1_SHOWN)
    assert cb.check(out).ok


def test_check_finds_changed_missing_and_extra_files(world, capsys):
    splits, sources, out = world
    cb.build(splits, sources, out)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["covidx", "check", "--data", str(out)])
    args.func(args)
    assert capsys.readouterr().out.startswith(f"OK: {out} holds the images its split files list (train 7, test 4)")

    changed = out / "train" / "COVID-00001.jpg"
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")  # same size, one byte different
    (out / "test" / "COVID-00024.png").unlink()
    image(out / "test" / "stray.png", 99)
    report = cb.check(out)
    assert (report.changed, report.missing, report.extra) == (
        ["train/COVID-00001.jpg"],
        ["test/COVID-00024.png"],
        ["test/stray.png"],
    )
    with pytest.raises(UserError, match=r"1 missing \(first: test/COVID-00024.png\); 1 extra .*; 1 changed"):
        args.func(args)


def test_the_command_line_builds_with_the_sources_given_as_name_equals_folder(world, capsys):
    splits, sources, out = world
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    argv = ["covidx", "build", "--train-split", str(splits["train"]), "--test-split", str(splits["test"])]
    argv += [a for name, folder in sources.items() for a in ("--source", f"{name}={folder}")]
    args = parser.parse_args([*argv, "--out", str(out), "--quiet", "--workers", "1"])
    args.func(args)
    assert capsys.readouterr().out.strip() == f"{out}: train 7, test 4 images (11 written, 0 already there)"
    with pytest.raises(UserError, match="write NAME=DIR"):
        parse_sources(["rsna"])
    with pytest.raises(UserError, match="given twice"):
        parse_sources(["rsna=a", "rsna=b"])


# ---------------------------------------------------------------------------- bad input


def test_a_dicom_that_cannot_be_decoded_stops_the_build_naming_it(world):
    splits, sources, out = world
    bad = sources["rsna"] / "stage_2_train_images" / f"{RSNA_PNEU}.dcm"
    bad.write_bytes(bad.read_bytes()[:-40])  # a truncated download: the pixel data cut short
    with pytest.raises(UserError, match=rf"DICOM file {bad} cannot be (read|decoded) .*download it again"):
        cb.build(splits, sources, out)
    assert not (out / "train" / f"{RSNA_PNEU}.png").exists() and not (out / "train_split.txt").exists()


@pytest.mark.parametrize(
    ("name", "spoil", "expected"),
    [
        ("cohen", lambda d: (d / "metadata.csv").unlink(), "has no metadata.csv, so it is not github.com/ieee8023"),
        ("actmed", lambda d: (d / "metadata.csv").write_text(FIG1_HEADER), "no column 'imagename'"),
        ("fig1", lambda d: (d / "images").rename(d / "img"), "has no images/ folder"),
        ("rsna", lambda d: (d / "stage_2_train_images").rename(d / "x"), "no stage_2_train_images/ folder"),
        ("sirm", lambda d: (d / "COVID-19").rename(d / "COVID"), "a later release whose files were renamed"),
    ],
)
def test_a_source_folder_in_another_layout_is_refused_in_one_line(world, name, spoil, expected):
    splits, sources, out = world
    spoil(sources[name])
    with pytest.raises(UserError, match=expected) as err:
        cb.build(splits, sources, out)
    assert "\n" not in str(err.value) and not out.exists()


def test_a_three_column_line_is_looked_for_in_every_source(world):
    splits, sources, out = world
    splits["test"].write_text("COVID-00024 COVID-00024.png COVID-19\n")  # the oldest form: no source column
    report = cb.build(splits, sources, out)
    assert report.counts == {"train": 7, "test": 1} and cb.read_manifest(out)[("test", "COVID-00024.png")][0] == "fig1"


def test_a_damaged_manifest_is_named(world):
    splits, sources, out = world
    cb.build(splits, sources, out)
    text = (out / cb.MANIFEST).read_text().splitlines()
    (out / cb.MANIFEST).write_text("\n".join([*text[:3], "trian,a.png,cohen,1,abc"]) + "\n")
    with pytest.raises(UserError, match=r"covidx-manifest.csv line 4 is damaged \(split 'trian'"):
        cb.check(out)


def test_other_bad_input_is_refused_before_anything_is_written(world):
    splits, sources, out = world
    with pytest.raises(UserError, match="unknown source; covidx build knows cohen, fig1"):
        cb.build(splits, {**sources, "ricord": sources["rsna"]}, out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files but no covidx-manifest.csv"):
        cb.build(splits, sources, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(UserError, match="has no covidx-manifest.csv"):
        cb.check(out)
