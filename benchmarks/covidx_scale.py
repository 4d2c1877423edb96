"""COVIDx CXR-4's size (84,818 images): data-summary's time and the one-channel cache's build.

    python benchmarks/covidx_scale.py --out /tmp/cxr4-scale [--build N] [--image-size 224]

Fabricates a binary folder in Kaggle's CXR-4 layout (train.txt val.txt test.txt, train/ val/
test/) of 84,818 lines: 67,863 / 8,473 / 8,482 (a split of that total; the benchmark needs
its size, not the published split), each image a hard link to one small placeholder PNG,
so the folder costs a few megabytes. Then:
  summary  `fedlib data-summary --val-split val.txt` on the whole folder, wall time (3 runs);
  cache    its size on disk at 256 px (224 px input), computed: N x 256 x 256 x 1 bytes;
  build    the train split's first N images (--build; 0 skips it) cached at that size in a
           subprocess, sampled every 50 ms: peak resident memory of the builder and of its
           decoding workers (each, and all together), the time per image, and the .npy size.
The folder and the built cache are removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

SPLITS = {"train": 67_863, "val": 8_473, "test": 8_482}  # 84,818 in all
LINKS = 50_000


def fabricate(root: Path, px: int = 64) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in SPLITS.items():
        (root / split).mkdir()
        lines = []
        for i in range(n):
            if i % LINKS == 0:  # a file takes at most 65,000 links on ext4
                placeholder = root / f"placeholder-{split}-{i}.png"
                Image.fromarray(rng.integers(0, 256, (px, px), dtype=np.uint8)).save(placeholder)
            name = f"{split}{i:06d}.png"
            os.link(placeholder, root / split / name)
            lines.append(f"{split[:2]}{i} {name} {('negative', 'positive')[i % 2]} src{i % 7}\n")
        (root / f"{split}.txt").write_text("".join(lines))


def time_summary(root: Path, runs: int = 3) -> list[float]:
    command = [sys.executable, "-m", "fedlib.cli", "data-summary", "--data", str(root), "--val-split", "val.txt"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


BUILD = """
import sys, time
from pathlib import Path
from fedlib.data.cache import load_split_arrays
from fedlib.data.covidx import Layout
root, n, size, cache = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
text = (root / "train.txt").read_text().splitlines(keepends=True)[:n]
(root / "subset.txt").write_text("".join(text))
start = time.perf_counter()
images, _, _ = load_split_arrays(root, "train", size, Layout("subset.txt", "test.txt"), cache_dir=cache, progress=False)
print(time.perf_counter() - start, images.shape, images.filename)
"""


def measure_build(root: Path, n: int, image_size: int) -> dict:
    cache = root / "cache"
    proc = psutil.Popen(
        [sys.executable, "-c", BUILD, str(root), str(n), str(image_size), str(cache)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak_parent = peak_worker = peak_total = 0
    while proc.poll() is None:
        try:
            parent = proc.memory_info().rss
            workers = [c.memory_info().rss for c in proc.children(recursive=True)]
        except psutil.Error:
            break
        peak_parent, peak_worker = max(peak_parent, parent), max([peak_worker, *workers])
        peak_total = max(peak_total, parent + sum(workers))
        time.sleep(0.05)
    out, _ = proc.communicate()
    seconds, *_, path = out.split()
    return {
        "images": n,
        "seconds": float(seconds),
        "ms_per_image": 1000 * float(seconds) / n,
        "peak_rss_builder_mb": peak_parent / 2**20,
        "peak_rss_one_worker_mb": peak_worker / 2**20,
        "peak_rss_all_mb": peak_total / 2**20,
        "npy_bytes": Path(path).stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a folder to create (removed at the end unless --keep)")
    parser.add_argument("--build", type=int, default=20_000, help="train images to cache (0: no build)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(args.out)
    start = time.perf_counter()
    fabricate(root)
    print(f"fabricated {sum(SPLITS.values())} lines in {time.perf_counter() - start:.1f} s")
    try:
        times = time_summary(root)
        print(f"data-summary: {', '.join(f'{t:.2f}' for t in times)} s (84,818 lines, whole command)")
        side = round(args.image_size * 256 / 224)
        total = sum(SPLITS.values()) * side * side
        print(
            f"cache at {side} px, one channel: {total / 1e9:.2f} GB ({total / 2**30:.2f} GiB); three: {3 * total / 1e9:.2f} GB"
        )
        if args.build:
            print(measure_build(root, args.build, args.image_size))
    finally:
        if not args.keep:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
