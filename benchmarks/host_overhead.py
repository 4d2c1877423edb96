"""Host overhead and checkpoints (issue 15, part 1): what the training loop costs besides arithmetic.

1. Training steps per second at batch 10 and 224 px (cached 256 px uint8 images generated
   in memory) for a model whose arithmetic is negligible (one strided conv and a linear
   layer), so what is measured is the loop itself: the old per-batch path (``loss.item()``
   and a label copy every batch, kept below as ``_old_epochs``) against today's
   ``fedlib.train._epochs`` (loss summed on the device, labels copied once), and today's with
   the call's images resident on the device (what CUDA uses when they fit; forced here).
2. The checkpoint stall: seconds the training loop is blocked per checkpoint of a
   ``--state-mb`` state, written synchronously (``io.save_checkpoint``) or in the background
   (``fedlib.checkpoint.Writer``: the stall is the snapshot copy, plus any wait for a write
   still in flight), with ``--compute`` seconds of real training between checkpoints, and
   how much slower that training ran beside the writer.
3. Augmentation images per second at batch 10 (``augment_batch`` alone, CPU): the per-image
   path (a resize call per image, the CPU default) against the batched path (one batched
   resize per batch, the CUDA default), 224 px views of 256 px cached uint8 images, then
   32 px of 48 px and 8 px of 12 px, where the arithmetic is small and the host's cost shows;
   the random draws alone (the same on both paths), and the ATen operations each path runs.

    OMP_NUM_THREADS=1 python benchmarks/host_overhead.py [--steps 300 --state-mb 300 --repeats 3 --parts 1,2,3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fedlib.checkpoint import Writer
from fedlib.data import transforms
from fedlib.data.transforms import IMAGENET_STD, augment_batch
from fedlib.run import io
from fedlib.train import Hardware, LocalSpec, _epochs, _prepare_input, _resident_images, _to_device, batches

CPU = Hardware(device=torch.device("cpu"))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _old_epochs(model, optimizer, images, labels, indices, epochs, batch_size, image_size, seed, hw):
    """fedlib.train._epochs before issue 15: a host sync (``loss.item()``) and a label copy per batch."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for _ in range(epochs):
        for idx in batches(indices, batch_size, rng):
            x = _prepare_input(augment_batch(_to_device(images, idx, hw), image_size, gen), hw)
            y = torch.from_numpy(labels[idx]).to(hw.device, non_blocking=hw.non_blocking)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
    return total, count


def steps_per_second(path: str, images, labels, steps: int, batch: int) -> tuple[float, float]:
    """(steps per second, the summed loss) for one epoch of ``steps`` batches on ``path``."""
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    indices = np.arange(steps * batch)
    start = time.perf_counter()
    if path == "old":
        total, _ = _old_epochs(model, optimizer, images, labels, indices, 1, batch, 224, 0, CPU)
    else:
        store = _resident_images(images, indices, CPU, resident=path == "resident")
        spec = LocalSpec(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.0, image_size=224, seed=0, hw=CPU)
        total, _ = _epochs(model, optimizer, (images, labels, indices), spec, store=store)
    return steps / (time.perf_counter() - start), total


def train_for(model, optimizer, x, y, iterations: int) -> None:
    for _ in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def checkpoint_stall(background: bool, state: dict, compute_iters: int, folder: Path, repeats: int):
    """Per checkpoint: (seconds blocked, seconds the training between checkpoints took)."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters())
    x, y = torch.randn(10, 3, 224, 224), torch.zeros(10, dtype=torch.long)
    blocked, computing = [], []
    with Writer() as writer:
        for _ in range(repeats):
            t0 = time.perf_counter()
            train_for(model, optimizer, x, y, compute_iters)
            t1 = time.perf_counter()
            if background:
                writer.submit(folder, state)
            else:
                io.save_checkpoint(folder, state)
            blocked.append(time.perf_counter() - t1)
            computing.append(t1 - t0)
        t2 = time.perf_counter()
    blocked[-1] += time.perf_counter() - t2  # the end of the run waits for the last write
    return blocked, computing


def augment_rate(batched: bool, images: torch.Tensor, batch: int, image_size: int) -> float:
    """Images per second through ``augment_batch`` over ``images`` in batches of ``batch``."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for first in range(0, len(images) - batch + 1, batch):
        augment_batch(images[first : first + batch], image_size, generator, batched=batched)
    return (len(images) // batch) * batch / (time.perf_counter() - start)


class _CountOps(TorchDispatchMode):
    """Counts the ATen operations run inside it, and those that are not views: on a GPU each of
    those is a kernel launch, and every operation costs the host a dispatch."""

    def __init__(self):
        super().__init__()
        self.count, self.kernels = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def operations(batched: bool, images: torch.Tensor, image_size: int) -> tuple[int, int]:
    """(ATen operations, those not views) on the batch for one call; the random draws (CPU either way) left out."""
    x = transforms._to_float_nchw(images)
    boxes, flips = transforms.draw_params(len(x), *x.shape[-2:], torch.Generator().manual_seed(0))
    crop = transforms.crop_batched if batched else transforms.crop_each
    with _CountOps() as counter:
        transforms._normalize(crop(transforms._to_float_nchw(images), boxes, flips, image_size))
    return counter.count, counter.kernels


def draws_per_second(images: torch.Tensor, batch: int) -> float:
    """Batches per second of ``draw_params`` alone: the random draws both paths make on the host."""
    generator = torch.Generator().manual_seed(0)
    count = len(images) // batch
    start = time.perf_counter()
    for _ in range(count):
        transforms.draw_params(batch, images.shape[1], images.shape[2], generator)
    return count / (time.perf_counter() - start)


def augmentation(images: torch.Tensor, batch: int, image_size: int, repeats: int) -> None:
    found = {False: [], True: [], "draws": []}
    for _ in range(repeats):  # interleaved, the best of each
        for batched in (False, True):
            found[batched].append(augment_rate(batched, images, batch, image_size))
        found["draws"].append(draws_per_second(images, batch))
    for batched, name in ((False, "per-image"), (True, "batched")):
        rates = ", ".join(f"{r:.0f}" for r in found[batched])
        print(f"  {name:9s} best {max(found[batched]):7.0f} images/s  (runs: {rates})")
    print(f"  the random draws alone (both paths): best {1e3 / max(found['draws']):.2f} ms per batch")
    print(f"  batched / per-image, best of each: {max(found[True]) / max(found[False]):.2f}x")
    counts = [operations(b, images[:batch], image_size) for b in (False, True)]
    (each, each_kernels), (batch, batch_kernels) = counts
    print(
        f"  ATen operations on the batch per call: per-image {each} ({each_kernels} not views), "
        f"batched {batch} ({batch_kernels} not views)"
    )
    x = [augment_batch(images[:batch], image_size, torch.Generator().manual_seed(0), batched=b) for b in (False, True)]
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    print(f"  largest difference between the paths: {((x[0] - x[1]).abs() * std).max() * 255:.2e} of a grey level")


def loop_overhead(args) -> None:
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    images = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int64)
    print(f"\n1. training steps per second, batch {args.batch}, 224 px from 256 px, tiny model, CPU")
    found = {}
    for _ in range(args.repeats):  # interleaved, the best of each: a shared machine is noisy
        for path in ("old", "new", "resident"):
            rate, total = steps_per_second(path, images, labels, args.steps, args.batch)
            found.setdefault(path, []).append(rate)
            found.setdefault(f"{path} loss", []).append(total)
    for path in ("old", "new", "resident"):
        rates = ", ".join(f"{r:.1f}" for r in found[path])
        print(f"  {path:9s} best {max(found[path]):6.1f} steps/s  (runs: {rates})")
    same = found["old loss"][0] == found["new loss"][0] == found["resident loss"][0]
    print(f"  summed loss identical on all three paths: {same}")


def checkpoints(args) -> None:
    numel = args.state_mb * 2**20 // 4
    state = {"model": {f"w{i}": torch.randn(numel // 8) for i in range(8)}, "round": 1}
    print(f"\n2. checkpoint stall, {args.state_mb} MB state, {args.compute} training iterations between checkpoints")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for background in (False, True):
            blocked, computing = checkpoint_stall(background, state, args.compute, Path(tmp), args.repeats)
            name = "background" if background else "synchronous"
            print(
                f"  {name:11s} blocked per checkpoint: median {statistics.median(blocked):.2f} s "
                f"(each: {', '.join(f'{b:.2f}' for b in blocked)}); training between checkpoints: "
                f"median {statistics.median(computing):.2f} s"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per measurement")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--state-mb", type=int, default=300, help="checkpoint size")
    ap.add_argument("--compute", type=int, default=40, help="training iterations between checkpoints")
    ap.add_argument("--dir", default=None, help="where checkpoints are written (default: a temporary folder)")
    ap.add_argument("--parts", default="1,2,3", help="which measurements to run, comma-separated")
    ap.add_argument("--aug-images", type=int, default=1000, help="images per augmentation measurement")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if 1 in parts:
        loop_overhead(args)
    if 2 in parts:
        checkpoints(args)
    if 3 in parts:
        rng = np.random.default_rng(0)
        for size, image_size in ((256, 224), (48, 32), (12, 8)):
            images = torch.from_numpy(rng.integers(0, 256, (args.aug_images, size, size, 3), dtype=np.uint8))
            print(f"\n3. augmentation, batch {args.batch}, {image_size} px from {size} px uint8, CPU")
            augmentation(images, args.batch, image_size, args.repeats)


if __name__ == "__main__":
    main()
