"""The bad-input catalogue (README, "When the input is wrong"): each bad input gives one
line naming the culprit, exit code 2, and leaves an earlier run untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_covidx

from fedlib.cli import main
from fedlib.data.covidx import MAX_SPLIT_BYTES
from fedlib.run import io

TRAIN = [(f"p{i}", f"tr{i}.png", ("normal", "pneumonia", "COVID-19")[i % 3], f"site-{i % 2}") for i in range(9)]
TEST = [(f"q{i}", f"te{i}.png", ("normal", "pneumonia", "COVID-19")[i % 3], "site-0") for i in range(6)]


def _line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number] = text
    path.write_text("\n".join(lines) + "\n")


def _config(tmp: Path, text: str) -> str:
    (tmp / "bad.yaml").write_text(text)
    return str(tmp / "bad.yaml")


def _file_as_folder(tmp: Path) -> list[str]:
    (tmp / "a-file").write_text("x")
    return ["--out", str(tmp / "a-file" / "run")]


# name: (what to break in the data root (root, tmp) -> extra CLI args, words the error must contain)
CATALOGUE = {
    "missing data root": (lambda root, tmp: ["--data", str(tmp / "nowhere")], "does not exist"),
    "missing split file": (lambda root, tmp: (root / "train_split.txt").unlink(), "train_split.txt"),
    "missing image folder": (lambda root, tmp: shutil.rmtree(root / "test"), "Image folder"),
    "missing image": (lambda root, tmp: (root / "train" / "tr3.png").unlink(), "'tr3.png'"),
    "truncated PNG": (
        lambda root, tmp: (root / "train" / "tr2.png").write_bytes((root / "train" / "tr2.png").read_bytes()[:60]),
        "tr2.png cannot be decoded",
    ),
    "zero-byte file": (lambda root, tmp: (root / "train" / "tr1.png").write_bytes(b""), "tr1.png is empty"),
    "non-image file with an image name": (
        lambda root, tmp: (root / "test" / "te0.png").write_text("patient notes, not an image\n"),
        "te0.png cannot be decoded",
    ),
    "unknown label": (
        lambda root, tmp: _line(root / "train_split.txt", 4, "p4 tr4.png covid site-0"),
        "line 5: unknown label 'covid'",
    ),
    "malformed split line": (lambda root, tmp: _line(root / "test_split.txt", 1, "q1 te1.png"), "line 2: expected"),
    "same image twice": (
        lambda root, tmp: _line(root / "train_split.txt", 2, "p2 tr1.png normal site-0"),
        "both list 'tr1.png'",
    ),
    "empty split": (lambda root, tmp: (root / "test_split.txt").write_text("\n"), "has no records"),
    "split file not text": (lambda root, tmp: (root / "train_split.txt").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
    "unknown model": (lambda root, tmp: ["--model", "vgg16"], "unknown model 'vgg16'"),
    "fraction zero": (lambda root, tmp: ["--fraction", "0"], "--fraction must be in (0, 1]"),
    "fraction above one": (lambda root, tmp: ["--fraction", "1.5"], "--fraction must be in (0, 1]"),
    "more clients than images": (lambda root, tmp: ["--clients", "50"], "--clients 50 is more than the 9"),
    "unwritable output folder": (lambda root, tmp: _file_as_folder(tmp), "a-file is a file; choose another --out"),
    "config file with an unknown key": (
        lambda root, tmp: ["--config", _config(tmp, "learning_rate: 0.1\n")],
        "unknown key(s) learning_rate",
    ),
    "config file not YAML": (lambda root, tmp: ["--config", _config(tmp, "rounds: [1,\n")], "not valid JSON/YAML"),
    "non-finite learning rate": (lambda root, tmp: ["--lr", "nan"], "--lr must be a finite"),
    "infinite learning rate": (lambda root, tmp: ["--lr", "inf"], "--lr must be a finite"),
    "zero rounds": (lambda root, tmp: ["--rounds", "0"], "--rounds must be an integer of at least 1"),
    "unknown partition": (lambda root, tmp: ["--partition", "random"], "unknown partition 'random'"),
    "failure probability above one": (lambda root, tmp: ["--inject-failures", "2"], "--inject-failures must be"),
    "resume and overwrite together": (lambda root, tmp: ["--resume"], "contradict each other"),
    # data layer (issue 13)
    "image path out of the data root": (
        lambda root, tmp: _line(root / "train_split.txt", 3, "p3 ../test/te0.png normal site-1"),
        "line 4: file name '../test/te0.png' points outside the image folder",
    ),
    "absolute image path": (
        lambda root, tmp: _line(root / "test_split.txt", 0, "q0 /etc/hostname normal site-0"),
        "line 1: file name '/etc/hostname' points outside the image folder",
    ),
    "image linked from outside the data root": (
        lambda root, tmp: (
            (root / "train" / "tr4.png").unlink(),
            (root / "train" / "tr4.png").symlink_to(shutil.copy(root / "test" / "te1.png", tmp)),
        ),
        "line 5: 'tr4.png' is a link to /",
    ),
    "file name with a space": (
        lambda root, tmp: _line(root / "train_split.txt", 5, "p5 tr 5.png COVID-19 site-1"),
        "line 6: the label 'COVID-19' is column 4, not 3, so the file name seems to contain "
        "a space ('tr 5.png'); file names with spaces are not supported",
    ),
    "image that claims 1 x 300000 pixels": (
        lambda root, tmp: __import__("conftest").write_image(root / "train" / "tr6.png", size=(1, 300_000)),
        "tr6.png claims 1 x 300000 pixels, beyond what a radiograph can be",
    ),
    "synthetic images too large": (
        lambda root, tmp: [
            "--data",
            "synthetic",
            "--config",
            _config(tmp, f"synth_size: 4096\ndata_dir: {tmp / 'data'}\n"),
        ],
        "size must be an integer from 32 to 2048 (got 4096)",
    ),
    # options and config files (issue 13)
    "training images too large": (
        lambda root, tmp: ["--image-size", "5000"],
        "--image-size must be an integer from 32 to 1024, got 5000",
    ),
    "batch of one image": (lambda root, tmp: ["--batch-size", "1"], "--batch-size must be at least 2 for resnet18"),
    # speed options (issue 15)
    "no clients at once": (
        lambda root, tmp: ["--parallel-clients", "0"],
        "--parallel-clients must be an integer of at least 1, got 0",
    ),
    "compile with differential privacy": (
        lambda root, tmp: ["--compile", "--dp-noise-multiplier", "1.0"],
        "--compile with differential privacy is not supported",
    ),
    "config value of the wrong type": (
        lambda root, tmp: ["--config", _config(tmp, 'amp: "no"\n')],
        "config field amp must be true or false or null, got 'no'",
    ),
    "config seed that is not a number": (
        lambda root, tmp: ["--config", _config(tmp, "seed: abc\n")],
        "config field seed must be an integer, got 'abc'",
    ),
    "config path that is not text": (
        lambda root, tmp: ["--config", _config(tmp, "data_dir: 5\n")],
        "config field data_dir must be text, got 5",
    ),
    "config file not UTF-8": (
        lambda root, tmp: ["--config", _config_bytes(tmp, b"rounds: 2 \xff\n")],
        "is not UTF-8 text",
    ),
    "partition leaving a client one image": (
        lambda root, tmp: ["--partition", "iid", "--clients", "5"],
        "the iid partition leaves client(s) 4 with fewer than 2 images (images per client:",
    ),
    "dirichlet partition that cannot give every client two images": (
        lambda root, tmp: ["--partition", "dirichlet", "--alpha", "0.05", "--clients", "5"],
        "left a client below 2 images in 1000 draws",
    ),
    "by_source without a source column": (
        lambda root, tmp: _three_columns(root / "train_split.txt") or ["--partition", "by_source"],
        "every image's source is unknown",
    ),
    "out naming a file": (lambda root, tmp: ["--out", str(_a_file(tmp))], "is a file, not a folder"),
    "out holding the data": (lambda root, tmp: ["--out", str(root)], "holds the data this run reads"),
    # image content and names (issue 26)
    "float image with a NaN pixel": (
        lambda root, tmp: _float_image(root / "train" / "tr2.png", float("nan")),
        "tr2.png has 1 pixel(s) that are not finite numbers",
    ),
    "float image with an infinite pixel": (
        lambda root, tmp: _float_image(root / "test" / "te1.png", float("inf")),
        "te1.png has 1 pixel(s) that are not finite numbers",
    ),
    "same image as ./name with another label": (
        lambda root, tmp: _line(root / "train_split.txt", 2, "p2 ./tr1.png normal site-0"),
        "lines 2 and 3 both list './tr1.png', as pneumonia and normal",
    ),
    # bounded messages (issue 26)
    "split file padded past the size limit": (
        lambda root, tmp: _pad(root / "train_split.txt", MAX_SPLIT_BYTES + 1),
        "more than a COVIDx split file can (at most 67108864)",
    ),
    "a split line of a megabyte": (
        lambda root, tmp: _line(root / "test_split.txt", 1, "x" * 1_000_000),
        "more characters); fix or remove the line",
    ),
    "NUL byte in a file name": (
        lambda root, tmp: _line(root / "train_split.txt", 3, "p3 tr\x003.png normal site-1"),
        "line 4: file name 'tr\\x003.png' holds a control character",
    ),
    "config file of nested YAML aliases": (
        lambda root, tmp: ["--config", _config(tmp, _aliases(4))],
        "uses YAML aliases (*name), which fedlib does not expand",
    ),
    "config file past the size limit": (
        lambda root, tmp: ["--config", _config(tmp, "# padding\n" * 200_000)],
        "more than a config file can need",
    ),
    "config path with a NUL byte": (
        lambda root, tmp: ["--config", _config(tmp, 'data_dir: "a\\0b"\n')],
        "config field data_dir holds a NUL byte",
    ),
    "fraction nan": (lambda root, tmp: ["--fraction", "nan"], "--fraction must be in (0, 1], got nan"),
    "fraction nan with secure aggregation": (
        lambda root, tmp: ["--fraction", "nan", "--secagg", "--engine", "flower-sim"],
        "--fraction must be in (0, 1], got nan",
    ),
    "config train_split outside the data root": (
        lambda root, tmp: ["--config", _config(tmp, "train_split: ../../../../../../etc/passwd\n")],
        "Layout.train_split (CLI --train-split) '../../../../../../etc/passwd' points outside the data root",
    ),
    "train-split option outside the data root": (
        lambda root, tmp: ["--train-split", "/etc/passwd"],
        "Layout.train_split (CLI --train-split) '/etc/passwd' points outside the data root",
    ),
    "test_dir outside the data root": (
        lambda root, tmp: ["--config", _config(tmp, "test_dir: ../elsewhere\n")],
        "Layout.test_dir (CLI --test-dir) '../elsewhere' points outside the data root",
    ),
    # the right words (issue 26)
    "a validation split that leaves a client one image": (
        lambda root, tmp: ["--partition", "iid", "--clients", "4", "--val-fraction", "0.3"],
        "hold out less for validation (--val-fraction 0.3), use fewer --clients or another --partition",
    ),
    "a learning rate that makes every client diverge": (
        lambda root, tmp: ["--lr", "1e30"],
        "every client's training diverged: lower --lr (now 1e+30), then run the command again",
    ),
    "out a symbolic link in a loop": (
        lambda root, tmp: ["--out", str(_loop(tmp))],
        "is a symbolic link that leads round in a loop",
    ),
}


def _loop(tmp: Path) -> Path:
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp / "loop"


def _aliases(depth: int) -> str:
    """A few hundred bytes of YAML whose aliases nest ``depth`` levels of nine: 9**depth values."""
    lines = ["seed:", "  - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"  - &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, depth)]
    return "\n".join(lines) + "\n"


def _pad(path: Path, size: int) -> None:
    """Pad a file with NUL bytes up to ``size`` (sparse: nothing is written)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _float_image(path: Path, bad: float) -> None:
    """A 32-bit float TIFF (under the listed .png name: PIL goes by content) with one bad pixel."""
    import numpy as np
    from PIL import Image

    pixels = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
    pixels[5, 7] = bad
    Image.fromarray(pixels, mode="F").save(path, format="TIFF")


def _config_bytes(tmp: Path, data: bytes) -> str:
    (tmp / "bad.yaml").write_bytes(data)
    return str(tmp / "bad.yaml")


def _three_columns(path: Path) -> None:
    path.write_text("".join(" ".join(line.split()[:3]) + "\n" for line in path.read_text().splitlines()))


def _a_file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("x")
    return tmp / "notes.txt"


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """A finished earlier run in the folder the bad command targets (with --overwrite)."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    io.write_json(run / "config.json", {"model": "resnet18"})
    io.write_json(run / "final.json", {"test": {"accuracy": 0.9}})
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file beside and inside the run folder, but the lock file (``.r.lock``, the OS lock
    a command holds on the run's name, which says nothing about the run)."""
    return {
        str(p.relative_to(folder.parent)): p.read_bytes()
        for p in sorted(folder.parent.rglob("*"))
        if p.is_file() and p.name != f".{folder.name}.lock"
    }


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_input_is_one_line_exit_2_and_loses_nothing(case, tmp_path, earlier_run, capsys):
    root = write_covidx(tmp_path / "covidx", TRAIN, TEST)
    breaker, words = CATALOGUE[case]
    extra = breaker(root, tmp_path)
    extra = extra if isinstance(extra, list) and all(isinstance(a, str) for a in extra) else []
    before = _snapshot(earlier_run)
    argv = [
        "train",
        "--profile",
        "smoke",
        "--data",
        str(root),
        "--out",
        str(earlier_run),
        "--overwrite",
        "--quiet",
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedlib: error: ") and "\n" not in err, err
    assert words in err, err
    assert _snapshot(earlier_run) == before  # the earlier run is where it was, byte for byte
    assert not earlier_run.with_name("r.previous").exists()


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("CMYK", ".jpg")])
def test_16_bit_and_cmyk_images_train(mode, suffix, tmp_path, capsys):
    rows = [*TRAIN[:-1], ("p8", f"odd{suffix}", "COVID-19", "site-0", mode, (40, 30))]
    root = write_covidx(tmp_path / "covidx", rows, TEST)
    out = tmp_path / "r"
    assert (
        main(["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--rounds", "1", "--quiet"]) == 0
    )
    final = json.loads((out / "final.json").read_text())
    assert final["num_train"] == len(rows) and final["patients_in_both_splits"] == []


def test_patients_in_both_splits_are_a_warning_naming_them(tmp_path, capsys):
    test = [("p4", "te0.png", "normal", "site-0"), ("p7", "te1.png", "COVID-19", "site-0"), *TEST[2:]]
    root = write_covidx(tmp_path / "covidx", TRAIN, test)
    out = tmp_path / "r"
    assert (
        main(["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--rounds", "1", "--quiet"]) == 0
    )
    err = capsys.readouterr().err
    assert "fedlib: warning: 2 patient id(s) appear in both train and test (p4, p7)" in err
    assert json.loads((out / "final.json").read_text())["patients_in_both_splits"] == ["p4", "p7"]


def test_debug_shows_the_traceback_of_a_bad_input(tmp_path, capsys):
    assert (
        main(["--debug", "train", "--profile", "smoke", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith(
        f"fedlib: error: data root {tmp_path / 'none'} does not "
        "exist; pass a COVIDx folder to --data (see docs/covidx.md) or --data synthetic."
    )


@pytest.mark.parametrize(
    "case",
    ["split file padded past the size limit", "a split line of a megabyte", "config file of nested YAML aliases"],
)
def test_no_message_quotes_more_than_about_200_characters_of_input(case, tmp_path, earlier_run, capsys):
    root = write_covidx(tmp_path / "covidx", TRAIN, TEST)
    breaker, _ = CATALOGUE[case]
    extra = breaker(root, tmp_path)
    extra = extra if isinstance(extra, list) else []
    argv = ["train", "--profile", "smoke", "--data", str(root), "--out", str(earlier_run), "--overwrite", "--quiet"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err) < 700, len(err)  # the culprit, cut to 200 characters, and the paths around it


def test_a_folder_where_a_split_file_should_be_is_named_as_a_folder(tmp_path, capsys):
    root = write_covidx(tmp_path / "covidx", TRAIN, TEST)
    argv = ["train", "--profile", "smoke", "--data", str(root), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*argv, "--train-split", "train"]) == 2
    assert f"Split file {root / 'train'} is a folder, not a file;" in capsys.readouterr().err


def test_a_class_the_test_split_has_and_training_lacks_is_a_warning(tmp_path, capsys):
    train = [row for row in TRAIN if row[2] != "COVID-19"]
    root = write_covidx(tmp_path / "covidx", train, TEST)
    out = tmp_path / "r"
    assert (
        main(["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--rounds", "1", "--quiet"]) == 0
    )
    err = capsys.readouterr().err
    assert "fedlib: warning: the training images hold no COVID-19 (2 test image(s)); the model cannot learn" in err


def test_the_faults_page_states_the_catalogues_size():
    page = (Path(__file__).resolve().parents[1] / "docs" / "faults.md").read_text()
    assert f"runs {len(CATALOGUE)} such inputs" in page
