"""GPU check (issue 15): paper-scale training speed per model, path by path, and the hours the
whole paper protocol takes; prepared to print its table in one call of the device tool.

    python benchmarks/gpu_check.py [--models ...] [--images 200] [--no-compile] [--no-quick]

On one GPU, per model at 224 px, batch 10, float32 (the paper profile), two clients of
``--images`` images each trained one local epoch from the same global weights through
``fedlib.federated.InProcessClients`` (the code a run uses), timed after a warm-up round:

  old path     per-image augmentation and a host copy per batch (what issue 15 replaced)
  new          batched augmentation on the device, the client's images moved to the GPU once
  +compile     new with --compile (torch.compile, CUDA graphs)
  par2         new with --parallel-clients 2 (two worker processes share the GPU)
  par2+compile both

then evaluation images/s (batch 64 with host copies against 256 resident), and the projected
hours of the paper protocol per model: FedAvg 100 rounds x 2 clients x 3 epochs x 2,741 images
and pooled 300 epochs x 13,703, with a test evaluation (1,579 images) after every round and
every epoch. "equal" uses the fastest path whose results equal the new path's (new or par2);
"compile" the fastest of all. First it trains the quick profile's ResNet18 FedAvg on CUDA with
--parallel-clients 1 and 2 and prints both accuracies and the largest weight difference (CUDA
kernels are not bit-reproducible, so par2 is compared within a tolerance there).

``--device cpu --image-size 32 --images 16`` runs the same code on a CPU in seconds (the test).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from fedlib import config, train
from fedlib.data import transforms
from fedlib.experiment import new_model
from fedlib.federated import InProcessClients, cpu_state
from fedlib.launch import run
from fedlib.models import PAPER_MODELS
from fedlib.run.io import load_checkpoint

FED_PASSES = 100 * 2 * 3 * 2741
POOLED_PASSES = 300 * 13703
EVAL_PASSES = (100 + 300) * 1579  # a test evaluation after every round and every pooled epoch
PATHS = ("old path", "new", "+compile", "par2", "par2+compile")


def fake_experiment(cfg, hw, images, labels, per_client: int) -> SimpleNamespace:
    """What InProcessClients reads of an Experiment: two clients of ``per_client`` images."""
    data = SimpleNamespace(classes=("normal", "pneumonia", "COVID-19"), train_images=images, train_labels=labels)
    parts = [np.arange(per_client), np.arange(per_client, 2 * per_client)]
    return SimpleNamespace(cfg=cfg, hw=hw, data=data, parts=parts)


def client_rate(cfg, images, labels, per_client: int, rounds: int = 2) -> float:
    """Training images per second of a round of two clients, after one warm-up round."""
    hw = train.pick_hardware(cfg.device)
    exp = fake_experiment(cfg, hw, images, labels, per_client)
    model = new_model(cfg, 3, hw)
    pool = InProcessClients(exp, model)
    state = cpu_state(model)
    try:
        list(pool.fit_round(0, [0, 1], state, 0))  # warm-up: workers, cuDNN's choices, compilation
        _sync(hw)
        start = time.perf_counter()
        for r in range(rounds):
            results = list(pool.fit_round(r + 1, [0, 1], state, 0))
            assert all(res.update is not None for res in results), [res.error for res in results]
        _sync(hw)
        return rounds * 2 * per_client * cfg.local_epochs / (time.perf_counter() - start)
    finally:
        pool.close()


def old_path_rate(cfg, images, labels, per_client: int) -> float:
    """client_rate with the per-image augmentation and a host copy per batch, as before issue 15."""
    saved = train.augment_batch, train.RESIDENT_SHARE
    train.augment_batch, train.RESIDENT_SHARE = partial(transforms.augment_batch, batched=False), 0.0
    try:
        return client_rate(cfg, images, labels, per_client)
    finally:
        train.augment_batch, train.RESIDENT_SHARE = saved


def eval_rate(cfg, images, labels, batch: int, resident: bool) -> float:
    hw = train.pick_hardware(cfg.device)
    model = new_model(cfg, 3, hw)
    kwargs = dict(image_size=cfg.image_size, hw=hw, batch_size=batch, resident=resident)
    train.evaluate(model, images, labels, **kwargs)
    _sync(hw)
    start = time.perf_counter()
    train.evaluate(model, images, labels, **kwargs)
    _sync(hw)
    return len(labels) / (time.perf_counter() - start)


def _sync(hw) -> None:
    if hw.device.type == "cuda":
        torch.cuda.synchronize()


def hours(fed: float, pooled: float, evaluation: float) -> float:
    return (FED_PASSES / fed + POOLED_PASSES / pooled + EVAL_PASSES / evaluation) / 3600


def quick_parity(device: str, data_dir: str) -> None:
    """The quick ResNet18 FedAvg with --parallel-clients 1 and 2 on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        finals, states = {}, {}
        for n in (1, 2):
            cfg = config.resolve("quick", model="resnet18", device=device, data_dir=data_dir, parallel_clients=n)
            start = time.perf_counter()
            finals[n] = run(cfg, f"{tmp}/par{n}", progress=False)
            states[n] = load_checkpoint(f"{tmp}/par{n}")["model"]
            print(
                f"quick FedAvg resnet18 on {device}, --parallel-clients {n}: test accuracy "
                f"{finals[n]['test']['accuracy']:.3f}, {time.perf_counter() - start:.1f} s",
                flush=True,
            )
        diff = max((states[1][k].double() - states[2][k].double()).abs().max().item() for k in states[1])
        print(f"largest weight difference between --parallel-clients 1 and 2: {diff:.3g}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    ap.add_argument("--images", type=int, default=200, help="training images per client (default 200)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the --compile paths")
    ap.add_argument("--no-quick", action="store_true", help="skip the quick-profile parity runs")
    ap.add_argument("--data-dir", default=None, help="where the quick profile's synthetic data go")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
        print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    if not args.no_quick:
        quick_parity(args.device, args.data_dir or tempfile.mkdtemp())
    size = round(args.image_size * 256 / 224)  # the cache's side for this training size
    n = 2 * args.images
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"  # a memory map, as a run's cache: workers open the file
        np.save(path, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        images = np.load(path, mmap_mode="r")
        head = f"{'model':<17}" + "".join(f"{p:>13}" for p in PATHS) + f"{'eval old':>10}{'eval new':>10}"
        print("training images/s (eval: images/s at batch 64 with host copies, 256 resident)")
        print(head + f"{'h old':>8}{'h equal':>9}{'h compile':>10}", flush=True)
        total = dict.fromkeys(("old", "equal", "compile"), 0.0)
        for name in args.models:
            base = dict(model=name, device=args.device, image_size=args.image_size, local_epochs=1, parallel_clients=1)
            cfg = partial(config.resolve, "paper", **base)
            rate = {"old path": old_path_rate(cfg(), images, labels, args.images)}
            rate["new"] = client_rate(cfg(), images, labels, args.images)
            rate["par2"] = client_rate(cfg(parallel_clients=2), images, labels, args.images)
            if not args.no_compile:
                rate["+compile"] = client_rate(cfg(compile=True), images, labels, args.images)
                rate["par2+compile"] = client_rate(cfg(compile=True, parallel_clients=2), images, labels, args.images)
            old_eval = eval_rate(cfg(), images, labels, 64, resident=False)
            new_eval = eval_rate(cfg(), images, labels, 256, resident=True)
            h = {
                "old": hours(rate["old path"], rate["old path"], old_eval),
                "equal": hours(max(rate["new"], rate["par2"]), rate["new"], new_eval),
                "compile": hours(
                    max(v for p, v in rate.items() if p != "old path"),
                    max(rate["new"], rate.get("+compile", 0)),
                    new_eval,
                ),
            }
            for key in total:
                total[key] += h[key]
            cells = "".join(f"{rate[p]:>13.0f}" if p in rate else f"{'-':>13}" for p in PATHS)
            print(
                f"{name:<17}{cells}{old_eval:>10.0f}{new_eval:>10.0f}"
                f"{h['old']:>8.2f}{h['equal']:>9.2f}{h['compile']:>10.2f}",
                flush=True,
            )
        print(
            f"the paper protocol ({', '.join(args.models)}; FedAvg + pooled + evaluation): "
            f"{total['old']:.2f} h on the old path, {total['equal']:.2f} h with equal results, "
            f"{total['compile']:.2f} h with --compile",
            flush=True,
        )


if __name__ == "__main__":
    main()
