"""How well Grad-CAM++ maps fall on the lesion (beyond the paper).

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data.resolve import Dataset, load_dataset
from ..data.synthetic import load_mask
from ..data.transforms import eval_batch
from ..errors import UserError
from ..models import DISPLAY_NAMES
from ..models.registry import MIN_CAM_GRID, pick_cam_layer
from ..run import results
from .describe import describe_runs
from .gradcam import CAM_BATCH, native_maps
from .selection import as_run, split_arrays

TABLE_STEM = "table_gradcam_localisation"
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
SCORE_COLUMNS = ["hit", "chance_hit", "energy_share", "chance_energy_share", "tie", "rows", "cols"]


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
) -> pd.DataFrame:
    """Per image: the native Grad-CAM++ map of ``layer`` for the target class,
    scored against its lesion mask pooled to the map's grid; all images in one
    Grad-CAM++ pass (``localisation_table`` hands them over ``CAM_BATCH`` at a time).

    images: cached uint8 (N, S, S, 3); targets: class indices; masks: bool
    lesion masks of the same square images (any resolution). Columns: hit,
    chance_hit, energy_share, chance_energy_share, tie, rows, cols.
    """
    if not (len(images) == len(targets) == len(masks)):
        raise ValueError(f"got {len(images)} images, {len(targets)} targets and {len(masks)} masks")
    if not len(images):
        return pd.DataFrame(columns=SCORE_COLUMNS)
    device = next(model.parameters()).device
    x = eval_batch(torch.from_numpy(np.ascontiguousarray(images)).to(device), image_size)
    rows = [
        {**score_map(cam, pool_mask(mask, cam.shape)), "rows": cam.shape[0], "cols": cam.shape[1]}
        for cam, mask in zip(native_maps(model, layer, x, list(targets), len(x)), masks, strict=True)
    ]
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def lesion_masks(data: Dataset, split: str) -> dict[int, np.ndarray]:
    """Image index -> lesion mask at the generated resolution, for every image
    of the split with a non-empty lesion (pneumonia and COVID-19)."""
    if not data.synthetic:
        raise UserError(
            f"{data.root} has no lesion masks; localisation needs data made by `fedlib synth` (--data synthetic)."
        )
    out = {}
    for i, record in enumerate(split_arrays(data, split)[2]):
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
    run_list = [as_run(r) for r in run_list]
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
        images, labels, _ = split_arrays(data, split)
        idx = np.asarray(sorted(masks), dtype=np.int64)
        scores = pd.concat(
            [
                localisation_scores(
                    model, layer, images[part], labels[part], [masks[int(i)] for i in part], cfg.image_size
                )
                for part in (idx[start : start + batch_size] for start in range(0, len(idx), batch_size))
            ]
            or [pd.DataFrame(columns=SCORE_COLUMNS)],
            ignore_index=True,
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
    table.attrs["digits"] = 3  # io.save_table: numbers to 3 decimals in the Markdown table
    return table


def table_caption(run_list: Sequence, split: str = "test", min_grid: int = MIN_CAM_GRID) -> str:
    """What the localisation table scored, on which data, profile and image size."""
    about = describe_runs(run_list, compact=True)
    return (
        f"Grad-CAM++ localisation on {about}; {split} images with a lesion, maps for the true class. "
        f"Scored on each map's native grid (grid, at block layer: the latest whose map is at least "
        f"{min_grid}x{min_grid}; the paper's last block at 224 px): the lesion mask is pooled to the "
        "grid (fraction of each cell on the lesion). hit_rate: the highest cell touches the lesion "
        "(tied maxima count the share of them that do; tie_rate: how often the maximum was tied); "
        "energy_share: sum(map x cell fraction) / sum(map). chance_*: a uniform map on the same grid "
        "(hit = share of cells touching the lesion, energy = the lesion's area share)."
    )
