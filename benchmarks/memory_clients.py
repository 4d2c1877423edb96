"""Memory: peak RSS of in-process FedAvg with K=50 clients vs K=5, same data.

Each configuration runs in a fresh subprocess that reports its own peak
resident set size, so one run cannot inflate the other's figure.

    python benchmarks/memory_clients.py [--model resnet18 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys
from fedlib import config
from fedlib.launch import run
args = json.loads(sys.argv[1])
cfg = config.resolve("quick", model=args["model"], clients=args["clients"], rounds=args["rounds"],
                     local_epochs=1, eval_every=args["rounds"], data_dir=args["data_dir"])
run(cfg, args["out"], progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "per_round": cfg.clients_per_round}))
"""


def peak(model: str, clients: int, rounds: int, data_dir: str, out: str) -> dict:
    spec = json.dumps(dict(model=model, clients=clients, rounds=rounds, data_dir=data_dir, out=out))
    res = subprocess.run([sys.executable, "-c", CHILD, spec], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peak(args.model, 5, 1, args.data_dir, f"{tmp}/warmup")  # generate data and cache first
        small = peak(args.model, 5, args.rounds, args.data_dir, f"{tmp}/k5")
        large = peak(args.model, 50, args.rounds, args.data_dir, f"{tmp}/k50")
    print(f"model {args.model}, {args.rounds} rounds, C=0.4")
    print(f"K=5   ({small['per_round']:2d} clients/round) peak RSS {small['peak_rss_mb']:8.1f} MB")
    print(f"K=50  ({large['per_round']:2d} clients/round) peak RSS {large['peak_rss_mb']:8.1f} MB")
    print(f"ratio K=50 / K=5 = {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}  (target <= 1.1)")


if __name__ == "__main__":
    main()
