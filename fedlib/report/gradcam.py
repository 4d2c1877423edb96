"""Grad-CAM++ maps of trained runs and the paper's Figures 6-8.

Maps. pytorch-grad-cam's ``GradCAMPlusPlus`` at one block per model, its
ReLU'd map shifted and scaled per image to [0, 1]. The library resizes each
map to the input (``BaseCAM.get_target_width_height`` feeds
``scale_cam_image``); here that size is None, so the map comes back on the
block's own grid (the *native* map). The figures show it upsampled
bilinearly, as the library would have returned it; the scores use the native
map. One difference: the library divides by max + 1e-7, which leaves maps of
small magnitude (earlier blocks have small gradients) nearly black; here each
map is scaled to a maximum of 1 (same shape; an all-zero map stays zero).

Which block (deviation from the paper). The paper explains the last
convolutional block at 224 px, where its map is 7x7. At the quick profile's
64 px that map is 2x2: scaled to [0, 1] and upsampled, its maximum is a 16x16
block in an image corner, whatever the model learnt. So the target is the
latest block whose map is at least 7x7 (``registry.pick_cam_layer``): the
last block at 224 px (the paper's choice, unchanged), an earlier one with an
8x8 map at 64 px (ResNets: layer2; MobileNet-v2: the expansion conv of
block 7, features.7.conv.0; COVID-Net: its second PEPX stage). Candidates
have non-negative outputs, as the last blocks do (``registry.cam_candidates``).
The figures' column headers and the table name the block and its grid.

How well the maps fall on the lesion is scored in ``fedlib.report.localisation``. Runs are
found and their models loaded with ``fedlib.run.results`` (``Run.load_model``); which runs and
images are explained is ``fedlib.report.selection``'s choice. Figures are built on
``matplotlib.figure.Figure`` (not pyplot), so nothing is kept open between calls; a notebook
shows them with ``display(fig)`` and writes them with ``fedlib.report.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..data.covidx import CLASSES
from ..data.resolve import load_dataset
from ..data.synthetic import load_mask
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_batch
from ..models import DISPLAY_NAMES
from ..models.registry import MIN_CAM_GRID, pick_cam_layer
from ..run import results
from .describe import describe_runs
from .selection import MODES, as_run, pick_images, split_arrays

ROW_TITLES = {"fedavg": "with FL (FedAvg)", "central": "without FL (pooled)", "local": "local only"}
FIRST_FIGURE = 6  # the paper's Figures 6, 7, 8: one per class, in the authors' class order
CAM_BATCH = 16  # images per Grad-CAM++ pass: small enough for COVID-Net on a laptop
LAYER_RULE = (
    f"Grad-CAM++ at the latest block whose map is at least {MIN_CAM_GRID}x{MIN_CAM_GRID} "
    "(the paper's last block at 224 px)"
)


@dataclass
class Panel:
    """One image as one model saw and explained it."""

    image: np.ndarray  # uint8 (H, W, 3), the model's input de-normalised
    cam: np.ndarray  # float32 (H, W) in [0, 1]: the native map upsampled as the library does
    predicted: int  # class index
    probability: float  # softmax probability of the predicted class
    mask: np.ndarray | None = None  # bool (H, W) lesion, synthetic data only
    native: np.ndarray | None = None  # float32 (rows, cols) in [0, 1]: the map on the block's grid
    layer: str = ""  # the block explained (a dotted module path)


class NativeGradCAMPlusPlus(GradCAMPlusPlus):
    """pytorch-grad-cam's Grad-CAM++, without the resize to the input size.

    ``BaseCAM.compute_cam_per_layer`` calls ``scale_cam_image(cam, target_size)``
    with ``target_size = self.get_target_width_height(input)``; with None it
    only shifts and scales each ReLU'd map: ``(cam - min) / (max - min + 1e-7)``.
    The 1e-7 squashes maps of small magnitude (earlier blocks have small
    gradients) towards 0 without changing their shape, so each map is scaled
    once more to a maximum of 1 (an all-zero map stays zero). With one target
    layer ``aggregate_multi_layers`` only scales, so it is skipped.
    Weights, activations and the ReLU are the library's.
    """

    def get_target_width_height(self, input_tensor):
        return None

    def aggregate_multi_layers(self, cam_per_target_layer):
        if len(cam_per_target_layer) != 1:
            raise ValueError("NativeGradCAMPlusPlus explains one target layer")
        maps = cam_per_target_layer[0][:, 0]
        peak = maps.max(axis=(1, 2), keepdims=True)
        return np.where(peak > 0, maps / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = CAM_BATCH) -> np.ndarray:
    """Softmax probabilities (N, classes) in eval mode; the model's mode is left as found."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [
                torch.softmax(model(images[i : i + batch_size].to(device)).float(), dim=1).cpu()
                for i in range(0, len(images), batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def native_maps(
    model: nn.Module, layer: str | nn.Module, images: torch.Tensor, targets=None, batch_size: int = CAM_BATCH
) -> np.ndarray:
    """Grad-CAM++ maps (N, rows, cols) on ``layer``'s own grid, float32 in [0, 1]:
    the ReLU'd map shifted and scaled per image to min 0 and max 1 (all zero if
    the ReLU left nothing).

    layer: a dotted module path (``model.get_submodule``) or the module.
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
    module = model.get_submodule(layer) if isinstance(layer, str) else layer
    params = list(model.parameters())
    device = params[0].device
    was_training = model.training
    saved = [(p.requires_grad, p.grad) for p in params]
    cam = NativeGradCAMPlusPlus(model=model, target_layers=[module])  # sets eval mode
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
                chosen = (
                    None
                    if targets is None
                    else [ClassifierOutputTarget(int(c)) for c in targets[start : start + batch_size]]
                )
                maps.append(cam(input_tensor=x, targets=chosen))
    finally:
        # Not `with cam:` -- its __exit__ swallows IndexError, which would hide a bug.
        cam.activations_and_grads.release()
        model.train(was_training)
        for p, (flag, grad) in zip(params, saved, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    if not maps:
        return np.zeros((0, 0, 0), np.float32)
    return np.concatenate(maps).astype(np.float32, copy=False)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Native maps (N, rows, cols) at the input size (N, height, width), as
    ``GradCAMPlusPlus`` would return them: bilinearly resized (cv2, as
    ``scale_cam_image``), then scaled to [0, 1] (its ``aggregate_multi_layers``).
    Up to the scale of maps of small magnitude (see ``NativeGradCAMPlusPlus``),
    that is the library's output."""
    if len(maps) == 0:
        return np.zeros((0, height, width), np.float32)
    resized = np.stack([cv2.resize(np.float32(m), (width, height)) for m in maps])
    return scale_cam_image(np.maximum(resized, 0))


def gradcam_maps(
    model: nn.Module,
    name: str,
    images: torch.Tensor,
    targets=None,
    batch_size: int = CAM_BATCH,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM++ maps (N, H, W), float32 in [0, 1], at the input's resolution.

    layer: the block to explain; None picks it for the input size
    (``pick_cam_layer``). See ``native_maps`` for the other arguments.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    layer = layer or pick_cam_layer(name, images.shape[-1])[0]
    return upsample(native_maps(model, layer, images, targets, batch_size), *images.shape[-2:])


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
    return show_cam_on_image(
        image.astype(np.float32) / 255, np.clip(cam, 0, 1), use_rgb=True, image_weight=image_weight
    )


def explain_images(
    model: nn.Module, name: str, images: np.ndarray, image_size: int, targets=None, layer: str | None = None
) -> list[Panel]:
    """Panels for cached uint8 images (N, S, S, 3): the test view, its map and the prediction.

    layer: the block to explain; None picks it for ``image_size`` (``pick_cam_layer``).
    """
    layer = layer or pick_cam_layer(name, image_size)[0]
    device = next(model.parameters()).device
    x = eval_batch(torch.from_numpy(np.ascontiguousarray(images)).to(device), image_size)
    probs = predict_proba(model, x)
    native = native_maps(model, layer, x, targets)
    cams = upsample(native, image_size, image_size)
    shown = denormalize(x)
    return [
        Panel(shown[i], cams[i], int(probs[i].argmax()), float(probs[i].max()), native=native[i], layer=layer)
        for i in range(len(shown))
    ]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A square generated mask at the model's input size, for drawing its outline.
    The synthetic images are square, so the cache's centre crop keeps all of
    them and a plain resize matches what the model saw."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img) > 127


def _has_lesion(data, split: str, record) -> bool:
    """A synthetic image with a drawn lesion (pneumonia and COVID-19; in the binary task the
    negative class holds both pneumonia and normal images, so the mask decides)."""
    if not data.synthetic or data.classes[record.label] == "normal":
        return False
    return data.task != "binary" or bool(load_mask(data.root, split, record.filename).any())


def class_slug(name: str) -> str:
    """'COVID-19' -> 'covid19': for file names."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def figure_stem(label: int, classes) -> str:
    """fig6_gradcam_pneumonia, fig7_gradcam_normal, fig8_gradcam_covid19."""
    return f"fig{FIRST_FIGURE + label}_gradcam_{class_slug(classes[label])}"


def _caption(panel: Panel, classes) -> str:
    return f"pred {classes[panel.predicted]} ({panel.probability:.2f})"


def _layer_note(panel: Panel) -> str:
    if panel.native is None:
        return panel.layer
    return f"{panel.layer}, {panel.native.shape[0]}x{panel.native.shape[1]} map"


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
    Each panel is captioned with the predicted class and its probability; the
    column header names the model and the block explained, with its grid.
    """
    fig = Figure(figsize=(2.4 * len(models) + 0.6, 2.6 * len(modes) + 1.1), layout="constrained")
    axes = fig.subplots(len(modes), len(models), squeeze=False)
    for r, mode in enumerate(modes):
        for c, name in enumerate(models):
            ax = axes[r][c]
            panel = panels.get((name, mode))
            header = ""
            if r == 0:
                first = next((panels[(name, m)] for m in modes if (name, m) in panels), None)
                block = f"\n{_layer_note(first)}" if first is not None and first.layer else ""
                header = f"{DISPLAY_NAMES.get(name, name)}{block}\n"
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


def paper_figures(
    run_map: dict, models, seed: int | None = 0, filenames=None, split: str = "test", device: str = "auto"
) -> dict[str, Figure]:
    """The paper's Figures 6-8: one figure per chosen image (one per class by
    default, drawn from ``seed``), named by its file stem (``figure_stem``);
    ``fedlib.report.io.save_figure`` writes each as ``<stem>.png`` and ``<stem>.pdf``.

    run_map: {(model, mode): Run or run directory} of finished runs of one
    data set (``Selection.figure_runs``). Returns {stem: Figure}; nothing when
    run_map is empty.
    """
    if not run_map:
        return {}
    run_map = {key: as_run(r) for key, r in run_map.items()}
    results.check_one_dataset(list(run_map.values()))
    seed = 0 if seed is None else int(seed)
    data = load_dataset(next(iter(run_map.values())).train_config, progress=False)
    _, labels, records = split_arrays(data, split)
    chosen = [records[i] for i in pick_images(records, labels, seed, filenames=filenames)]

    panels: dict[str, dict] = {r.filename: {} for r in chosen}
    train_seeds = set()
    for (name, mode), run in run_map.items():
        model, cfg = run.load_model(device), run.train_config
        train_seeds.add(cfg.seed)
        run_data = load_dataset(cfg, progress=False)
        images, _, run_records = split_arrays(run_data, split)
        idx = pick_images(run_records, labels, seed, filenames=[r.filename for r in chosen])
        for record, panel in zip(chosen, explain_images(model, name, images[idx], cfg.image_size), strict=True):
            if _has_lesion(run_data, split, record):
                panel.mask = resize_mask(load_mask(run_data.root, split, record.filename), cfg.image_size)
            panels[record.filename][(name, mode)] = panel
        del model

    about = describe_runs(list(run_map.values()), compact=True)
    figures = {}
    per_label = np.bincount([r.label for r in chosen], minlength=len(data.classes))
    for record in chosen:
        lesion = _has_lesion(data, split, record)
        outline = "; white outline: true lesion" if lesion else ""
        stem = figure_stem(record.label, data.classes)
        if per_label[record.label] > 1:
            stem += "_" + class_slug(Path(record.filename).stem)
        title = (
            f"Grad-CAM++ of {split} image {record.filename} (true class: "
            f"{data.classes[record.label]}){outline}\n{about}; training seed "
            f"{'/'.join(map(str, sorted(train_seeds)))}, image seed {seed}\n{LAYER_RULE}"
        )
        figures[stem] = gradcam_figure(panels[record.filename], models, classes=data.classes, title=title)
    return figures


def run_figure(run_dir, images=None, split: str = "test", seed: int = 0, device: str = "auto") -> Figure:
    """Grad-CAM++ of one run (``fedlib explain``): each chosen image above its map,
    captioned with the predicted class and probability."""
    run = results.load_run(run_dir)
    model, cfg = run.load_model(device), run.train_config
    data = load_dataset(cfg, progress=False)
    arrays, labels, records = split_arrays(data, split)
    idx = pick_images(records, labels, seed, filenames=images)
    panels = explain_images(model, cfg.model, arrays[idx], cfg.image_size)

    fig = Figure(figsize=(2.4 * len(idx) + 0.4, 5.8), layout="constrained")
    axes = fig.subplots(2, len(idx), squeeze=False)
    for c, (i, panel) in enumerate(zip(idx, panels, strict=True)):
        record = records[i]
        if _has_lesion(data, split, record):
            panel.mask = resize_mask(load_mask(data.root, split, record.filename), cfg.image_size)
        axes[0][c].imshow(panel.image)
        axes[0][c].set_title(f"{record.filename}\ntrue {data.classes[record.label]}", fontsize=9)
        axes[0][c].set_xticks([])
        axes[0][c].set_yticks([])
        _show(axes[1][c], panel, data.classes)
    outline = " (white outline: true lesion)" if data.synthetic else ""
    block = _layer_note(panels[0]) if panels else pick_cam_layer(cfg.model, cfg.image_size)[0]
    about = run.final.get("data_description") or data.description
    fig.suptitle(
        f"Grad-CAM++ of {DISPLAY_NAMES[cfg.model]}, {ROW_TITLES.get(cfg.mode, cfg.mode)}"
        f"{outline}\n{about}, profile {cfg.profile}, {cfg.image_size} px input; training seed "
        f"{cfg.seed}, image seed {seed}\nblock {block} ({LAYER_RULE})",
        fontsize=10,
    )
    return fig
