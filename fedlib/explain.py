"""Grad-CAM++ maps of trained runs: the paper's Figures 6-8, and how well the
maps fall on the lesion (beyond the paper).

The maps come from pytorch-grad-cam's ``GradCAMPlusPlus`` at each model's
``cam_layer`` (its last convolutional block), upsampled to the input size and
scaled to [0, 1] per image, as the library does.

Localisation needs lesion masks, which only the synthetic data have:
- energy inside: the share of the map's total mass that lies on lesion pixels;
- pointing game: whether the map's maximum lies on the lesion. When several
  pixels tie for the maximum, the hit is the share of them on the lesion, so
  a unique maximum scores 0 or 1 and a flat map scores the lesion's area
  fraction (the expected hit of a pixel drawn at random).
- chance level: a uniform map. Its energy inside and its pointing hit both
  equal the lesion's area fraction, so a model's map beats chance when its
  numbers exceed the uniform ones.

Figures are built on ``matplotlib.figure.Figure`` (not pyplot), so nothing is
kept open between calls; a notebook shows them with ``display(fig)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from . import config, runs
from .data.covidx import CLASSES
from .data.resolve import Dataset, load_dataset
from .data.synthetic import load_mask
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_batch
from .errors import UserError
from .models import DISPLAY_NAMES, build_model, cam_layer
from .plots import save_table, write_figure
from .train import derive_seed, pick_hardware

MODES = ("fedavg", "central")  # the paper's two rows: trained with FL, and without (pooled)
ROW_TITLES = {"fedavg": "with FL (FedAvg)", "central": "without FL (pooled)", "local": "local only"}
FIRST_FIGURE = 6  # the paper's Figures 6, 7, 8: one per class, in the authors' class order
TABLE_STEM = "table_gradcam_localisation"
CAM_BATCH = 16  # images per Grad-CAM++ pass: small enough for COVID-Net on a laptop


@dataclass
class Panel:
    """One image as one model saw and explained it."""

    image: np.ndarray  # uint8 (H, W, 3), the model's input de-normalised
    cam: np.ndarray  # float32 (H, W) in [0, 1]
    predicted: int  # class index
    probability: float  # softmax probability of the predicted class
    mask: np.ndarray | None = None  # bool (H, W) lesion, synthetic data only


# ---------------------------------------------------------------- maps


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = CAM_BATCH) -> np.ndarray:
    """Softmax probabilities (N, classes) in eval mode; the model's mode is left as found."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [torch.softmax(model(images[i : i + batch_size].to(device)).float(), dim=1).cpu()
                   for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def gradcam_maps(model: nn.Module, name: str, images: torch.Tensor, targets=None,
                 batch_size: int = CAM_BATCH) -> np.ndarray:
    """Grad-CAM++ maps (N, H, W), float32 in [0, 1], at the input's resolution.

    images: normalised float (N, 3, H, W) as ``eval_batch`` makes them, on any
    device (they move to the model's). targets: class indices, one per image;
    None explains the predicted class. The model's train/eval mode, its
    parameters' requires_grad flags and .grad are left as found, and the
    library's hooks are removed.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"got {len(targets)} targets for {len(images)} images")
    params = list(model.parameters())
    device = params[0].device
    was_training = model.training
    saved = [(p.requires_grad, p.grad) for p in params]
    cam = GradCAMPlusPlus(model=model, target_layers=[cam_layer(model, name)])  # sets eval mode
    maps = []
    try:
        # Gradients flow from an input that requires grad, not from the weights: the
        # maps are the same, weight gradients (400 MB for COVID-Net) are never made,
        # and a frozen model works too.
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].detach().to(device).requires_grad_(True)
                chosen = None if targets is None else [
                    ClassifierOutputTarget(int(c)) for c in targets[start : start + batch_size]]
                maps.append(cam(input_tensor=x, targets=chosen))
    finally:
        # Not `with cam:` -- its __exit__ swallows IndexError, which would hide a bug.
        cam.activations_and_grads.release()
        model.train(was_training)
        for p, (flag, grad) in zip(params, saved, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    if not maps:
        return np.zeros((0, *images.shape[-2:]), np.float32)
    return np.concatenate(maps).astype(np.float32, copy=False)


def denormalize(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, H, W, 3) from ImageNet-normalised (N, 3, H, W): what the model saw."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images.detach().cpu().float() * std + mean).clamp_(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The map as a jet heat map over the image: uint8 (H, W, 3)."""
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size")
    return show_cam_on_image(image.astype(np.float32) / 255, np.clip(cam, 0, 1), use_rgb=True,
                             image_weight=image_weight)


def explain_images(model: nn.Module, name: str, images: np.ndarray, image_size: int,
                   targets=None) -> list[Panel]:
    """Panels for cached uint8 images (N, S, S, 3): the test view, its map and the prediction."""
    device = next(model.parameters()).device
    x = eval_batch(torch.from_numpy(np.ascontiguousarray(images)).to(device), image_size)
    probs = predict_proba(model, x)
    cams = gradcam_maps(model, name, x, targets)
    shown = denormalize(x)
    return [Panel(shown[i], cams[i], int(probs[i].argmax()), float(probs[i].max()))
            for i in range(len(shown))]


# ---------------------------------------------------------------- localisation


def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
    return cam, mask


def chance_level(mask: np.ndarray) -> float:
    """Energy inside and pointing hit of a uniform map: the lesion's area fraction."""
    return float(np.asarray(mask, dtype=bool).mean())


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """sum(cam[mask]) / sum(cam) for a non-negative map. An all-zero map says
    nothing about where the lesion is, so it scores as the uniform map."""
    cam, mask = _check_pair(cam, mask)
    total = cam.sum()
    if total <= 0:
        return chance_level(mask)
    return float(cam[mask].sum() / total)


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if the map's maximum lies on the lesion, else 0.0; with ties, the
    share of the maximal pixels on the lesion (a flat map: the area fraction)."""
    cam, mask = _check_pair(cam, mask)
    return float(mask[cam == cam.max()].mean())


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A square generated mask at the model's input size. The synthetic images
    are square, so the cache's centre crop keeps all of them and a plain resize
    matches what the model saw."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img) > 127


def lesion_masks(data: Dataset, split: str, size: int) -> dict[int, np.ndarray]:
    """Image index -> lesion mask at ``size``, for every image of the split with a
    non-empty lesion (pneumonia and COVID-19) after resizing."""
    if not data.synthetic:
        raise UserError(f"{data.root} has no lesion masks; localisation needs data made by "
                        "`fedlib synth` (--data synthetic).")
    out = {}
    for i, record in enumerate(_split(data, split)[2]):
        if data.classes[record.label] == "normal":
            continue
        mask = resize_mask(load_mask(data.root, split, record.filename), size)
        if mask.any():
            out[i] = mask
    return out


def localisation_table(run_dirs: dict, split: str = "test", device: str = "auto",
                       batch_size: int = CAM_BATCH) -> pd.DataFrame:
    """Per (model, mode): how much of the map lies on the lesion, against a uniform map.

    run_dirs: {(model, mode): run directory}. Maps are for the true class, so a
    wrong prediction does not change which evidence is scored. Columns: model,
    display_name, mode, images, energy_inside, uniform_energy_inside,
    pointing_hit_rate, uniform_pointing_hit_rate (means over the lesion images).
    """
    rows, masks_memo = [], {}
    for (name, mode), run_dir in run_dirs.items():
        model, cfg, _ = load_run(run_dir, device)
        data = load_dataset(cfg, progress=False)
        key = (str(data.root), split, cfg.image_size)
        if key not in masks_memo:
            masks_memo[key] = lesion_masks(data, split, cfg.image_size)
        masks = masks_memo[key]
        images, labels, _ = _split(data, split)
        idx = np.asarray(sorted(masks), dtype=np.int64)
        scores = []  # (energy, hit, chance) per image
        for start in range(0, len(idx), batch_size):
            batch = idx[start : start + batch_size]
            panels = explain_images(model, name, images[batch], cfg.image_size, targets=labels[batch])
            for i, panel in zip(batch, panels, strict=True):
                m = masks[int(i)]
                scores.append((energy_inside(panel.cam, m), pointing_hit(panel.cam, m), chance_level(m)))
        s = np.asarray(scores, dtype=np.float64).reshape(-1, 3)
        mean = s.mean(axis=0) if len(s) else np.full(3, np.nan)
        rows.append({
            "model": name, "display_name": DISPLAY_NAMES[name], "mode": mode, "images": len(s),
            "energy_inside": mean[0], "uniform_energy_inside": mean[2],
            "pointing_hit_rate": mean[1], "uniform_pointing_hit_rate": mean[2],
        })
        del model
    return pd.DataFrame(rows, columns=["model", "display_name", "mode", "images", "energy_inside",
                                       "uniform_energy_inside", "pointing_hit_rate",
                                       "uniform_pointing_hit_rate"])


def write_table(table: pd.DataFrame, figures_dir, stem: str = TABLE_STEM) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.md`` (numbers to 3 decimals), each written atomically."""
    return save_table(table, figures_dir, stem, digits=3)


# ---------------------------------------------------------------- runs and images


def _read_config(run_dir: Path) -> config.TrainConfig:
    path = run_dir / "config.json"
    return config.TrainConfig(**config.from_dict(runs.read_json(path), source=str(path)))


def load_run(run_dir, device: str = "auto") -> tuple[nn.Module, config.TrainConfig, dict]:
    """The final model of a finished run (in eval mode, on the picked device),
    its TrainConfig and its final.json."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not runs.is_finished(run_dir):
        raise UserError(f"{run_dir} holds no finished run; train it first "
                        f"(`fedlib train --out {run_dir}` or `fedlib reproduce`).")
    cfg = _read_config(run_dir)
    if cfg.mode == "local":
        raise UserError(f"{run_dir} is a local-only run with one model per client; "
                        "explain a fedavg or central run instead.")
    checkpoint = runs.load_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"{run_dir} has no checkpoints/last.pt; train it again with --overwrite.")
    final = runs.read_json(run_dir / "final.json")
    model = build_model(cfg.model, num_classes=len(final.get("classes", (0, 1, 2))), norm=cfg.model_norm)
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_hardware(device).device).eval(), cfg, final


def find_runs(runs_dir, models, modes=MODES) -> tuple[dict, list[Path]]:
    """({(model, mode): run directory} of the finished runs, [directories not (yet) finished])."""
    found, missing = {}, []
    for name in models:
        for mode in modes:
            run_dir = Path(runs_dir) / f"{name}-{mode}"
            if runs.is_finished(run_dir):
                found[(name, mode)] = run_dir
            else:
                missing.append(run_dir)
    return found, missing


def _split(data: Dataset, split: str):
    if split == "test":
        return data.test_images, data.test_labels, data.test_records
    if split == "train":
        return data.train_images, data.train_labels, data.train_records
    raise UserError(f"split {split!r} is not one of train, test; pass --split train or --split test.")


def pick_images(records, labels, seed: int, per_class: int = 1, filenames=None) -> list[int]:
    """Indices into the split: the given file names in their order, or else
    ``per_class`` images of every class present, drawn from ``seed``, by class index."""
    if filenames:
        index = {r.filename: i for i, r in enumerate(records)}
        for name in filenames:
            if name not in index:
                example = f" (e.g. {records[0].filename})" if records else ""
                raise UserError(f"image {name!r} is not in this split; pass a file name as its "
                                f"split file lists it{example}.")
        return [index[name] for name in filenames]
    if per_class < 1:
        raise UserError(f"per_class must be at least 1, got {per_class}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(derive_seed(seed, "gradcam-images"))
    picked = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        picked += sorted(int(i) for i in rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return picked


def class_slug(name: str) -> str:
    """'COVID-19' -> 'covid19': for file names."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def figure_stem(label: int, classes) -> str:
    """fig6_gradcam_pneumonia, fig7_gradcam_normal, fig8_gradcam_covid19."""
    return f"fig{FIRST_FIGURE + label}_gradcam_{class_slug(classes[label])}"


# ---------------------------------------------------------------- figures


def save_figure(fig: Figure, path) -> Path:
    """Write a figure atomically; the suffix picks the format."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot write a figure as {path.name}; use a .png or .pdf file name.")
    return write_figure(fig, path)


def _caption(panel: Panel, classes) -> str:
    return f"pred {classes[panel.predicted]} ({panel.probability:.2f})"


def _show(ax, panel: Panel, classes, caption: str | None = None) -> None:
    ax.imshow(overlay(panel.image, panel.cam))
    if panel.mask is not None and panel.mask.any():
        ax.contour(panel.mask, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(caption or _caption(panel, classes), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def gradcam_figure(panels: dict, models, modes=MODES, classes=CLASSES, title: str = "") -> Figure:
    """The paper's layout: columns = models, rows = with FL / without FL.

    panels: {(model, mode): Panel}; a missing one shows as 'not trained'.
    Each panel is captioned with the predicted class and its probability.
    """
    fig = Figure(figsize=(2.4 * len(models) + 0.6, 2.6 * len(modes) + 0.9), layout="constrained")
    axes = fig.subplots(len(modes), len(models), squeeze=False)
    for r, mode in enumerate(modes):
        for c, name in enumerate(models):
            ax = axes[r][c]
            panel = panels.get((name, mode))
            header = f"{DISPLAY_NAMES.get(name, name)}\n" if r == 0 else ""
            if panel is None:
                ax.text(0.5, 0.5, "not trained", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(header + "-", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                _show(ax, panel, classes, header + _caption(panel, classes))
            if c == 0:
                ax.set_ylabel(ROW_TITLES.get(mode, mode), fontsize=10)
    fig.suptitle(title, fontsize=10)
    return fig


def paper_figures(run_dirs: dict, models, figures_dir, seed: int = 0, filenames=None,
                  split: str = "test", device: str = "auto") -> dict[str, Figure]:
    """The paper's Figures 6-8: one figure per chosen image (one per class by
    default), written as ``<stem>.png`` and ``<stem>.pdf`` in figures_dir.

    run_dirs: {(model, mode): run directory} of finished runs (see find_runs).
    Returns {stem: Figure}; nothing when run_dirs is empty.
    """
    if not run_dirs:
        return {}
    first = _read_config(Path(next(iter(run_dirs.values()))))
    data = load_dataset(first, progress=False)
    _, labels, records = _split(data, split)
    chosen = [records[i] for i in pick_images(records, labels, seed, filenames=filenames)]

    panels: dict[str, dict] = {r.filename: {} for r in chosen}
    profiles, train_seeds = set(), set()
    for (name, mode), run_dir in run_dirs.items():
        model, cfg, _ = load_run(run_dir, device)
        profiles.add(cfg.profile)
        train_seeds.add(cfg.seed)
        run_data = load_dataset(cfg, progress=False)
        images, _, run_records = _split(run_data, split)
        idx = pick_images(run_records, labels, seed, filenames=[r.filename for r in chosen])
        for record, panel in zip(chosen, explain_images(model, name, images[idx], cfg.image_size),
                                 strict=True):
            if run_data.synthetic and run_data.classes[record.label] != "normal":
                panel.mask = resize_mask(load_mask(run_data.root, split, record.filename), cfg.image_size)
            panels[record.filename][(name, mode)] = panel
        del model

    figures = {}
    per_label = np.bincount([r.label for r in chosen], minlength=len(data.classes))
    for record in chosen:
        lesion = data.synthetic and data.classes[record.label] != "normal"
        outline = "; white outline: true lesion" if lesion else ""
        stem = figure_stem(record.label, data.classes)
        if per_label[record.label] > 1:
            stem += "_" + class_slug(Path(record.filename).stem)
        title = (f"Grad-CAM++ of {split} image {record.filename} (true class: "
                 f"{data.classes[record.label]}){outline}\n{data.description}; profile "
                 f"{'/'.join(sorted(profiles))}, training seed {'/'.join(map(str, sorted(train_seeds)))}, "
                 f"image seed {seed}")
        fig = gradcam_figure(panels[record.filename], models, classes=data.classes, title=title)
        for suffix in (".png", ".pdf"):
            save_figure(fig, Path(figures_dir) / f"{stem}{suffix}")
        figures[stem] = fig
    return figures


def explain_run(run_dir, images=None, out=None, split: str = "test", seed: int = 0,
                device: str = "auto") -> Path:
    """Grad-CAM++ of one run (``fedlib explain``): each chosen image above its map,
    captioned with the predicted class and probability; returns the written file."""
    run_dir = Path(run_dir)
    model, cfg, _ = load_run(run_dir, device)
    data = load_dataset(cfg, progress=False)
    arrays, labels, records = _split(data, split)
    idx = pick_images(records, labels, seed, filenames=images)
    panels = explain_images(model, cfg.model, arrays[idx], cfg.image_size)

    fig = Figure(figsize=(2.4 * len(idx) + 0.4, 5.6), layout="constrained")
    axes = fig.subplots(2, len(idx), squeeze=False)
    for c, (i, panel) in enumerate(zip(idx, panels, strict=True)):
        record = records[i]
        if data.synthetic and data.classes[record.label] != "normal":
            panel.mask = resize_mask(load_mask(data.root, split, record.filename), cfg.image_size)
        axes[0][c].imshow(panel.image)
        axes[0][c].set_title(f"{record.filename}\ntrue {data.classes[record.label]}", fontsize=9)
        axes[0][c].set_xticks([])
        axes[0][c].set_yticks([])
        _show(axes[1][c], panel, data.classes)
    outline = " (white outline: true lesion)" if data.synthetic else ""
    fig.suptitle(f"Grad-CAM++ of {DISPLAY_NAMES[cfg.model]}, {ROW_TITLES.get(cfg.mode, cfg.mode)}"
                 f"{outline}\n{data.description}; profile {cfg.profile}, training seed {cfg.seed}, "
                 f"image seed {seed}", fontsize=10)
    return save_figure(fig, Path(out) if out is not None else run_dir / "gradcam.png")
