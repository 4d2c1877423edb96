"""FL overhead: in-process FedAvg vs pooled training for the same sample passes.

FedAvg with C=1 trains every client once per round for E=1 epoch, so R rounds
pass over the training set R times, as R epochs of pooled training do. Both
use the same model, data, batch size and learning rate, and evaluate only at
the end. Runs alternate (fed, pooled, fed, pooled, ...) and the minimum of each
is compared, which damps the noise of a shared machine.

    python benchmarks/fl_overhead.py [--model resnet18 --rounds 4 --repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fedlib import config
from fedlib.launch import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args()
    common = dict(
        model=args.model,
        clients=args.clients,
        local_epochs=1,
        rounds=args.rounds,
        eval_every=args.rounds,
        data_dir=args.data_dir,
    )
    fed = config.resolve("quick", mode="fedavg", fraction=1.0, **common)
    pooled = config.resolve("quick", mode="central", central_epochs=args.rounds, **common)
    times: dict[str, list[float]] = {"fedavg": [], "pooled": []}
    with tempfile.TemporaryDirectory() as tmp:
        run(config.replace(pooled, central_epochs=1), Path(tmp) / "warmup", progress=False)  # data + cache
        for i in range(args.repeats):
            for name, cfg in (("fedavg", fed), ("pooled", pooled)):
                start = time.perf_counter()
                final = run(cfg, Path(tmp) / f"{name}{i}", progress=False)
                times[name].append(time.perf_counter() - start)
                passes = final["num_train"] * args.rounds
    f, p = min(times["fedavg"]), min(times["pooled"])
    print(f"model {args.model}, {args.clients} clients, {args.rounds} rounds x 1 epoch = {passes} sample passes each")
    print(f"fedavg  wall {f:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['fedavg'])})")
    print(f"pooled  wall {p:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['pooled'])})")
    print(f"ratio fedavg / pooled = {f / p:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
