"""What every training mode shares: data, client partition, model, hardware and
evaluation. A leaf: it knows nothing of the run folder's life (``fedlib.runner``) or
of the modes (``fedlib.central``, ``fedlib.federated``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainConfig, eval_batch_size
from .data.identity import fingerprint
from .data.resolve import Dataset, load_dataset, recorded
from .errors import UserError
from .metrics import summarize_confusion
from .models import build_model, param_count
from .partition import check_parts, class_counts, holdout, partition
from .train import Hardware, compile_model, derive_seed, evaluate, pick_hardware


@dataclass
class Experiment:
    cfg: TrainConfig
    data: Dataset
    hw: Hardware
    run_dir: Path
    train_idx: np.ndarray  # the training images in use (all, or the --subset), validation excluded
    test_idx: np.ndarray
    val_idx: np.ndarray  # validation images: held out of training (--val-fraction) or --val-split's; empty by default
    parts: list[np.ndarray]  # one index array (into the training arrays) per client
    progress: bool = True
    started: float = field(default_factory=time.time)

    def new_model(self) -> nn.Module:
        """The model at its seeded initial weights, on the device (compiled with ``--compile``)."""
        return new_model(self.cfg, len(self.data.classes), self.hw)

    def test_metrics(self, model: nn.Module) -> dict:
        """The history row's evaluation: test metrics, and validation metrics when held out."""
        out = {}
        for split, images, labels, idx in self._eval_splits():
            if split == "train":
                continue
            res = self._evaluate(model, images, labels, idx)
            out.update(
                {
                    f"{split}_loss": res.loss,
                    **prefix(f"{split}_", summarize_confusion(res.confusion, self.data.classes)),
                }
            )
        return out

    def _evaluate(self, model: nn.Module, images: np.ndarray, labels: np.ndarray, idx: np.ndarray):
        batch = eval_batch_size(self.cfg, cuda=self.hw.device.type == "cuda")
        return evaluate(
            model,
            images,
            labels,
            idx,
            image_size=self.cfg.image_size,
            hw=self.hw,
            batch_size=batch,
            num_classes=len(self.data.classes),
        )

    def _eval_splits(self, train_idx: np.ndarray | None = None):
        d = self.data
        yield "train", d.train_images, d.train_labels, self.train_idx if train_idx is None else train_idx
        if len(self.val_idx):
            yield "val", *d.validation_arrays(), self.val_idx
        yield "test", d.test_images, d.test_labels, self.test_idx

    def final_metrics(self, model: nn.Module, indices: np.ndarray | None = None) -> dict:
        """Train metrics on the un-augmented training images (the authors measured on
        the augmented stream) and test metrics, with confusion matrices."""
        out = {}
        for split, images, labels, idx in self._eval_splits(indices):
            res = self._evaluate(model, images, labels, idx)
            out[split] = {
                "loss": res.loss,
                **summarize_confusion(res.confusion, self.data.classes),
                "confusion": res.confusion.tolist(),
            }
        by_source = self.test_by_source(model)
        if by_source:
            out["test_by_source"] = by_source
        return out

    def test_by_source(self, model: nn.Module) -> dict:
        """{source: test confusion matrix} when the test images come from several known sources
        (hospitals): how the model does on each hospital's own patients."""
        sources = self.data.test_sources[self.test_idx]
        known = sorted(set(sources.tolist()) - {"unknown"})
        if len(known) < 2:
            return {}
        out = {}
        for s in known:
            res = self._evaluate(model, self.data.test_images, self.data.test_labels, self.test_idx[sources == s])
            out[s] = res.confusion.tolist()
        return out

    def elapsed(self) -> float:
        return time.time() - self.started


def new_model(cfg: TrainConfig, num_classes: int, hw: Hardware) -> nn.Module:
    """``cfg.model`` at its seeded initial weights, on ``hw``'s device and memory layout, its
    forward compiled when ``cfg.compile`` (``fedlib.train.compile_model``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(cfg.model, num_classes, cfg.model_norm, cfg.head_grid)
    model = model.to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return compile_model(model, hw) if cfg.compile else model


def mean_over_clients(per_client: list[dict]) -> dict:
    """Per-client ``final_metrics`` (local-only, FedBN) in final.json: each client's, and
    the mean of each number over clients."""
    mean = {
        split: {
            k: float(np.mean([m[split][k] for m in per_client]))
            for k, v in per_client[0][split].items()
            if isinstance(v, int | float)
        }
        for split in ("train", "val", "test")
        if split in per_client[0]
    }
    return {**mean, "per_client": per_client}


def prefix(p: str, d: dict) -> dict:
    return {p + k: v for k, v in d.items()}


def _subset(n: int, limit: int | None, seed: int, key: str) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(derive_seed(seed, key)).choice(n, limit, replace=False))


class PartitionWarning(UserWarning):
    """The partition is not what the options alone suggest (by_source sets the client count)."""


class PatientLeakWarning(UserWarning):
    """Patient ids in both splits: the test set is not independent of training."""


class MissingClassWarning(UserWarning):
    """A class the test split holds has no training image: the model cannot learn it."""


def _warn_missing_classes(data: Dataset, train_idx: np.ndarray, test_idx: np.ndarray) -> None:
    trained = set(data.train_labels[train_idx].tolist())
    tested = np.bincount(data.test_labels[test_idx], minlength=len(data.classes))
    missing = [
        f"{data.classes[c]} ({tested[c]} test image(s))"
        for c in range(len(data.classes))
        if tested[c] and c not in trained
    ]
    if missing:
        warnings.warn(
            f"the training images hold no {', '.join(missing)}; the model cannot learn to recognise "
            "it, so its test accuracy there is zero: check the split files or --subset.",
            MissingClassWarning,
            stacklevel=3,
        )


def leaked_patients(data: Dataset) -> list[str]:
    return sorted({r.patient_id for r in data.train_records} & {r.patient_id for r in data.test_records})


def setup(cfg: TrainConfig, run_dir: Path, progress: bool = True) -> Experiment:
    hw = pick_hardware(cfg.device, cfg.amp, cfg.channels_last)
    data = load_dataset(cfg, progress=progress)
    leaked = leaked_patients(data)
    if leaked:  # a warning, not an error: some public COVIDx releases have such patients
        shown = ", ".join(leaked[:10]) + (" ..." if len(leaked) > 10 else "")
        warnings.warn(
            f"{len(leaked)} patient id(s) appear in both train and test ({shown}); test accuracy may be optimistic.",
            PatientLeakWarning,
            stacklevel=2,
        )
    train_idx = _subset(len(data.train_labels), cfg.subset, cfg.seed, "subset")
    test_idx = _subset(len(data.test_labels), cfg.test_subset, cfg.seed, "test_subset")
    _warn_missing_classes(data, train_idx, test_idx)
    if data.val_labels is not None:  # a published validation split (--val-split)
        val_idx = np.arange(len(data.val_labels))
    else:
        kept, held = holdout(data.train_labels[train_idx], cfg.val_fraction, derive_seed(cfg.seed, "validation"))
        train_idx, val_idx = train_idx[kept], train_idx[held]
    local = partition(
        cfg.partition,
        data.train_labels[train_idx],
        data.train_sources[train_idx],
        cfg.clients,
        derive_seed(cfg.seed, "partition"),
        cfg.alpha,
    )
    if cfg.mode != "central":  # pooled training never splits the data
        check_parts(local, cfg.partition, val_fraction=cfg.val_fraction)
    parts = [train_idx[p] for p in local]
    if cfg.partition == "by_source" and len(parts) != cfg.clients:
        warnings.warn(
            f"--partition by_source makes one client per source: {len(parts)} clients "
            f"({', '.join(sorted(set(data.train_sources[train_idx].tolist())))}), not --clients "
            f"{cfg.clients}.",
            PartitionWarning,
            stacklevel=2,
        )
        cfg = dataclasses.replace(cfg, clients=len(parts))
    return Experiment(cfg, data, hw, Path(run_dir), train_idx, test_idx, val_idx, parts, progress)


def describe(exp: Experiment) -> dict:
    """Facts about the run that are not config: what data, how clients were split."""
    model = build_model(exp.cfg.model, len(exp.data.classes), exp.cfg.model_norm, exp.cfg.head_grid)
    return {
        "data_root": str(exp.data.root),
        "synthetic": exp.data.synthetic,
        "data_description": exp.data.description,
        "classes": list(exp.data.classes),
        "num_train": int(len(exp.train_idx)),
        "num_test": int(len(exp.test_idx)),
        "num_val": int(len(exp.val_idx)),
        "patients_in_both_splits": leaked_patients(exp.data),
        "clients": len(exp.parts),
        "client_sizes": [int(len(p)) for p in exp.parts],
        "client_class_counts": class_counts(exp.parts, exp.data.train_labels, len(exp.data.classes)).tolist(),
        "client_sources": [sorted(set(exp.data.train_sources[p].tolist())) for p in exp.parts],
        "params": param_count(model),
        "device": str(exp.hw.device),
        "amp": exp.hw.amp,
    }


def record_data(cfg: TrainConfig, data: Dataset, resume: bool) -> TrainConfig:
    """The config with the fingerprint of the data it trains on; a resumed run must find the
    data it started with. The task is recorded as the labels gave it (``recorded``)."""
    cfg = recorded(cfg, data.task)
    found = fingerprint(data.root, data.layout)
    if resume and cfg.data_fingerprint not in (None, found):
        raise UserError(
            f"--resume: the data at {data.root} changed since this run started (fingerprint "
            f"{found}, the run's config.json says {cfg.data_fingerprint}); restore that data, "
            "or start a new run in another --out."
        )
    return dataclasses.replace(cfg, data_fingerprint=found)
