"""What every training mode shares: data, client partition, model, hardware,
the run directory, and the final evaluation.

``run(cfg, out)`` is the entry point behind ``fedlib train``; it dispatches to
``fedlib.federated`` (FedAvg) or ``fedlib.central`` (pooled and local-only).
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

from . import runs
from .config import TrainConfig, absolute_paths, to_dict, validate
from .data.covidx import Layout
from .data.identity import fingerprint
from .data.resolve import Dataset, load_dataset
from .errors import UserError
from .metrics import summarize_confusion
from .models import build_model, param_count
from .partition import class_counts, partition
from .train import Hardware, derive_seed, evaluate, pick_hardware


@dataclass
class Experiment:
    cfg: TrainConfig
    data: Dataset
    hw: Hardware
    run_dir: Path
    train_idx: np.ndarray  # the training images in use (all, or the --subset)
    test_idx: np.ndarray
    parts: list[np.ndarray]  # one index array (into the training arrays) per client
    progress: bool = True
    started: float = field(default_factory=time.time)

    def new_model(self) -> nn.Module:
        """The model at its seeded initial weights, on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, "init"))
            model = build_model(self.cfg.model, num_classes=len(self.data.classes), norm=self.cfg.model_norm)
        model = model.to(self.hw.device)
        if self.hw.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def test_metrics(self, model: nn.Module) -> dict:
        res = evaluate(model, self.data.test_images, self.data.test_labels, self.test_idx,
                       image_size=self.cfg.image_size, hw=self.hw, batch_size=self.cfg.eval_batch_size)
        return {"test_loss": res.loss, **prefix("test_", summarize_confusion(res.confusion, self.data.classes))}

    def final_metrics(self, model: nn.Module, indices: np.ndarray | None = None) -> dict:
        """Train metrics on the un-augmented training images (the authors measured on
        the augmented stream) and test metrics, with confusion matrices."""
        out = {}
        for split, images, labels, idx in (
            ("train", self.data.train_images, self.data.train_labels, self.train_idx if indices is None else indices),
            ("test", self.data.test_images, self.data.test_labels, self.test_idx),
        ):
            res = evaluate(model, images, labels, idx, image_size=self.cfg.image_size, hw=self.hw,
                           batch_size=self.cfg.eval_batch_size)
            out[split] = {"loss": res.loss, **summarize_confusion(res.confusion, self.data.classes),
                          "confusion": res.confusion.tolist()}
        return out

    def elapsed(self) -> float:
        return time.time() - self.started


def prefix(p: str, d: dict) -> dict:
    return {p + k: v for k, v in d.items()}


def _subset(n: int, limit: int | None, seed: int, key: str) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(derive_seed(seed, key)).choice(n, limit, replace=False))


class PatientLeakWarning(UserWarning):
    """Patient ids in both splits: the test set is not independent of training."""


def leaked_patients(data: Dataset) -> list[str]:
    return sorted({r.patient_id for r in data.train_records} & {r.patient_id for r in data.test_records})


def setup(cfg: TrainConfig, run_dir: Path, progress: bool = True) -> Experiment:
    hw = pick_hardware(cfg.device, cfg.amp, cfg.channels_last)
    data = load_dataset(cfg, progress=progress)
    leaked = leaked_patients(data)
    if leaked:  # a warning, not an error: some public COVIDx releases have such patients
        shown = ", ".join(leaked[:10]) + (" ..." if len(leaked) > 10 else "")
        warnings.warn(f"{len(leaked)} patient id(s) appear in both train and test ({shown}); "
                      "test accuracy may be optimistic.", PatientLeakWarning, stacklevel=2)
    train_idx = _subset(len(data.train_labels), cfg.subset, cfg.seed, "subset")
    test_idx = _subset(len(data.test_labels), cfg.test_subset, cfg.seed, "test_subset")
    local = partition(cfg.partition, data.train_labels[train_idx], data.train_sources[train_idx],
                      cfg.clients, derive_seed(cfg.seed, "partition"), cfg.alpha)
    parts = [train_idx[p] for p in local]
    return Experiment(cfg, data, hw, Path(run_dir), train_idx, test_idx, parts, progress)


def describe(exp: Experiment) -> dict:
    """Facts about the run that are not config: what data, how clients were split."""
    model = build_model(exp.cfg.model, num_classes=len(exp.data.classes), norm=exp.cfg.model_norm)
    return {
        "data_root": str(exp.data.root),
        "synthetic": exp.data.synthetic,
        "data_description": exp.data.description,
        "classes": list(exp.data.classes),
        "num_train": int(len(exp.train_idx)),
        "num_test": int(len(exp.test_idx)),
        "patients_in_both_splits": leaked_patients(exp.data),
        "clients": len(exp.parts),
        "client_sizes": [int(len(p)) for p in exp.parts],
        "client_class_counts": class_counts(exp.parts, exp.data.train_labels, len(exp.data.classes)).tolist(),
        "params": param_count(model),
        "device": str(exp.hw.device),
        "amp": exp.hw.amp,
    }


def record_data(cfg: TrainConfig, data: Dataset, resume: bool) -> TrainConfig:
    """The config with the fingerprint of the data it trains on; a resumed run must find the
    data it started with."""
    layout = cfg.layout if cfg.data != "synthetic" else Layout()
    found = fingerprint(data.root, layout)
    if resume and cfg.data_fingerprint not in (None, found):
        raise UserError(f"--resume: the data at {data.root} changed since this run started (fingerprint "
                        f"{found}, the run's config.json says {cfg.data_fingerprint}); restore that data, "
                        "or start a new run in another --out.")
    return dataclasses.replace(cfg, data_fingerprint=found)


def run(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, pool=None) -> dict:
    """Train one (model, mode) run into ``out``; returns final.json's content.

    ``pool(exp)`` gives the FedAvg server its clients (``fedlib.federated.ClientPool``);
    None trains them in this process, or hands the whole run to Flower when
    ``cfg.engine`` names it (Flower's ServerApp then calls back here with its pool).
    """
    from .central import run_central, run_local
    from .federated import run_fedavg

    if cfg.engine != "inprocess" and pool is None:
        from .flower import run_flower

        return run_flower(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    out = Path(out)
    runs.check_target(out, resume=resume, overwrite=overwrite)
    cfg = absolute_paths(cfg)  # what config.json records, so that it repeats from any folder
    if resume:
        if runs.is_finished(out):
            return runs.read_json(out / "final.json")
        # The saved config decides; only the hardware may change on resume.
        saved = runs.read_json(out / "config.json")
        saved.update(device=cfg.device, amp=cfg.amp, channels_last=cfg.channels_last)
        cfg = validate(TrainConfig(**saved))
    exp = setup(cfg, out, progress)  # bad data fails here, before an earlier run is moved aside
    cfg = exp.cfg = record_data(cfg, exp.data, resume)
    moved = runs.prepare(out, resume=resume, overwrite=overwrite)
    if not resume:
        runs.write_json(out / "config.json", to_dict(cfg))
    checkpoint = runs.load_checkpoint(out) if resume else None
    if cfg.mode == "fedavg":
        final = run_fedavg(exp, checkpoint, pool(exp) if pool is not None else None)
    else:
        final = {"central": run_central, "local": run_local}[cfg.mode](exp, checkpoint)
    final = {"model": cfg.model, "mode": cfg.mode, "profile": cfg.profile, "seed": cfg.seed,
             **describe(exp), **final, "wall_time": exp.elapsed()}
    runs.write_json(out / "final.json", final)
    runs.finish(moved)
    return final
