"""How much the preprocessing cache saves over decoding every image every epoch.

    python benchmarks/cache_speedup.py [--n 200 --px 1024 --image-size 224 --epochs 3]

Writes N grayscale PNGs of smooth noise plus grain (so PNG compression is
about as hard as on real radiographs) into a temporary COVIDx folder, then
times E epochs two ways, reading every sample each epoch:
  decode  decode_split() every epoch (what a plain Dataset does);
  cached  load_split_arrays(): one build, then E passes over the memmap.
Both decode on the same worker pool; the files are in the page cache for both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fedlib.data import CLASSES, cache_size, decode_split, load_split_arrays


def radiograph_like(px: int, seed: int) -> Image.Image:
    """Smooth low-frequency structure with fine grain, 8-bit grayscale."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((px, px), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-6, 7, (px, px), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def write_dataset(root: Path, n: int, px: int) -> None:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    names = [f"img{i:05d}.png" for i in range(n)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda i: radiograph_like(px, i).save(root / "train" / names[i]), range(n)))
    lines = [f"p{i} {name} {CLASSES[i % 3]} synthetic" for i, name in enumerate(names)]
    (root / "train_split.txt").write_text("\n".join(lines) + "\n")
    (root / "test_split.txt").write_text(lines[0] + "\n")


def read_all(images: np.ndarray) -> int:
    """One epoch's reads: copy every sample out, as a data loader would."""
    total = 0
    for i in range(len(images)):
        total += int(np.array(images[i])[0, 0, 0])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of images")
    parser.add_argument("--px", type=int, default=1024, help="side of each generated PNG")
    parser.add_argument("--image-size", type=int, default=224, help="training input size")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fedlib-bench-") as tmp:
        root = Path(tmp) / "covidx"
        start = time.perf_counter()
        write_dataset(root, args.n, args.px)
        megabytes = sum(f.stat().st_size for f in (root / "train").iterdir()) / 1e6
        print(
            f"{args.n} PNGs of {args.px}x{args.px} px ({megabytes:.0f} MB) written in "
            f"{time.perf_counter() - start:.1f} s; cache side {cache_size(args.image_size)} px; "
            f"{os.cpu_count()} decode workers; {args.epochs} epochs"
        )

        start = time.perf_counter()
        for _ in range(args.epochs):
            images, _, _ = decode_split(root, "train", args.image_size)
            read_all(images)
        decode_time = time.perf_counter() - start

        start = time.perf_counter()
        images, _, _ = load_split_arrays(root, "train", args.image_size, cache_dir=Path(tmp) / "cache", progress=False)
        build_time = time.perf_counter() - start
        for _ in range(args.epochs):
            images, _, _ = load_split_arrays(
                root, "train", args.image_size, cache_dir=Path(tmp) / "cache", progress=False
            )
            read_all(images)
        cached_time = time.perf_counter() - start
        read_time = (cached_time - build_time) / args.epochs

    print(f"decode every epoch: {decode_time:8.2f} s  ({decode_time / args.epochs:.2f} s/epoch)")
    print(f"cached:             {cached_time:8.2f} s  (build {build_time:.2f} s, then {read_time:.3f} s/epoch)")
    print(
        f"speed-up over {args.epochs} epochs: {decode_time / cached_time:.1f}x; "
        f"per epoch once built: {decode_time / args.epochs / read_time:.0f}x"
    )


if __name__ == "__main__":
    main()
