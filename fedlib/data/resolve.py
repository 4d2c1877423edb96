"""From a TrainConfig to arrays in memory: generate synthetic data if asked,
read the split files, fill or reuse the preprocessing cache."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import load_split_arrays
from .covidx import CLASSES, Layout, Record, class_names, read_split, task_of
from .releases import check_val_overlap, detect_layout
from .synthetic import SynthConfig, is_synthetic, write_synthetic


@dataclass
class Dataset:
    root: Path
    synthetic: bool
    train_images: np.ndarray  # uint8 (N, S, S, 1), memory-mapped
    train_labels: np.ndarray  # int64 (N,), indices into classes
    train_records: list[Record]
    test_images: np.ndarray
    test_labels: np.ndarray
    test_records: list[Record]
    # The class names of this data set (its task's): the one place every metric, table and figure
    # takes them from (fedlib.data.covidx.class_names).
    classes: tuple[str, ...] = CLASSES
    layout: Layout = field(default_factory=Layout)  # as read: the synthetic set's own names, Kaggle's detected
    val_images: np.ndarray | None = None  # a published validation split (Layout.val_split); None: none
    val_labels: np.ndarray | None = None
    val_records: list[Record] | None = None

    def validation_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels the validation indices point into: the published validation split's,
        or the training arrays a share was held out of (--val-fraction)."""
        if self.val_images is not None:
            return self.val_images, self.val_labels
        return self.train_images, self.train_labels

    @property
    def task(self) -> str:
        return "binary" if len(self.classes) == 2 else "three-class"

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
        kind += ", binary" if self.task == "binary" else ""
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


class LayoutNotice(UserWarning):
    """The data root uses other split file names than the ones given, and fedlib uses those."""


def data_layout(cfg) -> Layout:
    """The layout ``cfg``'s data are read with: the synthetic set's own names (with ``cfg.task``),
    or ``cfg.layout`` with Kaggle's train.txt/test.txt where the default names are absent (said
    in one line, a ``LayoutNotice``)."""
    if cfg.data == "synthetic":
        return Layout(task=cfg.task)
    layout, note = detect_layout(cfg.data, cfg.layout)
    if note:
        warnings.warn(note, LayoutNotice, stacklevel=2)
    return layout


def recorded(cfg, task: str):
    """``cfg`` as config.json records it: with the task its labels gave ("auto" resolved). The
    split file names stay as given: Kaggle's are detected again on every read."""
    return dataclasses.replace(cfg, task=task)


def check_splits(root, layout: Layout) -> str:
    """Read every split of the layout as training would (images present, one task, a validation
    split apart from train and test); the folder's task."""
    by_split = {}
    for split in layout.split_names():
        records, _ = read_split(root, split, layout)
        by_split[split] = (records, Path(root) / getattr(layout, f"{split}_split"))
    check_val_overlap(by_split)
    return task_of(by_split)


def load_dataset(cfg, progress: bool = True) -> Dataset:
    root = ensure_data_root(cfg, progress)
    layout = data_layout(cfg)
    task = check_splits(root, layout)  # before any image is decoded
    arrays = {
        split: load_split_arrays(root, split, cfg.image_size, layout=layout, progress=progress)
        for split in layout.split_names()
    }
    train, test, val = arrays["train"], arrays["test"], arrays.get("val", (None, None, None))
    return Dataset(
        root=root,
        synthetic=is_synthetic(root),
        train_images=train[0],
        train_labels=train[1],
        train_records=train[2],
        test_images=test[0],
        test_labels=test[1],
        test_records=test[2],
        classes=class_names(task),
        layout=layout,
        val_images=val[0],
        val_labels=val[1],
        val_records=val[2],
    )
