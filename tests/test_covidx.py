"""COVIDx split files, folders and image decoding."""

import io
import json
import os
import re
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_ROWS, TRAIN_ROWS, make_image, write_covidx, write_image
from PIL import Image, ImageFile

from fedlib.cli import _one_line_warning, main
from fedlib.data import (
    CLASSES,
    Layout,
    Record,
    RepeatedImageWarning,
    load_image,
    parse_split_file,
    patient_overlap,
    read_split,
    summarize,
)
from fedlib.errors import UserError


def write_split(tmp_path, text, name="split.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_classes_follow_the_authors_index_map():
    assert CLASSES.index("pneumonia") == 0
    assert CLASSES.index("normal") == 1
    assert CLASSES.index("COVID-19") == 2


# --- parse_split_file -------------------------------------------------------


def test_parse_four_columns(tmp_path):
    path = write_split(tmp_path, "p1 a.png normal rsna\np2 b.jpg COVID-19 cohen\np3 c.png pneumonia sirm\n")

    records = parse_split_file(path)

    assert records == [
        Record("p1", "a.png", 1, "rsna"),
        Record("p2", "b.jpg", 2, "cohen"),
        Record("p3", "c.png", 0, "sirm"),
    ]


def test_parse_three_columns_gives_unknown_source(tmp_path):
    path = write_split(tmp_path, "p1 a.png normal\np2 b.png pneumonia\n")

    records = parse_split_file(path)

    assert records == [Record("p1", "a.png", 1, "unknown"), Record("p2", "b.png", 0, "unknown")]


def test_parse_is_lenient_on_case_blank_lines_crlf_and_extra_columns(tmp_path):
    text = "\r\n  \np1 a.png covid-19 cohen extra 7\r\n\np2 b.png NORMAL rsna\np3 c.png Pneumonia\n\n"
    path = write_split(tmp_path, text)

    records = parse_split_file(path)

    assert [(r.filename, r.label, r.source) for r in records] == [
        ("a.png", 2, "cohen"),
        ("b.png", 1, "rsna"),
        ("c.png", 0, "unknown"),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("p1 a.png normal\np2 b.png\n", r"line 2: expected .* 2 column"),
        ("p1 a.png covid rsna\n", r"line 1: unknown label 'covid'; valid labels are pneumonia, normal, COVID-19"),
        (
            "\np1 a.png normal rsna\np2 b.png positive rsna\n",
            r"mixes the three-class labels \(line 2: 'p1 a\.png normal rsna'\) and the binary labels "
            r"\(line 3: 'p2 b\.png positive rsna'\); a split file uses one vocabulary",
        ),
        (
            "p1 a.png normal\np2 b.png normal\np3 a.png COVID-19\n",
            r"lines 1 and 3 both list 'a\.png', as normal and COVID-19; remove the line with the wrong label",
        ),
        (
            "p1 a.png normal\np1 a.png normal rsna\np1 a.png pneumonia rsna\n",
            r"lines 1 and 3 both list 'a\.png', as normal and pneumonia",
        ),
        (
            "p1 my scan.png normal rsna\n",
            r"line 1: the label 'normal' is column 4, not 3, so the file name seems to contain a space "
            r"\('my scan\.png'\); file names with spaces are not supported",
        ),
        ("p1 a.png normal\np2 ../b.png normal\n", r"line 2: file name '\.\./b\.png' points outside the image folder"),
        ("p1 /etc/passwd normal\n", r"line 1: file name '/etc/passwd' points outside the image folder"),
        ("p1 sub/../../b.png normal\n", r"line 1: file name 'sub/\.\./\.\./b\.png' points outside"),
        ("\n  \n\n", r"has no records"),
    ],
    ids=[
        "columns",
        "label",
        "binary-label",
        "conflicting-labels",
        "conflict-after-a-repeat",
        "space-in-name",
        "dot-dot",
        "absolute",
        "dot-dot-inside",
        "empty",
    ],
)
def test_parse_errors_name_file_and_line(tmp_path, text, match):
    path = write_split(tmp_path, text, name="bad_split.txt")

    with pytest.raises(UserError, match=match) as err:
        parse_split_file(path)

    assert "bad_split.txt" in str(err.value)


def test_an_image_repeated_with_its_label_is_kept_once_with_one_warning(tmp_path):
    # one line per annotation box, as the earliest COVIDx train split has for RSNA images
    text = (
        "p1 a.png pneumonia rsna\np2 b.png normal rsna\np1 a.png pneumonia rsna\n"
        "p1 a.png pneumonia rsna\np2 b.png normal rsna\np3 c.png COVID-19 cohen\n"
    )
    path = write_split(tmp_path, text)

    with pytest.warns(RepeatedImageWarning) as caught:
        records = parse_split_file(path)

    assert records == [
        Record("p1", "a.png", 0, "rsna"),
        Record("p2", "b.png", 1, "rsna"),
        Record("p3", "c.png", 2, "cohen"),
    ]
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{path}: 3 line(s) list an image already listed with the same label (2 image(s): 'a.png', 'b.png'); "
        "each image is used once, as its first line says."
    )


def test_a_repeat_with_another_patient_id_keeps_the_first_and_is_counted(tmp_path):
    path = write_split(tmp_path, "p1 a.png normal rsna\np9 a.png NORMAL rsna\np2 b.png normal\np2 b.png normal\n")

    with pytest.warns(RepeatedImageWarning, match=r"2 line\(s\) .*; 1 of them give another patient id;"):
        records = parse_split_file(path)

    assert records == [Record("p1", "a.png", 1, "rsna"), Record("p2", "b.png", 1, "unknown")]


def test_a_repeat_in_another_shape_keeps_the_first_line(tmp_path):
    path = write_split(tmp_path, "p1 a.png normal\np1 a.png normal rsna 7 extra\n")

    with pytest.warns(RepeatedImageWarning, match="1 line"):
        records = parse_split_file(path)

    assert records == [Record("p1", "a.png", 1, "unknown")]


def test_the_warning_names_the_first_five_repeated_images(tmp_path):
    names = [f"i{k}.png" for k in range(7)]
    path = write_split(tmp_path, "".join(f"p {n} normal\n" for n in names * 2))

    with pytest.warns(RepeatedImageWarning) as caught:
        parse_split_file(path)

    message = str(caught[0].message)
    assert "7 line(s)" in message and "(7 image(s): 'i0.png', 'i1.png', 'i2.png', 'i3.png', 'i4.png' ...)" in message


def test_no_warning_without_repeats(tmp_path):
    path = write_split(tmp_path, "p1 a.png normal\np1 b.png normal\n")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(parse_split_file(path)) == 2


def test_the_cli_shows_the_repeat_warning_as_one_line():
    out = io.StringIO()

    _one_line_warning(RepeatedImageWarning("x.txt: 2 line(s) list ..."), RepeatedImageWarning, "f.py", 1, file=out)

    assert out.getvalue() == "fedlib: warning: x.txt: 2 line(s) list ...\n"


def test_parse_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.txt does not exist"):
        parse_split_file(tmp_path / "nope.txt")


def test_an_unreadable_split_file_is_one_line(tmp_path, monkeypatch):
    # tests run as root, where chmod 000 does not stop reading: refuse the read itself
    path = write_split(tmp_path, "p1 a.png normal\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)

    with pytest.raises(
        UserError,
        match=r"Split file .*split\.txt cannot be read \(Permission denied\); "
        r"give this user read access to it\.",
    ):
        parse_split_file(path)


# --- read_split, summarize, patient_overlap ----------------------------------


def test_read_split_returns_records_and_image_folder(covidx_root):
    records, image_dir = read_split(covidx_root, "test")

    assert image_dir == covidx_root / "test"
    assert [r.filename for r in records] == [row[1] for row in TEST_ROWS]
    assert [r.label for r in records] == [1, 2, 0]


def test_read_split_with_a_custom_layout(tmp_path):
    root = tmp_path / "v3"
    (root / "imgs").mkdir(parents=True)
    write_image(root / "imgs" / "x.png")
    (root / "train_split_v3.txt").write_text("p1 x.png normal rsna\n")
    layout = Layout(train_split="train_split_v3.txt", train_dir="imgs")

    records, image_dir = read_split(root, "train", layout)

    assert image_dir == root / "imgs"
    assert records == [Record("p1", "x.png", 1, "rsna")]


def test_read_split_missing_root(tmp_path):
    with pytest.raises(UserError, match=r"Data root .*nowhere is not a folder"):
        read_split(tmp_path / "nowhere", "train")


def test_read_split_missing_split_file_names_the_layout_field(covidx_root):
    (covidx_root / "test_split.txt").unlink()

    with pytest.raises(UserError, match=r"test_split\.txt does not exist; set Layout\.test_split"):
        read_split(covidx_root, "test")


def test_read_split_missing_image_folder_names_the_layout_field(covidx_root):
    layout = Layout(train_dir="images")

    with pytest.raises(UserError, match=r"Image folder .*images does not exist; set Layout\.train_dir"):
        read_split(covidx_root, "train", layout)


def test_read_split_missing_images_are_counted(covidx_root):
    (covidx_root / "train" / "b.png").unlink()
    (covidx_root / "train" / "e.png").unlink()

    with pytest.raises(UserError, match=r"2 of 5 images listed in .*train_split\.txt are missing .*'b\.png'"):
        read_split(covidx_root, "train")


def test_an_unlistable_image_folder_is_one_line(covidx_root, monkeypatch):
    scandir = os.scandir

    def refuse(path):
        if Path(path) == covidx_root / "train":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)

    with pytest.raises(
        UserError,
        match=r"Image folder .*train cannot be listed \(Permission denied\); give this "
        r"user read access to it\.",
    ):
        read_split(covidx_root, "train")


def test_a_link_inside_the_data_root_is_followed(covidx_root):
    (covidx_root / "train" / "b.png").unlink()
    (covidx_root / "train" / "b.png").symlink_to(Path("..") / "test" / "f.png")  # relative, into the other split
    (covidx_root / "train" / "sub").symlink_to(covidx_root / "test", target_is_directory=True)
    split = covidx_root / "train_split.txt"
    split.write_text(split.read_text() + "p9 sub/g.png COVID-19 sirm\n")

    records, image_dir = read_split(covidx_root, "train")

    assert [r.filename for r in records][-1] == "sub/g.png"
    assert load_image(image_dir / "b.png").size == (40, 30)


def test_an_image_folder_linked_from_elsewhere_is_followed(covidx_root, tmp_path):
    (covidx_root / "train").rename(tmp_path / "elsewhere")
    (covidx_root / "train").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    records, _ = read_split(covidx_root, "train")

    assert len(records) == len(TRAIN_ROWS)


@pytest.mark.parametrize("linked", ["file", "folder"])
def test_a_link_out_of_the_data_root_is_refused(covidx_root, tmp_path, linked):
    outside = write_image(tmp_path / "outside" / "secret.png")
    if linked == "file":
        (covidx_root / "train" / "d.png").unlink()
        (covidx_root / "train" / "d.png").symlink_to(outside)
        name, line = "d.png", 4
    else:
        (covidx_root / "train" / "sub").symlink_to(outside.parent, target_is_directory=True)
        split = covidx_root / "train_split.txt"
        split.write_text(split.read_text() + "p9 sub/secret.png normal rsna\n")
        name, line = "sub/secret.png", 6

    with pytest.raises(UserError) as err:
        read_split(covidx_root, "train")

    assert str(err.value) == (
        f"{covidx_root / 'train_split.txt'} line {line}: {name!r} is a link to {outside}, outside the data root "
        f"{covidx_root}; copy the image into {covidx_root / 'train'} or link the whole image folder instead."
    )


def test_read_split_unknown_split(covidx_root):
    with pytest.raises(UserError, match=r"Unknown split 'dev'"):
        read_split(covidx_root, "dev")
    with pytest.raises(UserError, match=r"No validation split is named; set Layout.val_split \(CLI --val-split\)"):
        read_split(covidx_root, "val")


def test_summarize_counts_classes_and_sources(covidx_root):
    summary = summarize(covidx_root)

    assert summary == {
        "task": "three-class",
        "train": {"pneumonia": 1, "normal": 2, "COVID-19": 2, "total": 5},
        "test": {"pneumonia": 1, "normal": 1, "COVID-19": 1, "total": 3},
        "sources": {
            "train": {"cohen": 2, "rsna": 2, "sirm": 1},
            "test": {"rsna": 2, "sirm": 1},
        },
        "repeated": {
            "train": {"lines": 0, "images": 0, "other_patient_id": 0, "first": []},
            "test": {"lines": 0, "images": 0, "other_patient_id": 0, "first": []},
        },
    }


def test_summarize_counts_images_once_and_reports_repeats(covidx_root):
    split = covidx_root / "train_split.txt"
    split.write_text(split.read_text() + "p1 a.png pneumonia cohen\np7 a.png pneumonia cohen\n")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summarize reports, it does not warn
        summary = summarize(covidx_root)

    assert summary["train"]["total"] == 5 and summary["train"]["pneumonia"] == 1
    assert summary["repeated"]["train"] == {"lines": 2, "images": 1, "other_patient_id": 1, "first": ["a.png"]}
    assert summary["repeated"]["test"]["lines"] == 0


def test_data_summary_reports_repeats_on_stderr_and_in_json(covidx_root, capsys):
    split = covidx_root / "test_split.txt"
    split.write_text(split.read_text() + "p6 f.png normal rsna\n")

    assert main(["data-summary", "--data", str(covidx_root), "--json"]) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["repeated"]["test"] == {
        "lines": 1,
        "images": 1,
        "other_patient_id": 0,
        "first": ["f.png"],
    }
    assert (
        "warning: 1 line(s) of the test split repeat an image listed before with the same label "
        "(1 image(s): f.png); each image is counted once\n"
    ) in captured.err
    assert "train split" not in captured.err


def test_summarize_needs_only_split_files(tmp_path):
    root = write_covidx(tmp_path / "c", [("p1", "a.png", "normal")], [("p2", "b.png", "COVID-19")], images=False)

    summary = summarize(root)

    assert summary["train"]["normal"] == 1 and summary["test"]["COVID-19"] == 1
    assert summary["sources"] == {"train": {"unknown": 1}, "test": {"unknown": 1}}


def test_patient_overlap_finds_the_planted_leak(covidx_root):
    assert patient_overlap(covidx_root) == ["p3"]


def test_patient_overlap_empty_when_disjoint(tmp_path):
    root = write_covidx(tmp_path / "c", TRAIN_ROWS[:2], TEST_ROWS[:1], images=False)

    assert patient_overlap(root) == []


# --- load_image ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png"), ("1", ".png")],
)
def test_load_lossless_modes_keep_their_pixels(tmp_path, mode, suffix):
    source = make_image(mode, (40, 30), seed=3)
    path = tmp_path / f"img{suffix}"
    source.save(path)
    # what the pixels are once alpha is dropped and gray is replicated
    expected = np.asarray(source.convert("RGB"))

    img = load_image(path)

    assert img.mode == "RGB" and img.size == (40, 30)
    np.testing.assert_array_equal(np.asarray(img), expected)
    if mode in ("L", "LA", "P", "1"):
        pixels = np.asarray(img)
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_load_rgba_drops_alpha_without_compositing(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(path)

    pixels = np.asarray(load_image(path))

    assert (pixels == [10, 20, 30]).all()


def test_load_16_bit_png_stretches_its_own_range(tmp_path):
    path = tmp_path / "g16.png"
    row = np.array([1000, 2000, 3000, 4000], dtype=np.uint16)
    Image.fromarray(np.stack([row, row[::-1]])).save(path)
    assert Image.open(path).mode == "I;16"

    pixels = np.asarray(load_image(path))

    assert pixels.shape == (2, 4, 3)
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 85, 170, 255])
    np.testing.assert_array_equal(pixels[1, :, 2], [255, 170, 85, 0])


def test_load_constant_16_bit_png_is_black(tmp_path):
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((3, 4), 30000, dtype=np.uint16)).save(path)

    assert (np.asarray(load_image(path)) == 0).all()


def test_load_32_bit_integer_image(tmp_path):
    path = tmp_path / "g32.tif"
    Image.fromarray(np.array([[-300000, 0, 300000, 600000]], dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I"

    pixels = np.asarray(load_image(path))

    np.testing.assert_array_equal(pixels[0, :, 1], [0, 85, 170, 255])


def test_load_cmyk_jpeg(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (40, 30), (0, 0, 0, 0)).save(path)  # no ink: white
    assert Image.open(path).mode == "CMYK"

    img = load_image(path)

    assert img.mode == "RGB" and img.size == (40, 30)
    assert np.asarray(img).min() >= 250


def test_load_grayscale_jpeg(tmp_path):
    path = tmp_path / "g.jpg"
    Image.new("L", (40, 30), 77).save(path)
    assert Image.open(path).mode == "L"

    pixels = np.asarray(load_image(path)).astype(int)

    assert pixels.shape == (30, 40, 3)
    assert np.abs(pixels - 77).max() <= 1


def write_truncated(path, seed=0):
    make_image("L", (200, 150), seed).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make_file", "match"),
    [
        (lambda p: None, r"x\.png does not exist"),
        (lambda p: p.write_bytes(b""), r"x\.png is empty \(0 bytes\)"),
        (lambda p: p.write_text("not an image, despite the name"), r"x\.png cannot be decoded"),
        (write_truncated, r"x\.png cannot be decoded"),
    ],
    ids=["missing", "zero-byte", "not-an-image", "truncated-png"],
)
def test_load_bad_files_name_the_file(tmp_path, make_file, match):
    path = tmp_path / "x.png"
    make_file(path)

    with pytest.raises(UserError, match=match):
        load_image(path)


def write_png_header(path, width, height):
    """A PNG that claims width x height 8-bit gray pixels but holds a few bytes of data: a memory bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def write_thin_strip(path):
    """A real 1 x 300000 PNG: a few hundred bytes that a resize to 256 px would blow up to 77 GB."""
    Image.new("L", (1, 300_000)).save(path)
    return path


@pytest.mark.parametrize(
    ("make_file", "match"),
    [
        (
            write_thin_strip,
            r"claims 1 x 300000 pixels, beyond what a radiograph can be \(at most 50 megapixels and "
            r"a side ratio of 8:1\); replace the file or remove its line from the split file\.",
        ),
        (lambda p: write_png_header(p, 8000, 8000), r"claims 8000 x 8000 pixels"),
        (lambda p: write_png_header(p, 100_000, 50), r"claims 100000 x 50 pixels"),
        (lambda p: write_png_header(p, 20_000, 20_000), r"claims 400000000 pixels, beyond"),  # PIL's guard
        (lambda p: Image.new("L", (9, 1)).save(p), r"claims 9 x 1 pixels"),
    ],
    ids=["thin-strip", "64-megapixels", "wide-strip", "400-megapixels", "9-to-1"],
)
def test_images_beyond_a_radiograph_are_refused_before_decoding(tmp_path, monkeypatch, make_file, match):
    path = tmp_path / "x.png"
    make_file(path)
    assert path.stat().st_size < 2000  # a few bytes on disk, gigabytes once decoded and resized

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(UserError, match=match) as err:
        load_image(path)

    assert time.perf_counter() - start < 1.0
    assert str(err.value).startswith(f"Image file {path} ")


def test_the_size_bounds_are_inclusive(tmp_path):
    Image.new("L", (8, 1)).save(tmp_path / "strip.png")

    assert load_image(tmp_path / "strip.png").size == (8, 1)


def test_an_unreadable_image_is_one_line(tmp_path, monkeypatch):
    path = write_image(tmp_path / "x.png")

    def refuse(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", refuse)

    with pytest.raises(UserError, match=r"x\.png cannot be read \(Permission denied\); give this user read access"):
        load_image(path)


def test_load_truncated_jpeg_fails(tmp_path):
    path = tmp_path / "t.jpg"
    make_image("RGB", (200, 150), seed=1).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(UserError, match=r"t\.jpg cannot be decoded"):
        load_image(path)


# ---------------------------------------------------------------- image content, names (issue 26)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_image_with_a_non_finite_pixel_is_an_error_naming_the_file(tmp_path, bad):
    """It was cached as black and trained on."""
    pixels = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
    pixels[3, 4] = bad
    path = tmp_path / "f.tiff"
    Image.fromarray(pixels, mode="F").save(path)

    with pytest.raises(UserError, match=r"f\.tiff has 1 pixel\(s\) that are not finite numbers"):
        load_image(path)


@pytest.mark.parametrize("other", ["./a.png", "a.png", ".//a.png"])
def test_split_file_names_are_compared_after_normalising(tmp_path, other):
    path = write_split(tmp_path, f"p1 a.png normal\np2 {other} pneumonia\n")

    with pytest.raises(UserError, match=rf"lines 1 and 2 both list '{re.escape(other)}'"):
        parse_split_file(path)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_folder_or_fifo_where_an_image_should_be_is_named_as_such(tmp_path, kind):
    """It was reported as "does not exist"."""
    path = tmp_path / "a.png"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    words = "is a folder, not a file" if kind == "folder" else "is not a regular file (a FIFO, a device, ...)"
    with pytest.raises(UserError, match=re.escape(f"Image file {path} {words}")):
        load_image(path)
