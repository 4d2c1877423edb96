"""Grad-CAM++ maps of trained runs: the paper's Figures 6-8, and how well the
maps fall on the lesion (beyond the paper).

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

Localisation (synthetic data only: they come with lesion masks) is scored on
the native grid, where the map is defined, never on the upsampled picture:
- the lesion mask is pooled to the grid: each cell gets the fraction of its
  pixels on the lesion (adaptive average pooling, ``pool_mask``);
- energy share: sum(map x cell fraction) / sum(map), the share of the map's
  mass on lesion pixels if each cell's value is spread evenly over its pixels;
- pointing game: a hit when the map's highest cell touches the lesion (cell
  fraction > 0). A tie -- several cells within a relative ``TIE_TOL`` of the
  maximum, as an all-zero map has -- scores the share of the tied cells that
  touch the lesion (the expected hit of breaking the tie at random), and the
  table reports how often ties happened (tie_rate);
- chance, on the same grid: a uniform map (or one with i.i.d. random cells).
  Its energy share is the mean cell fraction (the lesion's area share) and
  its pointing hit the share of cells that touch the lesion (a uniformly
  random maximal cell). A map beats chance when its numbers exceed these.

Runs are found and their models loaded with ``fedlib.results``
(``<model>-<mode>-seed<seed>``, ``Run.load_model``); one report reads runs of
one data set, profile and image size.

Figures are built on ``matplotlib.figure.Figure`` (not pyplot), so nothing is
kept open between calls; a notebook shows them with ``display(fig)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from . import results
from .data.covidx import CLASSES
from .data.resolve import Dataset, load_dataset
from .data.synthetic import load_mask
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_batch
from .errors import UserError
from .models import DISPLAY_NAMES
from .models.registry import MIN_CAM_GRID, pick_cam_layer
from .plots import save_table, write_figure
from .train import derive_seed

MODES = ("fedavg", "central")  # the paper's two rows: trained with FL, and without (pooled)
ROW_TITLES = {"fedavg": "with FL (FedAvg)", "central": "without FL (pooled)", "local": "local only"}
FIRST_FIGURE = 6  # the paper's Figures 6, 7, 8: one per class, in the authors' class order
TABLE_STEM = "table_gradcam_localisation"
CAM_BATCH = 16  # images per Grad-CAM++ pass: small enough for COVID-Net on a laptop
TIE_TOL = 1e-6  # cells within this share of the maximum tie for it
TABLE_COLUMNS = [
    "model",
    "display_name",
    "mode",
    "seed",
    "layer",
    "grid",
    "images",
    "hit_rate",
    "chance_hit_rate",
    "energy_share",
    "chance_energy_share",
    "tie_rate",
]
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


# ---------------------------------------------------------------- maps


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


# ---------------------------------------------------------------- localisation


def pool_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The fraction of each grid cell's pixels that are lesion: float64 (rows, cols).

    Cell (i, j) covers pixel rows floor(i H / rows) .. ceil((i + 1) H / rows) - 1
    and likewise for columns (adaptive average pooling): disjoint equal blocks
    when the size divides, overlapping by a pixel where it does not.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    rows, cols = (int(g) for g in grid)
    if not (1 <= rows <= mask.shape[0] and 1 <= cols <= mask.shape[1]):
        raise ValueError(f"cannot pool a {mask.shape} mask to a {rows}x{cols} grid")
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float64))[None, None], (rows, cols))
    return pooled[0, 0].numpy()


def _check_pair(cam: np.ndarray, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, coverage = np.asarray(cam, dtype=np.float64), np.asarray(coverage, dtype=np.float64)
    if cam.shape != coverage.shape:
        raise ValueError(f"map {cam.shape} and pooled mask {coverage.shape} differ in shape")
    if (cam < 0).any():
        raise ValueError("a Grad-CAM map is non-negative; got negative cells")
    return cam, coverage


def chance_energy_share(coverage: np.ndarray) -> float:
    """Energy share of a uniform map on this grid: the mean cell fraction (the lesion's area share)."""
    return float(np.mean(coverage))


def chance_hit(coverage: np.ndarray) -> float:
    """Pointing hit of a uniform (or i.i.d. random) map on this grid: the share of cells touching the lesion."""
    return float(np.mean(np.asarray(coverage) > 0))


def energy_share(cam: np.ndarray, coverage: np.ndarray) -> float:
    """sum(cam x coverage) / sum(cam) on the native grid. An all-zero map says
    nothing about where the lesion is, so it scores as the uniform map."""
    cam, coverage = _check_pair(cam, coverage)
    total = cam.sum()
    if total <= 0:
        return chance_energy_share(coverage)
    return float((cam * coverage).sum() / total)


def maxima(cam: np.ndarray, tol: float = TIE_TOL) -> np.ndarray:
    """bool map of the cells within a relative ``tol`` of the maximum (one cell
    unless tied; every cell of an all-zero map)."""
    cam = np.asarray(cam, dtype=np.float64)
    return cam >= cam.max() * (1 - tol)


def pointing_hit(cam: np.ndarray, coverage: np.ndarray) -> float:
    """1.0 if the map's highest cell touches the lesion, else 0.0; with tied
    maxima, the share of them that touch it (an all-zero map: chance)."""
    cam, coverage = _check_pair(cam, coverage)
    return float(np.mean(coverage[maxima(cam)] > 0))


def score_map(cam: np.ndarray, coverage: np.ndarray) -> dict:
    """Every localisation number of one native map against its pooled mask."""
    cam, coverage = _check_pair(cam, coverage)
    return {
        "hit": pointing_hit(cam, coverage),
        "chance_hit": chance_hit(coverage),
        "energy_share": energy_share(cam, coverage),
        "chance_energy_share": chance_energy_share(coverage),
        "tie": bool(maxima(cam).sum() > 1),
    }


def localisation_scores(
    model: nn.Module,
    layer: str | nn.Module,
    images: np.ndarray,
    targets,
    masks: Sequence[np.ndarray],
    image_size: int,
    batch_size: int = CAM_BATCH,
) -> pd.DataFrame:
    """Per image: the native Grad-CAM++ map of ``layer`` for the target class,
    scored against its lesion mask pooled to the map's grid.

    images: cached uint8 (N, S, S, 3); targets: class indices; masks: bool
    lesion masks of the same square images (any resolution). Columns: hit,
    chance_hit, energy_share, chance_energy_share, tie, rows, cols.
    """
    if not (len(images) == len(targets) == len(masks)):
        raise ValueError(f"got {len(images)} images, {len(targets)} targets and {len(masks)} masks")
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(images), batch_size):
        end = start + batch_size
        x = eval_batch(torch.from_numpy(np.ascontiguousarray(images[start:end])).to(device), image_size)
        for cam, mask in zip(
            native_maps(model, layer, x, list(targets[start:end]), batch_size), masks[start:end], strict=True
        ):
            rows.append({**score_map(cam, pool_mask(mask, cam.shape)), "rows": cam.shape[0], "cols": cam.shape[1]})
    return pd.DataFrame(
        rows, columns=["hit", "chance_hit", "energy_share", "chance_energy_share", "tie", "rows", "cols"]
    )


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A square generated mask at the model's input size, for drawing its outline.
    The synthetic images are square, so the cache's centre crop keeps all of
    them and a plain resize matches what the model saw."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img) > 127


def lesion_masks(data: Dataset, split: str) -> dict[int, np.ndarray]:
    """Image index -> lesion mask at the generated resolution, for every image
    of the split with a non-empty lesion (pneumonia and COVID-19)."""
    if not data.synthetic:
        raise UserError(
            f"{data.root} has no lesion masks; localisation needs data made by `fedlib synth` (--data synthetic)."
        )
    out = {}
    for i, record in enumerate(_split(data, split)[2]):
        if data.classes[record.label] == "normal":
            continue
        mask = load_mask(data.root, split, record.filename)
        if mask.any():
            out[i] = mask
    return out


def localisation_table(
    run_list: Iterable,
    split: str = "test",
    device: str = "auto",
    batch_size: int = CAM_BATCH,
    min_grid: int = MIN_CAM_GRID,
) -> pd.DataFrame:
    """One row per run: how much of its native map lies on the lesion, against chance.

    run_list: ``results.Run`` objects (or run directories) of one data set,
    profile and image size. Maps are for the true class, so a wrong prediction
    does not change which evidence is scored; every test image with a lesion
    counts. Columns: ``TABLE_COLUMNS`` (rates are means over the images;
    grid is rows x cols of the map at ``layer``); ``.attrs["caption"]`` says
    what was scored on which data.
    """
    run_list = [_as_run(r) for r in run_list]
    results.check_one_dataset(run_list)
    rows, masks_memo = [], {}
    for run in run_list:
        model, cfg = run.load_model(device), run.train_config
        layer, grid = pick_cam_layer(cfg.model, cfg.image_size, min_grid)
        data = load_dataset(cfg, progress=False)
        key = (str(data.root), split)
        if key not in masks_memo:
            masks_memo[key] = lesion_masks(data, split)
        masks = masks_memo[key]
        images, labels, _ = _split(data, split)
        idx = np.asarray(sorted(masks), dtype=np.int64)
        scores = localisation_scores(
            model, layer, images[idx], labels[idx], [masks[int(i)] for i in idx], cfg.image_size, batch_size
        )
        if len(scores) and not ((scores["rows"] == grid[0]) & (scores["cols"] == grid[1])).all():
            raise RuntimeError(f"{layer} of {cfg.model} gave maps of another size than {grid}")
        mean = scores.drop(columns=["rows", "cols"]).astype(float).mean()
        rows.append(
            {
                "model": cfg.model,
                "display_name": DISPLAY_NAMES[cfg.model],
                "mode": cfg.mode,
                "seed": cfg.seed,
                "layer": layer,
                "grid": f"{grid[0]}x{grid[1]}",
                "images": len(scores),
                "hit_rate": mean["hit"],
                "chance_hit_rate": mean["chance_hit"],
                "energy_share": mean["energy_share"],
                "chance_energy_share": mean["chance_energy_share"],
                "tie_rate": mean["tie"],
            }
        )
        del model
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table.attrs["caption"] = table_caption(run_list, split, min_grid)
    return table


def table_caption(run_list: Sequence, split: str = "test", min_grid: int = MIN_CAM_GRID) -> str:
    """What the localisation table scored, on which data, profile and image size."""
    about = describe_runs(run_list)
    return (
        f"Grad-CAM++ localisation on {about}; {split} images with a lesion, maps for the true class. "
        f"Scored on each map's native grid (grid, at block layer: the latest whose map is at least "
        f"{min_grid}x{min_grid}; the paper's last block at 224 px): the lesion mask is pooled to the "
        "grid (fraction of each cell on the lesion). hit_rate: the highest cell touches the lesion "
        "(tied maxima count the share of them that do; tie_rate: how often the maximum was tied); "
        "energy_share: sum(map x cell fraction) / sum(map). chance_*: a uniform map on the same grid "
        "(hit = share of cells touching the lesion, energy = the lesion's area share)."
    )


def write_table(table: pd.DataFrame, figures_dir, stem: str = TABLE_STEM) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.md`` (caption, numbers to 3 decimals), each written atomically."""
    return save_table(table, figures_dir, stem, digits=3)


# ---------------------------------------------------------------- runs and images


@dataclass
class Selection:
    """The runs one report explains: every chosen (model, mode, seed) that has finished."""

    runs: list[results.Run]  # in the order of ``models``, then ``modes``, then ``seeds``
    seeds: list[int]  # the training seeds asked for, or the first one found
    notes: list[str] = field(default_factory=list)  # one sentence per run that is missing

    @property
    def first_seed(self) -> int | None:
        return self.seeds[0] if self.seeds else None

    @property
    def figure_runs(self) -> dict:
        """{(model, mode): Run} of the first seed: the paper's figures show one training seed."""
        return {(r.model, r.mode): r for r in self.runs if r.seed == self.first_seed}

    @property
    def synthetic(self) -> bool:
        """Whether the runs' data have lesion masks (generated phantoms)."""
        return bool(self.runs) and all(r.final.get("synthetic", False) for r in self.runs)


def select_runs(
    runs_dir, models: Sequence[str], seeds: Sequence[int] | None = None, modes: Sequence[str] = MODES
) -> Selection:
    """The finished runs of ``models`` x ``modes`` x ``seeds`` in runs_dir.

    seeds None: the first (lowest) training seed found. Runs of several data
    sets, profiles or image sizes are refused (``results.check_one_dataset``).
    Two folders holding the same (model, mode, seed): the one named
    ``<model>-<mode>-seed<seed>`` wins, and a note says which was left out.
    """
    found = results.find_runs(runs_dir, models=models, modes=modes, seeds=seeds)
    if seeds is None:
        seeds = [min(r.seed for r in found)] if found else []
    seeds = [int(s) for s in seeds]
    notes: list[str] = []
    if not found:
        notes.append(
            f"no finished runs of {', '.join(models)} in {runs_dir}: nothing to explain; "
            "train them with `fedlib reproduce`."
        )
    groups: dict[tuple, list[results.Run]] = {}
    for run in found:
        groups.setdefault((run.model, run.mode, run.seed), []).append(run)
    ordered = []
    for name in models:
        for mode in modes:
            for seed in seeds:
                key = (name, mode, seed)
                if key not in groups:
                    if found:
                        notes.append(
                            f"{results.run_name(*key)} is not a finished run in {runs_dir}, so "
                            "its panels stay empty and it has no row in the table; train it "
                            "with `fedlib reproduce`."
                        )
                    continue
                group = groups[key]
                best = next((r for r in group if r.path.name == results.run_name(*key)), group[0])
                notes += [
                    f"{other.path} holds the same run as {best.path}; using {best.path}."
                    for other in group
                    if other is not best
                ]
                ordered.append(best)
    results.check_one_dataset(ordered)
    return Selection(ordered, seeds, notes)


def describe_runs(run_list: Sequence) -> str:
    """'<data description>, profile <p>, <s> px input' from the runs' final.json and config.json."""
    if not run_list:
        return "no runs"
    first = _as_run(run_list[0])
    data = first.final.get("data_description") or first.config.get("data", "?")
    return f"{data}, profile {first.config.get('profile', '?')}, {first.config.get('image_size', '?')} px input"


def _as_run(run) -> results.Run:
    return run if isinstance(run, results.Run) else results.load_run(run)


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
                raise UserError(
                    f"image {name!r} is not in this split; pass a file name as its split file lists it{example}."
                )
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
    run_map: dict, models, figures_dir, seed: int | None = 0, filenames=None, split: str = "test", device: str = "auto"
) -> dict[str, Figure]:
    """The paper's Figures 6-8: one figure per chosen image (one per class by
    default, drawn from ``seed``), written as ``<stem>.png`` and ``<stem>.pdf``
    in figures_dir.

    run_map: {(model, mode): Run or run directory} of finished runs of one
    data set (``Selection.figure_runs``). Returns {stem: Figure}; nothing when
    run_map is empty.
    """
    if not run_map:
        return {}
    run_map = {key: _as_run(r) for key, r in run_map.items()}
    results.check_one_dataset(list(run_map.values()))
    seed = 0 if seed is None else int(seed)
    data = load_dataset(next(iter(run_map.values())).train_config, progress=False)
    _, labels, records = _split(data, split)
    chosen = [records[i] for i in pick_images(records, labels, seed, filenames=filenames)]

    panels: dict[str, dict] = {r.filename: {} for r in chosen}
    train_seeds = set()
    for (name, mode), run in run_map.items():
        model, cfg = run.load_model(device), run.train_config
        train_seeds.add(cfg.seed)
        run_data = load_dataset(cfg, progress=False)
        images, _, run_records = _split(run_data, split)
        idx = pick_images(run_records, labels, seed, filenames=[r.filename for r in chosen])
        for record, panel in zip(chosen, explain_images(model, name, images[idx], cfg.image_size), strict=True):
            if run_data.synthetic and run_data.classes[record.label] != "normal":
                panel.mask = resize_mask(load_mask(run_data.root, split, record.filename), cfg.image_size)
            panels[record.filename][(name, mode)] = panel
        del model

    about = describe_runs(list(run_map.values()))
    figures = {}
    per_label = np.bincount([r.label for r in chosen], minlength=len(data.classes))
    for record in chosen:
        lesion = data.synthetic and data.classes[record.label] != "normal"
        outline = "; white outline: true lesion" if lesion else ""
        stem = figure_stem(record.label, data.classes)
        if per_label[record.label] > 1:
            stem += "_" + class_slug(Path(record.filename).stem)
        title = (
            f"Grad-CAM++ of {split} image {record.filename} (true class: "
            f"{data.classes[record.label]}){outline}\n{about}; training seed "
            f"{'/'.join(map(str, sorted(train_seeds)))}, image seed {seed}\n{LAYER_RULE}"
        )
        fig = gradcam_figure(panels[record.filename], models, classes=data.classes, title=title)
        for suffix in (".png", ".pdf"):
            save_figure(fig, Path(figures_dir) / f"{stem}{suffix}")
        figures[stem] = fig
    return figures


def explain_run(run_dir, images=None, out=None, split: str = "test", seed: int = 0, device: str = "auto") -> Path:
    """Grad-CAM++ of one run (``fedlib explain``): each chosen image above its map,
    captioned with the predicted class and probability; returns the written file."""
    run = results.load_run(run_dir)
    model, cfg = run.load_model(device), run.train_config
    data = load_dataset(cfg, progress=False)
    arrays, labels, records = _split(data, split)
    idx = pick_images(records, labels, seed, filenames=images)
    panels = explain_images(model, cfg.model, arrays[idx], cfg.image_size)

    fig = Figure(figsize=(2.4 * len(idx) + 0.4, 5.8), layout="constrained")
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
    block = _layer_note(panels[0]) if panels else pick_cam_layer(cfg.model, cfg.image_size)[0]
    about = run.final.get("data_description") or data.description
    fig.suptitle(
        f"Grad-CAM++ of {DISPLAY_NAMES[cfg.model]}, {ROW_TITLES.get(cfg.mode, cfg.mode)}"
        f"{outline}\n{about}, profile {cfg.profile}, {cfg.image_size} px input; training seed "
        f"{cfg.seed}, image seed {seed}\nblock {block} ({LAYER_RULE})",
        fontsize=10,
    )
    return save_figure(fig, Path(out) if out is not None else run.path / "gradcam.png")
