"""From a TrainConfig to arrays in memory: generate synthetic data if asked,
read the split files, fill or reuse the preprocessing cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import load_split_arrays
from .covidx import CLASSES, Layout, Record
from .synthetic import SynthConfig, is_synthetic, write_synthetic


@dataclass
class Dataset:
    root: Path
    synthetic: bool
    train_images: np.ndarray  # uint8 (N, S, S, 3), memory-mapped
    train_labels: np.ndarray  # int64 (N,), indices into CLASSES
    train_records: list[Record]
    test_images: np.ndarray
    test_labels: np.ndarray
    test_records: list[Record]
    classes: tuple[str, ...] = CLASSES

    @property
    def train_sources(self) -> np.ndarray:
        return np.asarray([r.source for r in self.train_records])

    @property
    def test_sources(self) -> np.ndarray:
        return np.asarray([r.source for r in self.test_records])

    @property
    def description(self) -> str:
        """What figure captions say about the data."""
        kind = "SYNTHETIC chest X-rays" if self.synthetic else "COVIDx"
        return f"{kind} ({len(self.train_labels)} train / {len(self.test_labels)} test images)"


def synth_config(cfg) -> SynthConfig:
    return SynthConfig(
        n_train=cfg.synth_n_train,
        n_test=cfg.synth_n_test,
        size=cfg.synth_size,
        seed=cfg.synth_seed,
        sources=cfg.synth_sources,
        class_mix=cfg.synth_class_mix,
    )


def synthetic_root(cfg) -> Path:
    s = synth_config(cfg)
    name = f"synthetic-{s.n_train}-{s.n_test}-{s.size}px-{s.sources}src-{s.class_mix}-seed{s.seed}"
    return Path(cfg.data_dir) / name


def ensure_data_root(cfg, progress: bool = True) -> Path:
    """The COVIDx-format root for ``cfg.data``; generates the synthetic set on first use."""
    if cfg.data != "synthetic":
        root = Path(cfg.data)
        if not root.is_dir():
            raise UserError(
                f"data root {root} does not exist; pass a COVIDx folder to --data "
                "(see docs/covidx.md) or --data synthetic."
            )
        return root
    root = synthetic_root(cfg)
    if not is_synthetic(root):
        if root.is_dir() and any(root.iterdir()):  # never replaced: synth did not write it
            raise UserError(
                f"{root} is where the synthetic data set goes, but it holds other files (no synthetic.json); "
                "move them away, or set data_dir to another folder."
            )
        write_synthetic(root, synth_config(cfg), progress=progress, overwrite=root.exists())
    return root


def load_dataset(cfg, progress: bool = True) -> Dataset:
    root = ensure_data_root(cfg, progress)
    layout = cfg.layout if cfg.data != "synthetic" else Layout()
    train = load_split_arrays(root, "train", cfg.image_size, layout=layout, progress=progress)
    test = load_split_arrays(root, "test", cfg.image_size, layout=layout, progress=progress)
    return Dataset(
        root=root,
        synthetic=is_synthetic(root),
        train_images=train[0],
        train_labels=train[1],
        train_records=train[2],
        test_images=test[0],
        test_labels=test[1],
        test_records=test[2],
    )
