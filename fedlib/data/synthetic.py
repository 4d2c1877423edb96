"""Procedural chest X-ray phantoms in the COVIDx folder format.

No real COVIDx can be downloaded here, so the whole project runs on these by
default. Each image is a PA-view phantom (body, lungs, ribs, heart, spine,
diaphragm) with randomised anatomy; pneumonia adds dense, mostly one-sided
consolidation and COVID-19 adds faint bilateral, peripheral, lower-zone
ground-glass patches. Lesion masks are written beside the images so that
Grad-CAM maps can be scored against where the lesion really is.

Sources play the hospitals: each has its own exposure, gamma, noise, tilt,
burned-in corner marker and class mix, so partitioning by source is non-IID in
both appearance and labels. The marker depends on the source only, never on
the label.

Everything is a pure function of the config: each image draws from its own
generator seeded by (seed, split, index), so a Pool of workers writes
byte-identical files to a single process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fedlib.errors import UserError

LABELS = ("normal", "pneumonia", "COVID-19")
SPLITS = ("train", "test")

# COVIDx v3 training-set counts (FACTS.md): normal, pneumonia, COVID-19.
COVIDX_V3_TRAIN = (7966, 5451, 286)
CLASS_MIXES = {
    "balanced": (1 / 3, 1 / 3, 1 / 3),
    "covidx": tuple(n / sum(COVIDX_V3_TRAIN) for n in COVIDX_V3_TRAIN),
}


@dataclass(frozen=True)
class SynthConfig:
    n_train: int = 1600  # about what the quick profile trains on in minutes on a 2-core CPU
    n_test: int = 400  # 20% held out, enough for per-class sensitivity to move in steps of ~1%
    size: int = 256  # loaders downsample to 64 (quick) or resize to 224 (paper); 256 serves both
    seed: int = 0  # same seed, same bytes: runs can be compared across machines
    sources: int = 4  # hospitals for by-source partitions; 4 gives each corner its own marker
    class_mix: str = "balanced"  # "balanced" (1/3 each) or "covidx" (v3 train shares, 2% COVID-19)
    source_skew: float = 2.0  # Dirichlet spread of each class over sources; lower = more non-IID


# ---------------------------------------------------------------- rendering


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about size/cells pixels wide.

    Bicubic upsampling of a coarse grid is a cheap stand-in for a Gaussian
    filter and keeps the dependency list to numpy and Pillow.
    """
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def _acquisition(source: int, n_sources: int) -> dict:
    """Fixed look of one source. Sources sit evenly along each axis (exposure,
    gamma, noise, tilt) in an order shuffled per axis, so any two differ."""
    rng = np.random.default_rng([7, n_sources])
    pos = [(int(rng.permutation(n_sources)[source]) + 0.5) / n_sources for _ in range(4)]
    return {
        "offset": -0.08 + 0.16 * pos[0],  # under- to over-exposed
        "gamma": 0.7 * (2.0 ** pos[1]),  # 0.7..1.4: film/detector response
        "noise": 0.01 + 0.04 * pos[2],  # quantum noise, as a fraction of full scale
        "tilt": -3.0 + 6.0 * pos[3],  # degrees; patients stand slightly rotated
        "corner": source % 4,
        "code": source + 1,
    }


def _marker(img: np.ndarray, corner: int, code: int) -> None:
    """Burn a bright box with a 3x3 bit pattern of ``code`` into one corner."""
    size = img.shape[0]
    cell = max(2, size // 48)
    box = 3 * cell + 2
    margin = max(1, size // 32)
    r0 = margin if corner in (0, 1) else size - margin - box
    c0 = margin if corner in (0, 2) else size - margin - box
    img[r0 : r0 + box, c0 : c0 + box] = 250
    for bit in range(9):
        if not (code >> bit) & 1:
            r, c = r0 + 1 + (bit // 3) * cell, c0 + 1 + (bit % 3) * cell
            img[r : r + cell, c : c + cell] = 40


def _blob(grid, centre, radii, angle, wobble) -> np.ndarray:
    """Normalised elliptic radius (1 on the edge) over ``grid`` = (x, y) around ``centre``
    = (cx, cy) with ``radii`` = (rx, ry), with ``wobble`` roughening the edge so lesions are
    not perfect ellipses."""
    (x, y), (cx, cy), (rx, ry) = grid, centre, radii
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    dx, dy = x - cx, y - cy
    u, v = (ca * dx + sa * dy) / rx, (-sa * dx + ca * dy) / ry
    return np.sqrt(u * u + v * v) + wobble


def _lesions(label, rng, x, y, lung_geo, size) -> tuple[np.ndarray, np.ndarray]:
    """Added density and the region counted as lesion, both HxW float."""
    density = np.zeros_like(x)
    region = np.zeros_like(x)
    if label == "normal":
        return density, region
    severity = rng.uniform(0.0, 1.0)  # one draw sets size and contrast: some cases are subtle
    if label == "pneumonia":
        one_sided = rng.uniform() < 0.8
        sides = [int(rng.choice([-1, 1]))] if one_sided else [-1, 1]
        for side in sides:
            cx, cy, w, h = lung_geo[side]
            for _ in range(rng.integers(1, 3)):
                bx = cx + side * rng.uniform(-0.35, 0.45) * w
                by = cy + rng.uniform(-0.35, 0.4) * h
                r = (0.09 + 0.13 * severity) * rng.uniform(0.8, 1.2)
                wobble = 0.15 * _smooth_noise(rng, size, 6)
                rad = _blob((x, y), (bx, by), (r * rng.uniform(0.8, 1.3), r), rng.uniform(0, np.pi), wobble)
                prof = _sigmoid((1.0 - rad) / 0.08)  # fairly sharp edge: consolidation
                contrast = (0.18 + 0.24 * severity) * rng.uniform(0.85, 1.15)
                density = np.maximum(density, contrast * prof)
                region = np.maximum(region, prof)
    else:  # COVID-19: bilateral, peripheral, lower zones, hazy and patchy
        patch = 0.65 + 0.35 * _smooth_noise(rng, size, 10)
        for side in (-1, 1):
            cx, cy, w, h = lung_geo[side]
            for _ in range(rng.integers(2, 4)):
                bx = cx + side * rng.uniform(0.3, 0.75) * w
                by = cy + rng.uniform(0.05, 0.42) * h  # above the diaphragm dome (~0.45-0.6 h)
                r = (0.08 + 0.10 * severity) * rng.uniform(0.8, 1.25)
                radii = (r * rng.uniform(0.6, 1.0), r * rng.uniform(1.0, 1.5))
                rad = _blob((x, y), (bx, by), radii, rng.uniform(-0.4, 0.4), 0.0)
                prof = _sigmoid((1.0 - rad) / 0.25)  # soft edge: ground glass
                contrast = (0.20 + 0.20 * severity) * rng.uniform(0.85, 1.15)
                density = np.maximum(density, contrast * prof * patch)
                region = np.maximum(region, prof)
    return density, region


def render(
    label: str, source: int, rng: np.random.Generator, size: int, n_sources: int
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: uint8 image (HxW) and bool lesion mask (HxW).

    Works in a "density" picture where bright = more attenuation, as on a
    radiograph: air in the lungs is dark, bone and heart are bright.
    """
    if label not in LABELS:
        raise UserError(f"label {label!r} is not one of {LABELS}; use one of those.")
    if not 0 <= source < n_sources:
        raise UserError(f"source {source} is outside 0..{n_sources - 1}; pass a valid source index.")
    acq = _acquisition(source, n_sources)

    # Patient pose: source tilt plus a little per-image jitter, shift and zoom.
    theta = float(np.deg2rad(acq["tilt"] + rng.normal(0.0, 0.7)))  # float: numpy scalars would make float64 arrays
    zoom = rng.uniform(0.93, 1.05)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gx, gy = np.meshgrid(g, g)
    gx, gy = gx * zoom - rng.uniform(-0.04, 0.04), gy * zoom - rng.uniform(-0.03, 0.03)
    cos, sin = math.cos(theta), math.sin(theta)
    x = cos * gx + sin * gy
    y = -sin * gx + cos * gy
    ax = np.abs(x)
    px = 2.0 / size  # one pixel in these units: edges stay about a pixel soft at any size

    # Body: shoulders narrow to the neck at the top; tissue is thickest mid-body.
    half_width = 0.22 + rng.uniform(0.64, 0.74) * _sigmoid((y + 0.72) / 0.07)
    body = _sigmoid((half_width - ax) / max(0.02, 2 * px))
    depth = np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, 1.0))
    dens = body * (0.24 + 0.28 * depth)

    # Spine and mediastinum: a bright central column, vertebrae as faint bands.
    vert_phase = rng.uniform(0, 1)
    dens += body * np.exp(-((x / 0.075) ** 2)) * (0.16 + 0.03 * np.cos(2 * np.pi * (y / 0.11 + vert_phase)))
    dens += body * 0.08 * np.exp(-((x / 0.17) ** 2))

    # Lungs: two tall ellipses cut at the bottom by the diaphragm domes.
    lung_cy = rng.uniform(-0.10, 0.0)
    lung_geo, lungs = {}, np.zeros_like(x)
    for side in (-1, 1):
        cx = side * rng.uniform(0.36, 0.42)
        w, h = rng.uniform(0.27, 0.33), rng.uniform(0.58, 0.66)
        cy = lung_cy + rng.uniform(-0.02, 0.02)
        lung_geo[side] = (cx, cy, w, h)
        r = np.sqrt(((x - cx) / w) ** 2 + ((y - cy) / h) ** 2)
        # Dome peaks a little medial of the lung centre; the costophrenic angle dips laterally.
        dome = cy + h * rng.uniform(0.45, 0.6) + 0.25 * h * ((x - cx + side * 0.05) / w) ** 2
        inside = np.minimum((1.0 - r) * min(w, h), dome - y)
        lungs = np.maximum(lungs, _sigmoid(inside / max(0.012, 1.5 * px)))

    # Heart: on the patient's left, which is the image's right in a PA view.
    hcx, hcy = rng.uniform(0.08, 0.16), lung_cy + rng.uniform(0.30, 0.38)
    hrx, hry = rng.uniform(0.25, 0.32), rng.uniform(0.21, 0.27)
    hr = np.sqrt(((x - hcx) / hrx) ** 2 + ((y - hcy) / hry) ** 2)
    heart = _sigmoid((1.0 - hr) * min(hrx, hry) / max(0.012, 1.5 * px))
    air = lungs * (1.0 - heart)
    dens += 0.10 * heart * body

    # Lung texture: vessels fan out from the hila, plus fine mottling.
    hila = sum(np.exp(-(((x - lung_geo[s][0] + s * 0.12) ** 2) / 0.03 + ((y - lung_cy) ** 2) / 0.06)) for s in (-1, 1))
    texture = 0.05 * hila + 0.015 * _smooth_noise(rng, size, 24) + 0.01 * _smooth_noise(rng, size, 8)
    dens -= air * (0.40 - texture)

    # Ribs: posterior ribs arc down laterally, anterior ribs slope down medially.
    # Both are faint over the heart and confined to a cage around the lungs.
    cage_rx = max(abs(lung_geo[s][0]) + lung_geo[s][2] for s in (-1, 1)) + 0.04
    cage = _sigmoid((1.0 - np.sqrt((x / cage_rx) ** 2 + ((y - lung_cy + 0.03) / 0.66) ** 2)) / 0.05)
    cage = cage * _sigmoid((ax - 0.06) / 0.02)
    spacing = rng.uniform(0.15, 0.19)
    post = (y + 0.10 * ax - 0.55 * ax**2) / spacing + rng.uniform(0, 1)
    ant = (y + 0.45 * ax) / (spacing * 1.3) + rng.uniform(0, 1)
    ribs = ((1 + np.cos(2 * np.pi * post)) / 2) ** 6 + 0.3 * ((1 + np.cos(2 * np.pi * ant)) / 2) ** 8
    dens += 0.10 * ribs * cage * (1.0 - 0.6 * heart)

    # Clavicles: bright bars rising laterally from the top of the sternum.
    clav_y = lung_cy - 0.55 - 0.12 * ax + rng.uniform(-0.03, 0.03)
    clav = np.exp(-(((y - clav_y) / 0.035) ** 2)) * _sigmoid((ax - 0.08) / 0.02) * _sigmoid((0.62 - ax) / 0.03)
    dens += 0.12 * clav * body

    lesion_density, lesion_region = _lesions(label, rng, x, y, lung_geo, size)
    dens += lesion_density * air
    mask = (lesion_region > 0.5) & (air > 0.5)
    if label != "normal" and not mask.any():  # a lesion drawn behind the heart: keep its core
        core = lesion_region * air
        mask = core >= 0.5 * core.max()

    # Acquisition: exposure, detector gamma, noise, then the burned-in marker.
    img = np.clip(dens * 1.25 + 0.05 + acq["offset"] + rng.normal(0.0, 0.02), 0.0, 1.0)
    img = img ** acq["gamma"]
    img = img + rng.normal(0.0, acq["noise"], img.shape).astype(np.float32)
    out = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    _marker(out, acq["corner"], acq["code"])
    return out, mask


# ---------------------------------------------------------------- writing


# Bounds of a SynthConfig. Below 32 px the lungs vanish; above 2048 px (a real
# detector's resolution) an image takes seconds to render and 30 MB of float32
# arrays per worker, for nothing a 224 px model could use.
SIZE_RANGE = (32, 2048)
# COVIDx v9 has about 30,000 train images; ten times that is a typo, not a plan
# (at 256 px it would fill some 20 GB).
MAX_IMAGES = 300_000
# The corner marker encodes source + 1 in a 3x3 bit pattern: 511 codes.
MAX_SOURCES = 511


def _check(cfg: SynthConfig) -> None:
    for name in ("n_train", "n_test"):
        _check_int(name, getattr(cfg, name), 1, MAX_IMAGES, "ask for at least one image, and at most ten times COVIDx")
    _check_int("size", cfg.size, *SIZE_RANGE, "lungs vanish below 32 px, and 2048 is a real detector's resolution")
    _check_int(
        "sources", cfg.sources, 1, MAX_SOURCES, "use 1 for a single hospital (the corner marker encodes at most 511)"
    )
    if cfg.class_mix not in CLASS_MIXES:
        raise UserError(f"class_mix {cfg.class_mix!r} is unknown; use one of {sorted(CLASS_MIXES)}.")
    if not cfg.source_skew > 0:
        raise UserError(f"source_skew must be positive (got {cfg.source_skew}); try 2.0.")


def _check_int(name: str, value, low: int, high: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{name} must be an integer from {low} to {high} (got {value!r}); {why}.")


def _apportion(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to weights (largest remainder)."""
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(int)
    short = n - counts.sum()
    counts.flat[np.argsort(-(exact - counts).ravel(), kind="stable")[:short]] += 1
    return counts


def source_class_shares(cfg: SynthConfig) -> np.ndarray:
    """Joint share of (source, class), shape (sources, 3), summing to 1.

    Each class spreads over the sources by its own Dirichlet draw, so each
    class keeps its overall share exactly while every source gets its own
    class mix and size. Train and test use the same hospitals, hence the same
    shares.
    """
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    spread = rng.dirichlet(np.full(cfg.sources, cfg.source_skew), size=len(LABELS)).T
    return spread * np.asarray(CLASS_MIXES[cfg.class_mix])


def _plan(cfg: SynthConfig, split: int, n: int) -> list[tuple[str, int]]:
    """(label, source) for each image of one split, in a shuffled order."""
    counts = _apportion(source_class_shares(cfg), n)
    items = [(LABELS[c], s) for s in range(cfg.sources) for c in range(len(LABELS)) for _ in range(counts[s, c])]
    order = np.random.default_rng([cfg.seed, split, 0x0DE]).permutation(n)
    return [items[i] for i in order]


def _write_one(job: tuple) -> None:
    root, split, index, name, label, source, seed, size, n_sources = job
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    img, mask = render(label, source, rng, size, n_sources)
    Image.fromarray(img).save(root / split / name)
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / split / name)


def write_synthetic(
    out: str | Path,
    cfg: SynthConfig = SynthConfig(),
    progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
) -> dict:
    """Write a COVIDx-format folder of phantoms at ``out`` and return a summary.

    The folder appears whole or not at all: everything goes into a temporary
    sibling that is renamed into place at the end. ``workers`` defaults to up
    to two processes; the output does not depend on it.
    """
    _check(cfg)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; pass a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output {out} exists and is not empty; pass --overwrite or choose another folder.")
        if not is_synthetic(out):  # its own marker: --overwrite never deletes a folder synth did not write
            raise UserError(
                f"--overwrite replaces only folders written by fedlib synth, and {out} is not one (no "
                "synthetic.json); choose another --out, or move that folder away yourself."
            )
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        jobs, summary = [], {"root": str(out), "counts": {}, "by_source": {}}
        first_id = 0  # patient ids run on across splits, so none is shared by train and test
        for split_code, (split, n) in enumerate(zip(SPLITS, (cfg.n_train, cfg.n_test), strict=True)):
            (tmp / split).mkdir()
            (tmp / "masks" / split).mkdir(parents=True)
            lines = []
            for i, (label, source) in enumerate(_plan(cfg, split_code, n)):
                pid = f"synth-{first_id + i:06d}"
                lines.append(f"{pid} {pid}.png {label} site-{_source_letter(source)}\n")
                jobs.append((tmp, split, i, f"{pid}.png", label, source, cfg.seed, cfg.size, cfg.sources))
            first_id += n
            (tmp / f"{split}_split.txt").write_text("".join(lines))
            summary["counts"][split] = {lab: sum(ln.split()[2] == lab for ln in lines) for lab in LABELS}
            summary["by_source"][split] = {
                f"site-{_source_letter(s)}": {
                    lab: sum(ln.split()[2:] == [lab, f"site-{_source_letter(s)}"] for ln in lines) for lab in LABELS
                }
                for s in range(cfg.sources)
            }

        workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
        if len(jobs) < 64:
            workers = 1  # starting processes costs more than a handful of images
        bar = tqdm(total=len(jobs), desc="synthetic CXR", unit="img", disable=not progress)
        if workers == 1:
            for job in jobs:
                _write_one(job)
                bar.update()
        else:
            with Pool(workers, initializer=_quiet_worker) as pool:
                for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
                    bar.update()
        bar.close()

        meta = {
            "synthetic": True,
            "generator": __name__,
            "config": asdict(cfg),
            "counts": summary["counts"],
        }
        (tmp / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a data folder should read like any other
        if out.exists():  # empty, or overwrite=True: move the old one aside before swapping in
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except OSError as exc:  # a full disk: one line naming the folder (PIL's errors name no file)
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(out)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _source_letter(source: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: names stay single tokens for any count."""
    name = ""
    source += 1
    while source:
        source, rem = divmod(source - 1, 26)
        name = chr(ord("a") + rem) + name
    return name


# ---------------------------------------------------------------- reading


def _quiet_worker() -> None:
    """A forked worker takes the parent's signal handlers (the CLI turns SIGTERM into a clean
    stop); here SIGTERM must simply end it, as Pool.terminate expects, and Ctrl-C is the
    parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def is_synthetic(root: str | Path) -> bool:
    """True for a folder written by write_synthetic."""
    return (Path(root) / "synthetic.json").is_file()


def mask_path(root: str | Path, split: str, filename: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {SPLITS}; use 'train' or 'test'.")
    return Path(root) / "masks" / split / filename


def load_mask(root: str | Path, split: str, filename: str) -> np.ndarray:
    """Lesion mask as bool HxW; only synthetic folders have masks."""
    path = mask_path(root, split, filename)
    if not path.is_file():
        raise UserError(f"no lesion mask at {path}; masks exist only for folders made by write_synthetic.")
    return np.asarray(Image.open(path).convert("L")) > 127
