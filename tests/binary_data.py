"""Tiny binary COVIDx folders in the published layouts (Kaggle's COVIDx CXR-2/3/4:
``train.txt val.txt test.txt`` and ``train/ val/ test/``), fabricated with PIL."""

from __future__ import annotations

from pathlib import Path

from conftest import write_image


def binary_rows(prefix: str, n: int, sources=("bimcv", "rsna", "ricord")) -> list[tuple[str, str, str, str]]:
    """``n`` lines ``patient file label source``, alternating negative and positive, sources in turn."""
    return [
        (f"{prefix}{i}", f"{prefix}{i}.png", ("negative", "positive")[i % 2], sources[i % len(sources)])
        for i in range(n)
    ]


def write_kaggle(root: Path, n_train: int = 30, n_val: int = 8, n_test: int = 12, val: bool = True) -> Path:
    """A binary folder in COVIDx CXR-4's layout (CXR-2's without ``val``): train.txt, val.txt,
    test.txt beside train/, val/, test/; every patient in one split only."""
    splits = {"train": binary_rows("tr", n_train), "test": binary_rows("te", n_test)}
    if val:
        splits["val"] = binary_rows("va", n_val)
    for split, rows in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for seed, (_, name, _, _) in enumerate(rows):
            write_image(root / split / name, "L", (40, 36), seed=seed + 1000 * len(split))
        (root / f"{split}.txt").write_text("".join(" ".join(row) + "\n" for row in rows))
    return root
