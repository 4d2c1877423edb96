"""--parallel-clients 2 against 1 on a quick FedAvg job, on this machine's CPU (issue 15).

    python benchmarks/parallel_clients.py [--model resnet18] [--data-dir /tmp/bench/data] [--repeats 1]

Three runs of the quick profile, one after another: sequential clients with all the
process's threads (today's default), sequential with one thread, and two clients at once in
two worker processes (the threads divided between them: one each on two cores). Prints each
run's whole time and median round (history.csv's wall_time), the ratios, and whether the
final weights equal those of the sequential run with the same threads per client.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from fedlib import config
from fedlib.run import io
from fedlib.runner import train


def one(cfg, out: str, threads: int) -> tuple[float, float, dict]:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        train(cfg, out, progress=False)
        whole = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved)
    times = [float(r["wall_time"]) for r in io.read_history(f"{out}/history.csv")]
    rounds = [b - a for a, b in zip(times, times[1:], strict=False)]  # round 1 holds the start-up
    return whole, statistics.median(rounds), io.load_checkpoint(out)["model"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--data-dir", default="/tmp/bench/data")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"quick FedAvg {args.model}, {threads} threads in this process, torch {torch.__version__}")
    print(f"{'clients at once':<34}{'whole s':>9}{'round s':>9}{'whole ratio':>13}{'round ratio':>13}  same weights")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            base = dict(model=args.model, data_dir=args.data_dir)
            runs_ = {
                f"1 ({threads} threads)": (config.resolve("quick", **base), threads),
                "1 (1 thread)": (config.resolve("quick", **base), 1),
                f"2 (workers of {max(1, threads // 2)} thread)": (
                    config.resolve("quick", parallel_clients=2, **base),
                    threads,
                ),
            }
            got = {label: one(cfg, f"{tmp}/{rep}-{i}", t) for i, (label, (cfg, t)) in enumerate(runs_.items())}
            ref_whole, ref_round, _ = got[f"1 ({threads} threads)"]
            same_threads = got["1 (1 thread)"][2] if threads // 2 <= 1 else None
            for label, (whole, round_s, state) in got.items():
                same = (
                    ""
                    if not label.startswith("2") or same_threads is None
                    else str(all(torch.equal(v, same_threads[k]) for k, v in state.items()))
                )
                print(
                    f"{label:<34}{whole:>9.1f}{round_s:>9.2f}{ref_whole / whole:>13.2f}{ref_round / round_s:>13.2f}  {same}"
                )


if __name__ == "__main__":
    main()
