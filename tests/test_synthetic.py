"""Synthetic COVIDx folders: format, determinism, masks, class mix, refusals."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedlib.cli import main
from fedlib.data.synthetic import (
    LABELS,
    SynthConfig,
    is_synthetic,
    load_mask,
    mask_path,
    render,
    source_class_shares,
    write_synthetic,
)
from fedlib.errors import UserError

TINY = SynthConfig(n_train=12, n_test=6, size=64, seed=3, sources=3)


def rows(root: Path, split: str) -> list[list[str]]:
    return [line.split(" ") for line in (root / f"{split}_split.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "covidx"
    write_synthetic(root, TINY, progress=False)
    return root


def test_split_files_have_four_columns_and_the_asked_counts(tiny):
    train, test = rows(tiny, "train"), rows(tiny, "test")

    assert len(train) == 12 and len(test) == 6
    assert all(len(r) == 4 for r in train + test)
    assert {r[2] for r in train + test} <= set(LABELS)
    assert {r[3] for r in train + test} <= {"site-a", "site-b", "site-c"}
    patients = [r[0] for r in train + test]
    assert len(set(patients)) == len(patients)  # unique per image, so never shared across splits
    assert is_synthetic(tiny)
    assert json.loads((tiny / "synthetic.json").read_text())["config"]["seed"] == 3


def test_images_and_masks_are_8bit_grayscale_of_the_asked_size(tiny):
    name = rows(tiny, "train")[0][1]

    img = Image.open(tiny / "train" / name)
    mask = Image.open(mask_path(tiny, "train", name))

    assert img.mode == "L" and img.size == (64, 64)
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}


def test_masks_are_empty_exactly_for_normal_images(tiny):
    for split in ("train", "test"):
        for _, name, label, _ in rows(tiny, split):
            assert load_mask(tiny, split, name).any() == (label != "normal"), (split, name, label)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    cfg = SynthConfig(n_train=4, n_test=2, size=48, seed=5, sources=2)
    write_synthetic(tmp_path / "a", cfg, progress=False)
    write_synthetic(tmp_path / "b", cfg, progress=False)
    write_synthetic(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 6}), progress=False)

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(tmp_path / "a") == files(tmp_path / "b")
    a, c = files(tmp_path / "a"), files(tmp_path / "c")
    assert a.keys() == c.keys()
    assert (
        a[Path("train") / rows(tmp_path / "a", "train")[0][1]] != c[Path("train") / rows(tmp_path / "c", "train")[0][1]]
    )


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path):
    cfg = SynthConfig(n_train=60, n_test=4, size=32, seed=1, sources=2)  # 64 images: the pool threshold
    write_synthetic(tmp_path / "one", cfg, progress=False, workers=1)
    write_synthetic(tmp_path / "two", cfg, progress=False, workers=2)

    for p in (tmp_path / "one").rglob("*.png"):
        assert p.read_bytes() == (tmp_path / "two" / p.relative_to(tmp_path / "one")).read_bytes()


@pytest.mark.parametrize("label", LABELS)
def test_lesions_lie_inside_the_body_and_in_the_lower_two_thirds_for_covid(label):
    rng = np.random.default_rng(0)
    for k in range(6):
        img, mask = render(label, k % 2, rng, 96, 2)

        assert img.dtype == np.uint8 and img.shape == (96, 96) and mask.shape == (96, 96)
        if label == "normal":
            assert not mask.any()
            continue
        # Lungs are dark but the body is not background: lesion pixels sit well above black.
        assert np.median(img[mask]) > 40
        # The left and right 8% of the image are outside the lungs.
        assert not mask[:, :8].any() and not mask[:, -8:].any()
        if label == "COVID-19":
            rows_, cols = np.nonzero(mask)
            assert rows_.mean() > 96 / 3  # lower zones
            assert (cols < 48).any() and (cols >= 48).any()  # bilateral


def test_lesion_pixels_are_brighter_than_the_same_anatomy_without_them():
    # Same generator state up to the lesions, so anatomy matches until then.
    img_n, _ = render("normal", 0, np.random.default_rng(9), 96, 1)
    img_p, mask = render("pneumonia", 0, np.random.default_rng(9), 96, 1)

    assert img_p[mask].astype(int).mean() > img_n[mask].astype(int).mean() + 5


def test_covidx_mix_makes_covid_a_minority(tmp_path):
    cfg = SynthConfig(n_train=100, n_test=2, size=32, sources=2, class_mix="covidx")
    summary = write_synthetic(tmp_path / "d", cfg, progress=False)

    counts = Counter(r[2] for r in rows(tmp_path / "d", "train"))
    assert counts == Counter(summary["counts"]["train"]) - Counter()
    assert counts["COVID-19"] < 0.1 * 100 < counts["pneumonia"] < counts["normal"]


def test_sources_differ_in_class_mix(tiny):
    shares = source_class_shares(TINY)

    mixes = shares / shares.sum(axis=1, keepdims=True)
    assert np.allclose(shares.sum(axis=0), 1 / 3)  # each class keeps its overall share
    assert np.ptp(mixes, axis=0).max() > 0.1  # but sources lean different ways
    by_source = {r[3]: Counter() for r in rows(tiny, "train")}
    for r in rows(tiny, "train"):
        by_source[r[3]][r[2]] += 1
    assert len({tuple(sorted(c.items())) for c in by_source.values()}) > 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_train", 0),
        ("n_test", 0),
        ("size", 16),
        ("sources", 0),
        ("class_mix", "skewed"),
        ("n_train", 300_001),
        ("n_test", True),
        ("size", 2049),
        ("size", 64.0),
        ("sources", 512),
    ],
)
def test_bad_arguments_raise_user_error_naming_the_parameter(tmp_path, field, value):
    cfg = SynthConfig(**{**TINY.__dict__, field: value})

    with pytest.raises(UserError, match=field):
        write_synthetic(tmp_path / "x", cfg, progress=False)

    assert not (tmp_path / "x").exists()


def test_the_bounds_are_in_the_message_and_inclusive(tmp_path):
    with pytest.raises(UserError) as err:
        write_synthetic(tmp_path / "x", SynthConfig(**{**TINY.__dict__, "size": 4096}), progress=False)

    assert str(err.value) == (
        "size must be an integer from 32 to 2048 (got 4096); lungs vanish below 32 px, "
        "and 2048 is a real detector's resolution."
    )
    write_synthetic(tmp_path / "y", SynthConfig(n_train=1, n_test=1, size=32, sources=511), progress=False)
    assert len(rows(tmp_path / "y", "train")) == 1


def test_synth_cli_refuses_a_huge_size_in_one_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--size", "100000", "--quiet"]) == 2

    err = capsys.readouterr().err
    assert (
        err == "fedlib: error: size must be an integer from 32 to 2048 (got 100000); lungs vanish below 32 px, "
        "and 2048 is a real detector's resolution.\n"
    )
    assert not (tmp_path / "s").exists()


def test_existing_folder_is_refused_and_left_untouched_without_overwrite(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    with pytest.raises(UserError, match="overwrite"):
        write_synthetic(out, TINY, progress=False)

    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary sibling left behind


def test_overwrite_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "taken"
    write_synthetic(out, TINY, progress=False)
    (out / "keep.txt").write_text("old")

    write_synthetic(out, TINY, progress=False, overwrite=True)

    assert not (out / "keep.txt").exists() and is_synthetic(out)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_overwrite_refuses_a_folder_synth_did_not_write_and_leaves_it_untouched(tmp_path, capsys):
    """Issue 26: ``synth --overwrite`` on someone's folder deleted its files (exit 0)."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    assert main(["synth", "--out", str(out), "--overwrite", "--n-train", "6", "--n-test", "3", "--quiet"]) == 2

    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("fedlib: error: --overwrite replaces only folders written by fedlib synth") and "\n" not in err
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_a_failing_run_leaves_no_folder(tmp_path, monkeypatch):
    import fedlib.data.synthetic as synthetic

    def boom(job):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_one", boom)

    with pytest.raises(RuntimeError):
        write_synthetic(tmp_path / "out", TINY, progress=False)

    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """PIL's write errors name no file: the line names the folder being written."""
    import errno
    import os

    import fedlib.data.synthetic as synthetic

    def full(job):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(synthetic, "_write_one", full)
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--n-train", "6", "--n-test", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot read or write {out} (No space left on device)" in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_train_never_replaces_a_folder_of_other_files_where_the_synthetic_set_goes(tmp_path, capsys):
    from fedlib.config import resolve
    from fedlib.data.resolve import synthetic_root

    root = synthetic_root(resolve("smoke", data_dir=str(tmp_path / "data")))
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    (tmp_path / "c.yaml").write_text(f"data_dir: {tmp_path / 'data'}\n")

    argv = ["train", "--profile", "smoke", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{root} is where the synthetic data set goes, but it holds other files" in err and "\n" not in err
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
