"""Flower's cost per round: the same FedAvg job in-process and on a loopback deployment
(a SuperLink with TLS and SuperNode authentication, one SuperNode per client: stock
``flower-supernode``, then fedlib's warm ones), back to back on one machine.

Two jobs, 2 clients, both trained every round:
- ``fixed``: the smoke profile (32 px, 16 images a client): training is negligible, so a
  deployment round minus an in-process round is Flower's fixed cost per round (moving the
  model both ways, ClientApp start, polls);
- ``realistic``: the quick profile's ResNet18 at 64 px with as many local epochs as make
  ``--local-seconds`` of training per client and round in-process (20 s: about what a
  paper-scale round takes a client on a GPU, BENCHMARKS.md).

A round's time is read from history.csv (``wall_time`` at the end of each round); the
steady round is the median of rounds 2 to R-1 (round 1 has the start-up, the last one the
evaluation). Whole-run times include Flower's start-up and shutdown. The script also
checks that every engine ends with the in-process weights.

    python benchmarks/flower_overhead.py [--local-seconds 20] [--rounds 5] [--supernodes stock warm]
        [--model resnet18] [--jobs fixed realistic]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fedlib import config
from fedlib.deploy import LocalFederation
from fedlib.flower import run_flower
from fedlib.launch import run
from fedlib.run import io


def round_seconds(run_dir: Path) -> list[float]:
    walls = [float(row["wall_time"]) for row in io.read_history(run_dir / "history.csv")]
    return [b - a for a, b in zip([0.0, *walls], walls, strict=False)]


def steady(run_dir: Path) -> float:
    return statistics.median(round_seconds(run_dir)[1:-1])


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = io.load_checkpoint(a)["model"], io.load_checkpoint(b)["model"]
    return all(wa[k].equal(wb[k]) for k in wa)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, cfg, tmp: Path, modes: list[str]) -> list[tuple]:
    rows = []
    base = tmp / f"{name}-inprocess"
    whole = timed(lambda: run(cfg, base, progress=False))
    rows.append((name, "in-process", steady(base), 0.0, whole, 1.0, 1.0, True))
    for mode in modes:
        out = tmp / f"{name}-{mode}"

        def deploy(out=out, mode=mode):
            with LocalFederation(cfg.clients, tmp / f"federation-{name}-{mode}", warm=mode == "warm") as fed:
                run_flower(
                    config.replace(cfg, engine="flower"),
                    out,
                    progress=False,
                    superlink=fed.address,
                    root_certificates=fed.root_certificates,
                )

        seconds = timed(deploy)
        per_round = steady(out)
        rows.append(
            (
                name,
                f"flower {mode}",
                per_round,
                per_round - rows[0][2],
                seconds,
                per_round / rows[0][2],
                seconds / whole,
                same_weights(base, out),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local-seconds", type=float, default=20.0, help="in-process training per client and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--supernodes", nargs="+", default=["stock", "warm"], choices=["stock", "warm"])
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--model", default="resnet18", help="the model of both jobs")
    ap.add_argument("--jobs", nargs="+", default=["fixed", "realistic"], choices=["fixed", "realistic"])
    args = ap.parse_args()
    both = dict(clients=2, fraction=1.0, rounds=args.rounds, eval_every=args.rounds, client_timeout=3600.0)
    fixed = config.resolve("smoke", model=args.model, data_dir=args.data_dir, **both)
    quick = config.resolve("quick", model=args.model, data_dir=args.data_dir, **both)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe = config.replace(quick, rounds=3, eval_every=3, local_epochs=1)
        run(probe, tmp / "probe", progress=False)  # writes the data and its cache; times one local epoch
        epoch = steady(tmp / "probe") / quick.clients
        epochs = max(1, round(args.local_seconds / epoch))
        jobs = {"fixed": fixed, "realistic": config.replace(quick, local_epochs=epochs)}
        print(
            f"{args.model}, 2 clients a round, {args.rounds} rounds; realistic job: quick profile, {epochs} local "
            f"epochs ({epoch:.1f} s each in-process, so about {epochs * epoch:.0f} s a client and round)"
        )
        rows = [row for name in args.jobs for row in measure(name, jobs[name], tmp, args.supernodes)]
    print(
        f"{'job':<10} {'engine':<13} {'round s':>8} {'overhead s':>10} {'whole s':>8} "
        f"{'round ratio':>11} {'whole ratio':>11}  same weights"
    )
    for name, engine, per_round, overhead, whole, ratio_round, ratio_whole, same in rows:
        print(
            f"{name:<10} {engine:<13} {per_round:8.2f} {overhead:10.2f} {whole:8.1f} "
            f"{ratio_round:11.3f} {ratio_whole:11.3f}  {same}"
        )


if __name__ == "__main__":
    main()
