"""Where a quick reproduction's seconds go, per model and mode (issue 22).

For each model of the paper, in FedAvg and pooled training with the profile's settings
(per-model exceptions included), this measures on this machine what one unit of each part
of a run costs, and multiplies it by how often a run does it:

- augmentation, forward + backward, optimizer step: per training batch (the run's own
  batch size, a client's real images), times the batches of the whole run;
- evaluation: one pass over the validation and test images, times the evaluations of the
  run (every ``eval_every`` steps and the last), plus the final metrics (train, validation,
  test and per-hospital test);
- checkpoint: writing what the run's checkpoint holds (the model, the Adam states it
  keeps), times the checkpoints (every ``checkpoint_every`` steps and the last);
- set-up: loading the data and building the model, once a run;
- papermill: starting a kernel, importing fedlib and torch, executing one cell, once a
  notebook (measured once, with a one-cell notebook on the ``fedlib`` kernel).

The unit costs are medians of a few repetitions after a warm-up, in CPU seconds of this
process with one torch thread (``--threads 1``, the default and what ``fedlib reproduce``
gives each quick run): CPU time, unlike wall time, hardly moves when other jobs share the
machine. With more threads the costs are wall seconds. The papermill row is wall time (its
kernel is another process). The sum is a model, not a stopwatch: the ``whole`` column is
what the executed notebooks of a reproduction recorded (``metadata.papermill.duration`` in
``--reports``), when they are there.

    PYTHONPATH=. .venv/bin/python benchmarks/profile_quick.py [--models resnet18] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedlib.client import cpu_state
from fedlib.data.transforms import augment_batch
from fedlib.experiment import new_model, setup
from fedlib.models import PAPER_MODELS
from fedlib.run import io
from fedlib.run.folder import data_set, run_config
from fedlib.train import _prepare_input, _to_device, batches, make_optimizer

PARTS = ("augment", "fwd+bwd", "opt step", "evaluate", "checkpoint", "set-up", "papermill")


CLOCK = time.perf_counter  # time.process_time with one thread (main)


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def batch_costs(exp, model, repeat: int) -> dict:
    """Seconds of one training batch's augmentation, forward + backward, optimizer step."""
    cfg, hw = exp.cfg, exp.hw
    data = exp.data
    idx = batches(exp.parts[0], cfg.batch_size, np.random.default_rng(0))[0]
    gen = torch.Generator().manual_seed(0)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    y = torch.from_numpy(data.train_labels[idx])
    raw = _to_device(data.train_images, idx, hw)
    x = _prepare_input(augment_batch(raw, cfg.image_size, gen), hw)

    def fwd_bwd():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    fwd_bwd()
    return {
        "augment": median_time(lambda: _prepare_input(augment_batch(raw, cfg.image_size, gen), hw), repeat),
        "fwd+bwd": median_time(fwd_bwd, repeat),
        "opt step": median_time(optimizer.step, repeat),
        "optimizer": optimizer,
    }


def counts(exp) -> dict:
    """How many batches, evaluations and checkpoints the whole run makes."""
    cfg = exp.cfg
    if cfg.mode == "central":
        steps, per_step = cfg.pooled_epochs, math.ceil(len(exp.train_idx) / cfg.batch_size)
    else:
        steps = cfg.rounds
        mean_part = statistics.mean(len(p) for p in exp.parts)
        per_step = cfg.clients_per_round * cfg.local_epochs * math.ceil(mean_part / cfg.batch_size)
    evals = len({*range(cfg.eval_every, steps + 1, cfg.eval_every), steps})
    ckpts = len({*range(cfg.checkpoint_every, steps + 1, cfg.checkpoint_every), steps})
    return {"steps": steps, "batches": steps * per_step, "evals": evals, "checkpoints": ckpts}


def checkpoint_state(exp, model, optimizer) -> dict:
    """What the run's checkpoint holds: the model, and Adam states (pooled: one; FedAvg: one
    per client when it keeps them)."""
    state = {"model": cpu_state(model)}
    if exp.cfg.mode == "central":
        state["optimizer"] = optimizer.state_dict()
    elif exp.cfg.keep_optimizer_state:
        state["client_optimizers"] = {c: optimizer.state_dict() for c in range(exp.cfg.clients)}
    return state


def profile_run(parameters: dict, repeat: int, tmp: Path) -> dict:
    cfg = run_config(parameters)
    start = CLOCK()
    exp = setup(cfg, tmp / "run", progress=False)
    model = new_model(exp.cfg, len(exp.data.classes), exp.hw)
    set_up = CLOCK() - start
    costs = batch_costs(exp, model, repeat)
    n = counts(exp)
    evaluate_once = median_time(lambda: exp.test_metrics(model), max(1, repeat // 2))
    final = median_time(lambda: exp.final_metrics(model), 1)
    state = checkpoint_state(exp, model, costs.pop("optimizer"))
    save = median_time(lambda: io.save_checkpoint(tmp / "run", state), max(1, repeat // 2))
    size = (tmp / "run" / "checkpoints" / "last.pt").stat().st_size
    seconds = {part: costs[part] * n["batches"] for part in ("augment", "fwd+bwd", "opt step")}
    seconds["evaluate"] = evaluate_once * n["evals"] + final
    seconds["checkpoint"] = save * n["checkpoints"]
    seconds["set-up"] = set_up
    params = sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "counts": n, "checkpoint_mb": size / 1e6, "params": params}


def papermill_cost(tmp: Path) -> float:
    """Seconds to execute a one-cell notebook (import fedlib, torch) on the fedlib kernel."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch\nimport fedlib.launch")]
    src, out = tmp / "one.ipynb", tmp / "one-out.ipynb"
    nbformat.write(nb, src)
    start = time.perf_counter()
    pm.execute_notebook(str(src), str(out), kernel_name="fedlib", progress_bar=False)
    return time.perf_counter() - start


def recorded(reports: Path) -> dict[str, float]:
    """{notebook stem: seconds} from executed notebooks' papermill metadata."""
    out = {}
    for path in sorted(reports.glob("01_train-*.ipynb")) if reports.is_dir() else []:
        duration = json.loads(path.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
        if duration is not None:
            out[path.stem] = float(duration)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    p.add_argument("--modes", nargs="+", default=["fedavg", "central"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: CPU seconds)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions of each unit")
    p.add_argument("--reports", type=Path, default=Path("reports/quick"), help="executed notebooks to compare")
    p.add_argument("--data-dir", default=None, help="where the synthetic data set is (default: the profile's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. image_size=48")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.threads == 1 else time.perf_counter
    torch.set_num_threads(args.threads)
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    overrides.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    whole = recorded(args.reports)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = {"profile": args.profile, "data": "synthetic", "seed": 0, "device": "cpu", "overrides": overrides}
        data_set(run_config(base), progress=False)  # generate the data once, outside the timings
        notebook = papermill_cost(tmp)
        unit = "CPU seconds" if args.threads == 1 else "wall seconds"
        print(f"profile {args.profile}, {args.threads} torch thread(s) a run ({unit}), torch {torch.__version__}")
        print(f"papermill: a one-cell notebook importing fedlib and torch on the fedlib kernel {notebook:.1f} s\n")
        head = f"{'run':28s}" + "".join(f"{p:>11s}" for p in PARTS) + f"{'sum':>8s}{'whole':>8s}  checkpoint  params"
        print(head)
        totals = dict.fromkeys(PARTS, 0.0)
        for model in args.models:
            for mode in args.modes:
                r = profile_run({**base, "model": model, "mode": mode}, args.repeat, tmp)
                r["seconds"]["papermill"] = notebook
                for k, v in r["seconds"].items():
                    totals[k] += v
                name = f"{model}-{mode}"
                seen = whole.get(f"01_train-{name}-seed0")
                print(
                    f"{name:28s}"
                    + "".join(f"{r['seconds'][p]:11.1f}" for p in PARTS)
                    + f"{sum(r['seconds'].values()):8.0f}"
                    + (f"{seen:8.0f}" if seen is not None else f"{'-':>8s}")
                    + f"  {r['checkpoint_mb']:7.0f} MB x{r['counts']['checkpoints']}  {r['params'] / 1e6:.1f}M",
                    flush=True,
                )
        grand = sum(totals.values())
        print(f"{'all runs':28s}" + "".join(f"{totals[p]:11.1f}" for p in PARTS) + f"{grand:8.0f}")
        print(f"{'share':28s}" + "".join(f"{totals[p] / grand:11.0%}" for p in PARTS))


if __name__ == "__main__":
    sys.exit(main())
