"""GPU check: the engine's CUDA path (bf16 autocast, channels_last, pinned memory)
trains and learns, and paper-scale throughput per model, to estimate how long
the paper profile takes on COVIDx.

    python benchmarks/gpu_check.py [--steps 30] [--data-dir /tmp/fedlib-data]

Prints, per model at 224 px and batch 10 (the paper's B): training images per
second with AMP on and off, and the hours the paper profile needs
(FedAvg: 100 rounds x 2 clients x 3 epochs x 2,741 images; pooled: 300 epochs x 13,703).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from fedlib import config
from fedlib.launch import run
from fedlib.models import PAPER_MODELS, build_model
from fedlib.train import local_train, pick_hardware

FED_PASSES = 100 * 2 * 3 * 2741
POOLED_PASSES = 300 * 13703


def throughput(name: str, amp: bool, steps: int, batch: int = 10, size: int = 224) -> float:
    hw = pick_hardware("cuda", amp=amp, channels_last=amp)
    model = build_model(name).to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    s = round(size * 256 / 224)
    images = np.random.default_rng(0).integers(0, 255, (batch * steps, s, s, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, batch * steps).astype(np.int64)
    idx = np.arange(batch * 3)
    local_train(
        model,
        images,
        labels,
        idx,
        epochs=1,
        batch_size=batch,
        lr=2e-5,
        weight_decay=1e-7,
        image_size=size,
        seed=0,
        hw=hw,
    )  # warm-up: cuDNN autotuning, allocations
    torch.cuda.synchronize()
    start = time.perf_counter()
    local_train(
        model,
        images,
        labels,
        np.arange(len(labels)),
        epochs=1,
        batch_size=batch,
        lr=2e-5,
        weight_decay=1e-7,
        image_size=size,
        seed=0,
        hw=hw,
    )
    torch.cuda.synchronize()
    return len(labels) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    data_dir = args.data_dir or tempfile.mkdtemp()
    with tempfile.TemporaryDirectory() as tmp:
        for amp in (True, False):
            cfg = config.resolve("quick", model="resnet18", device="cuda", amp=amp, data_dir=data_dir)
            start = time.perf_counter()
            final = run(cfg, f"{tmp}/quick-amp{amp}", progress=False)
            print(
                f"quick FedAvg resnet18 on CUDA, amp={amp}: test accuracy {final['test']['accuracy']:.3f}, "
                f"train accuracy {final['train']['accuracy']:.3f}, {time.perf_counter() - start:.1f} s"
            )
    print(f"{'model':<18}{'img/s amp':>10}{'img/s fp32':>11}{'FedAvg h':>10}{'pooled h':>10}")
    for name in PAPER_MODELS:
        fast = throughput(name, True, args.steps)
        slow = throughput(name, False, args.steps)
        print(
            f"{name:<18}{fast:>10.0f}{slow:>11.0f}{FED_PASSES / fast / 3600:>10.2f}"
            f"{POOLED_PASSES / fast / 3600:>10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
