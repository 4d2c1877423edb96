"""Fixtures that build tiny COVIDx-format folders with PIL."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one test process per core (pytest-xdist): one thread each, set before
    # torch is imported and inherited by every process a test starts (SuperNodes, CLI runs).
    # Two PyTorch processes with two threads each on two cores slow each other 5-10x.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def make_image(mode: str = "L", size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """A small image with varied pixels in ``mode``; size is (width, height) as PIL has it."""
    rng = np.random.default_rng(seed)
    width, height = size

    def band() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))

    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 4096, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-70000, 70000, (height, width), dtype=np.int32))
    if mode == "P":
        return band().convert("P")
    if mode == "1":
        return band().convert("1")
    if mode == "L":
        return band()
    return Image.merge(mode, [band() for _ in mode])  # RGB, RGBA, LA, CMYK


def write_image(path: Path, mode: str = "L", size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """Save ``make_image(...)`` to ``path``; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(mode, size, seed).save(path)
    return path


def write_covidx(root: Path, train: list[tuple], test: list[tuple], images: bool = True) -> Path:
    """A COVIDx folder with the default Layout names.

    Each row is (patient_id, filename, label[, source][, mode, (w, h)]): the
    first four go to the split file, the optional image mode and size shape
    the generated image (default L, 40x30).
    """
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        lines = []
        for seed, row in enumerate(rows):
            columns = [str(c) for c in row if isinstance(c, str)][:4]
            lines.append(" ".join(columns))
            if images:
                mode = row[4] if len(row) > 4 else "L"
                size = row[5] if len(row) > 5 else (40, 30)
                write_image(root / split / row[1], mode, size, seed=seed + (100 if split == "test" else 0))
        (root / f"{split}_split.txt").write_text("\n".join(lines) + "\n")
        (root / split).mkdir(exist_ok=True)
    return root


# A mixed data set: every class, several sources, image modes and orientations,
# and patient p3 in both splits (a planted train/test leak).
TRAIN_ROWS = [
    ("p1", "a.png", "pneumonia", "cohen", "L", (40, 30)),
    ("p2", "b.png", "normal", "rsna", "RGB", (30, 40)),
    ("p3", "c.jpg", "COVID-19", "sirm", "L", (40, 30)),
    ("p4", "d.png", "normal", "rsna", "I;16", (36, 30)),
    ("p5", "e.png", "COVID-19", "cohen", "RGBA", (40, 40)),
]
TEST_ROWS = [
    ("p6", "f.png", "normal", "rsna", "L", (40, 30)),
    ("p3", "g.png", "COVID-19", "sirm", "P", (30, 40)),
    ("p7", "h.jpeg", "pneumonia", "rsna", "RGB", (40, 30)),
]


@pytest.fixture
def covidx_root(tmp_path) -> Path:
    """A tiny COVIDx folder built from TRAIN_ROWS and TEST_ROWS."""
    return write_covidx(tmp_path / "covidx", TRAIN_ROWS, TEST_ROWS)


# ---------------------------------------------------------------- training runs


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Where the smoke profile's synthetic data set is generated (once per session)."""
    return tmp_path_factory.mktemp("data")


def smoke(data_dir, **overrides):
    """The smoke profile (seconds on a CPU) on synthetic data kept in ``data_dir``."""
    from fedlib import config

    return config.resolve("smoke", data_dir=str(data_dir), **overrides)


def weights(run_dir) -> dict:
    """The global model of a run's last checkpoint."""
    from fedlib.run import io

    return io.load_checkpoint(run_dir)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def history_without_time(run_dir) -> list[dict]:
    from fedlib.run import io

    return [
        {k: v for k, v in row.items() if k != "wall_time"} for row in io.read_history(Path(run_dir) / "history.csv")
    ]


def doc_pages() -> list[Path]:
    """The user documentation: README.md and every page of docs/."""
    repo = Path(__file__).resolve().parent.parent
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def readme_block(start: str) -> str:
    """The fenced code block of README.md or a docs/ page whose first line starts with ``start``
    (indentation removed)."""
    for page in doc_pages():
        for chunk in page.read_text().split("```")[1::2]:
            lines = [line.strip() for line in chunk.strip("\n").splitlines()]
            if lines and lines[0].startswith(start):
                return "\n".join(lines) + "\n"
    raise AssertionError(f"no code block in README.md or docs/*.md starts with {start!r}")
