"""COVIDx split files, folders and image decoding."""

import numpy as np
import pytest
from conftest import TEST_ROWS, TRAIN_ROWS, make_image, write_covidx, write_image
from PIL import Image

from fedlib.data import (
    CLASSES,
    Layout,
    Record,
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
        ("\np1 a.png positive rsna\n", r"line 2: unknown label 'positive'"),
        ("p1 a.png normal\np2 b.png normal\np3 a.png normal\n", r"lines 1 and 3 both list 'a.png'"),
        ("\n  \n\n", r"has no records"),
    ],
    ids=["columns", "label", "binary-label", "duplicate", "empty"],
)
def test_parse_errors_name_file_and_line(tmp_path, text, match):
    path = write_split(tmp_path, text, name="bad_split.txt")

    with pytest.raises(UserError, match=match) as err:
        parse_split_file(path)

    assert "bad_split.txt" in str(err.value)


def test_parse_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.txt does not exist"):
        parse_split_file(tmp_path / "nope.txt")


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


def test_read_split_unknown_split(covidx_root):
    with pytest.raises(UserError, match=r"Unknown split 'val'"):
        read_split(covidx_root, "val")


def test_summarize_counts_classes_and_sources(covidx_root):
    summary = summarize(covidx_root)

    assert summary == {
        "train": {"pneumonia": 1, "normal": 2, "COVID-19": 2, "total": 5},
        "test": {"pneumonia": 1, "normal": 1, "COVID-19": 1, "total": 3},
        "sources": {
            "train": {"cohen": 2, "rsna": 2, "sirm": 1},
            "test": {"rsna": 2, "sirm": 1},
        },
    }


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


def test_load_truncated_jpeg_fails(tmp_path):
    path = tmp_path / "t.jpg"
    make_image("RGB", (200, 150), seed=1).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(UserError, match=r"t\.jpg cannot be decoded"):
        load_image(path)
