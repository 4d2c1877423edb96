"""COVIDx as users download it today (issue 23): binary releases, Kaggle's file names, the
published validation split, and the one-channel cache, on tiny fabricated folders."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from binary_data import write_kaggle
from conftest import write_covidx

from fedlib import config
from fedlib.cli import main
from fedlib.data.covidx import BINARY_CLASSES, CLASSES, Layout, parse_split_file, read_split, summarize
from fedlib.data.identity import fingerprint
from fedlib.data.releases import KNOWN_RELEASES, detect_layout, known_release
from fedlib.data.resolve import LayoutNotice, check_splits, data_layout, load_dataset
from fedlib.errors import UserError

KAGGLE = {"train_split": "train.txt", "test_split": "test.txt"}


@pytest.fixture
def kaggle(tmp_path) -> Path:
    """COVIDx CXR-4's layout: train.txt val.txt test.txt beside train/ val/ test/, binary labels."""
    return write_kaggle(tmp_path / "cxr4")


def three_class(root: Path) -> Path:
    rows = [(f"p{i}", f"a{i}.png", CLASSES[i % 3], "rsna") for i in range(6)]
    return write_covidx(root, rows, [(f"q{i}", f"b{i}.png", CLASSES[i % 3], "rsna") for i in range(3)])


# ---------------------------------------------------------------- the task, from the labels


def test_a_binary_split_file_gives_the_binary_task(kaggle):
    records = parse_split_file(kaggle / "train.txt")

    assert {r.task for r in records} == {"binary"}
    assert [BINARY_CLASSES[r.label] for r in records[:4]] == ["negative", "positive", "negative", "positive"]


def test_labels_of_any_case_and_the_binary_class_order(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("p1 a.png POSITIVE x\np2 b.png Negative x\n")

    assert [(r.label, r.task) for r in parse_split_file(path)] == [(1, "binary"), (0, "binary")]


def test_task_binary_maps_pneumonia_and_normal_to_negative(tmp_path):
    root = three_class(tmp_path / "v")

    records, _ = read_split(root, "train", Layout(task="binary"))
    summary = summarize(root, Layout(task="binary"))

    # CLASSES[i % 3]: pneumonia, normal, COVID-19, ... -> negative, negative, positive, ...
    assert [r.label for r in records] == [0, 0, 1, 0, 0, 1]
    assert summary["task"] == "binary"
    assert summary["train"] == {"negative": 4, "positive": 2, "total": 6}
    assert summarize(root)["train"] == {"pneumonia": 2, "normal": 2, "COVID-19": 2, "total": 6}


def test_task_three_class_on_a_binary_folder_is_an_error(kaggle):
    with pytest.raises(UserError, match=r"train\.txt has binary labels \(positive/negative\).*drop --task three-class"):
        read_split(kaggle, "train", Layout(**KAGGLE, task="three-class"))


def test_split_files_of_two_vocabularies_are_an_error_naming_both(tmp_path):
    root = three_class(tmp_path / "v")
    (root / "test_split.txt").write_text("q0 b0.png negative rsna\n")

    with pytest.raises(UserError, match=r"train_split\.txt has three-class labels but .*test_split\.txt has binary"):
        check_splits(root, Layout())
    assert check_splits(root, Layout(task="binary")) == "binary"  # one vocabulary once mapped


@pytest.mark.parametrize("bad", ["two-class", "Binary"])
def test_an_unknown_task_is_an_error(tmp_path, bad):
    with pytest.raises(UserError, match=rf"unknown task '{bad}' \(--task\); choose one of auto, binary, three-class"):
        config.resolve("smoke", None, task=bad)


def test_the_fingerprint_names_the_binary_task_and_nothing_else(tmp_path, kaggle):
    root = three_class(tmp_path / "v")

    assert fingerprint(root, Layout(task="three-class")) == fingerprint(root, Layout())
    assert fingerprint(root, Layout(task="binary")) != fingerprint(root, Layout())
    assert fingerprint(kaggle, Layout(**KAGGLE, task="binary")) == fingerprint(kaggle, Layout(**KAGGLE))
    with_val = fingerprint(kaggle, Layout(**KAGGLE, val_split="val.txt"))
    assert with_val != fingerprint(kaggle, Layout(**KAGGLE))


# ---------------------------------------------------------------- layouts as published


def test_kaggles_file_names_are_used_when_the_default_ones_are_absent(kaggle):
    layout, note = detect_layout(kaggle, Layout())

    assert (layout.train_split, layout.test_split) == ("train.txt", "test.txt")
    assert "has no train_split.txt/test_split.txt; using the names of Kaggle's COVIDx releases" in note
    assert "--val-split val.txt uses it" in note
    assert detect_layout(kaggle, Layout(**KAGGLE)) == (Layout(**KAGGLE), "")  # named: nothing to say
    (kaggle / "train_split.txt").write_text((kaggle / "train.txt").read_text())
    assert detect_layout(kaggle, Layout())[0].train_split == "train_split.txt"  # the default wins


def test_a_cxr2_folder_loads_without_flags(tmp_path):
    root = write_kaggle(tmp_path / "cxr2", val=False)
    cfg = config.resolve("smoke", None, data=str(root), image_size=32)

    with pytest.warns(LayoutNotice, match="using the names of Kaggle's COVIDx releases, train.txt/test.txt$"):
        data = load_dataset(cfg, progress=False)

    assert data.classes == BINARY_CLASSES and data.task == "binary"
    assert data.train_images.shape == (30, 37, 37, 1) and data.val_images is None
    assert data.description == "COVIDx, binary (30 train / 12 test images)"


def test_data_summary_of_a_kaggle_folder(kaggle, capsys):
    assert main(["data-summary", "--data", str(kaggle), "--val-split", "val.txt"]) == 0
    out, err = capsys.readouterr()

    assert "using the names of Kaggle's COVIDx releases" in err and "val.txt is there too" not in err
    lines = out.splitlines()
    assert lines[0].split() == ["split", "negative", "positive", "total"]
    assert [line.split() for line in lines[1:4]] == [
        ["train", "15", "15", "30"],
        ["val", "4", "4", "8"],
        ["test", "6", "6", "12"],
    ]
    assert "task: binary" in lines and not any(line.startswith("release:") for line in lines)


def _split_lines(counts: dict) -> str:
    rows = [(f"p{label}{i}", f"{label}{i}.png", label) for label, n in counts.items() for i in range(n)]
    return "".join(f"{p} {f} {label} src\n" for p, f, label in rows)


def test_data_summary_names_a_release_whose_counts_match(tmp_path, capsys):
    release = next(r for r in KNOWN_RELEASES if r.name.startswith("COVIDx9B"))
    root = tmp_path / "v9b"
    root.mkdir()
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text(_split_lines(release.counts[split]))

    assert main(["data-summary", "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["release"] == release.name
    lines = (root / "test.txt").read_text().splitlines()
    (root / "test.txt").write_text("\n".join(lines[1:]) + "\n")  # one image short: no longer that release
    assert known_release(summarize(root, Layout(**KAGGLE))) is None


def test_a_release_known_by_its_total_only():
    cxr4 = next(r for r in KNOWN_RELEASES if r.name == "COVIDx CXR-4")
    summary = {
        "train": {"negative": 1, "positive": 67862, "total": 67863},
        "val": {"negative": 8000, "positive": 473, "total": 8473},
        "test": {"negative": 8000, "positive": 482, "total": 8482},
    }
    assert known_release(summary) is cxr4
    summary["test"]["total"] -= 1
    assert known_release(summary) is None


# ---------------------------------------------------------------- the official validation split


def test_val_split_and_val_fraction_given_together_are_one_error(kaggle, capsys):
    code = main(["train", "--profile", "smoke", "--data", str(kaggle), "--val-split", "val.txt",
                 "--val-fraction", "0.2", "--out", str(kaggle.parent / "r")])  # fmt: skip

    assert code == 2
    err = capsys.readouterr().err
    assert "--val-split val.txt and --val-fraction 0.2 both choose validation images; give one of them" in err
    assert not (kaggle.parent / "r").exists()
    with pytest.raises(UserError, match="both choose validation images"):  # a config file can say both, too
        config.resolve("smoke", None, data=str(kaggle), val_split="val.txt", val_fraction=0.2)


def test_val_split_needs_a_covidx_folder():
    with pytest.raises(UserError, match="--val-split names a split file of a COVIDx folder, and the synthetic set"):
        config.resolve("smoke", None, val_split="val.txt", val_fraction=0.0)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("tr3 tr3.png positive bimcv", r"val\.txt line 9: image 'tr3\.png' is also in the train split"),
        ("te0 other.png negative rsna", r"val\.txt line 9: patient 'te0' is also in the test split"),
    ],
    ids=["same-file", "same-patient"],
)
def test_a_val_split_sharing_an_image_or_patient_is_an_error(kaggle, line, match):
    val = kaggle / "val.txt"
    val.write_text(val.read_text() + line + "\n")
    name = line.split()[1]
    (kaggle / "val" / name).write_bytes((kaggle / "train" / "tr3.png").read_bytes())
    cfg = config.resolve("smoke", None, data=str(kaggle), val_split="val.txt", val_fraction=0.0)

    with pytest.raises(UserError, match=match + r" \(.*\); a validation split must share no image or patient"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LayoutNotice)
            check_splits(kaggle, data_layout(cfg))


def test_a_missing_val_split_file_names_the_flag(kaggle):
    with pytest.raises(
        UserError,
        match=r"Split file .*valid\.txt does not exist; set Layout\.val_split \(CLI --val-split\) .* e\.g\. val\.txt",
    ):
        check_splits(kaggle, Layout(**KAGGLE, val_split="valid.txt"))


def test_a_missing_val_folder_names_the_flag(kaggle):
    (kaggle / "val").rename(kaggle / "validation")

    with pytest.raises(UserError, match=r"val does not exist; set Layout\.val_dir \(CLI --val-dir\)"):
        check_splits(kaggle, Layout(**KAGGLE, val_split="val.txt"))
    assert check_splits(kaggle, Layout(**KAGGLE, val_split="val.txt", val_dir="validation")) == "binary"


# ---------------------------------------------------------------- training on a binary folder


def test_a_binary_kaggle_folder_trains_with_its_validation_split(kaggle, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--profile", "smoke", "--data", str(kaggle), "--val-split", "val.txt",
                 "--class-weight", "balanced", "--out", str(out), "--quiet"])  # fmt: skip

    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert final["classes"] == ["negative", "positive"]
    assert final["num_val"] == 8 and final["num_train"] == 30 and final["num_test"] == 12
    assert np.asarray(final["val"]["confusion"]).shape == (2, 2) and np.sum(final["val"]["confusion"]) == 8
    assert np.asarray(final["test"]["confusion"]).shape == (2, 2) and np.sum(final["test"]["confusion"]) == 12
    assert "sensitivity_positive" in final["test"] and "sensitivity_covid19" not in final["test"]
    assert (saved["task"], saved["val_split"], saved["val_fraction"]) == ("binary", "val.txt", 0.0)
    assert saved["data_fingerprint"] == fingerprint(kaggle, Layout(**KAGGLE, val_split="val.txt"))
    history = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_accuracy", "val_sensitivity_positive", "test_sensitivity_negative"} <= set(history)


# ---------------------------------------------------------------- the one-channel cache


@pytest.mark.parametrize("batched", [False, True], ids=["per-image", "batched"])
def test_a_one_channel_batch_gives_the_model_what_three_equal_channels_gave(batched):
    import torch

    from fedlib.data.transforms import augment_batch, eval_batch

    grey = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 37, 37, 1), dtype=np.uint8))
    three = grey.expand(-1, -1, -1, 3).contiguous()  # what the cache held before

    one_view = augment_batch(grey, 32, torch.Generator().manual_seed(5), batched=batched)
    three_view = augment_batch(three, 32, torch.Generator().manual_seed(5), batched=batched)

    assert one_view.shape == (4, 3, 32, 32)
    assert torch.equal(one_view, three_view)
    assert torch.equal(eval_batch(grey, 32), eval_batch(three, 32))


def test_a_run_written_before_the_task_existed_is_still_reused(tmp_path):
    from fedlib.run import folder

    cfg = config.resolve("smoke", None, data_dir=str(tmp_path / "data"))
    wanted = folder.wanted_config(cfg, folder.data_set(cfg, progress=False))
    older = {k: v for k, v in wanted.items() if k not in ("task", "val_split", "val_dir")}

    assert wanted["task"] == "three-class"
    assert folder.config_differences(older, wanted) == []
    assert folder.config_differences({**older, "task": "binary"}, wanted) == ["task"]
