"""Flower overhead: the same FedAvg job in-process, in Flower's simulation and on a
loopback deployment (a SuperLink and one SuperNode per client, real processes).

The job is the quick profile's ResNet18 for 10 rounds on synthetic data; each
engine runs it once, in that order, after a warm-up that writes the data and
its cache. Wall time is measured around the whole call, so Flower's start-up
(Ray; the SuperLink and SuperNodes) counts against it. The script also prints
the largest weight difference between the engines' final models.

The deployment's SuperNodes are LocalFederation's warm ones (fedlib's ClientApp
executor, short idle waits); ``--stock-supernodes`` runs plain ``flower-supernode``.

    python benchmarks/flower_overhead.py [--model resnet18 --rounds 10 --stock-supernodes]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fedlib import config, runs
from fedlib.flower import LocalFederation, run_flower
from fedlib.launch import run


def max_difference(a: Path, b: Path) -> float:
    wa, wb = runs.load_checkpoint(a)["model"], runs.load_checkpoint(b)["model"]
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument(
        "--stock-supernodes",
        action="store_true",
        help="plain flower-supernode (a new ClientApp process per message, 3 s polling)",
    )
    args = ap.parse_args()
    cfg = config.resolve("quick", model=args.model, rounds=args.rounds, data_dir=args.data_dir)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(config.replace(cfg, rounds=1), tmp / "warmup", progress=False)  # data + cache
        start = time.perf_counter()
        run(cfg, tmp / "inprocess", progress=False)
        times["inprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        run_flower(config.replace(cfg, engine="flower-sim"), tmp / "flower-sim", progress=False)
        times["flower-sim"] = time.perf_counter() - start
        start = time.perf_counter()
        with LocalFederation(cfg.clients, tmp / "federation", warm=not args.stock_supernodes) as fed:
            run_flower(config.replace(cfg, engine="flower"), tmp / "flower", progress=False, superlink=fed.address)
        times["flower"] = time.perf_counter() - start
        diffs = {e: max_difference(tmp / "inprocess", tmp / e) for e in ("flower-sim", "flower")}
    print(
        f"model {args.model}, quick profile, {cfg.clients} clients, {cfg.clients_per_round} per round, "
        f"{args.rounds} rounds, {'stock' if args.stock_supernodes else 'warm'} SuperNodes"
    )
    for engine, seconds in times.items():
        print(f"{engine:<11} wall {seconds:8.2f} s")
    print(f"ratio flower-sim / inprocess = {times['flower-sim'] / times['inprocess']:.3f}  (target <= 1.15)")
    print(f"ratio flower     / inprocess = {times['flower'] / times['inprocess']:.3f}  (target <= 1.3)")
    print("largest weight difference to in-process: " + ", ".join(f"{e} {d:.3g}" for e, d in diffs.items()))


if __name__ == "__main__":
    main()
