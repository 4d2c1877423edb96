"""The fedlib command line: `fedlib <command> --help` for each command.

A ``UserError`` (bad path, label, parameter) prints one line and exits with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
import warnings

from .config import LAYOUT, PROFILES, flags
from .config.validate import one_validation
from .covidx_cli import add_commands as add_covidx_commands
from .covidx_cli import add_data_summary
from .errors import UserError, remedy


def _layout(args):
    from .data.covidx import Layout

    return Layout(**flags.given(args, LAYOUT))


def cmd_synth(args) -> None:
    from .data.synthetic import SynthConfig, write_synthetic

    cfg = SynthConfig(
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
        sources=args.sources,
        class_mix=args.class_mix,
    )
    summary = write_synthetic(args.out, cfg, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote SYNTHETIC chest X-rays to {args.out}")
    print(json.dumps(summary, indent=2, default=str))


def train_config(args):
    from . import config
    from .run import folder

    overrides = one_validation(flags.given(args))  # every TrainConfig flag typed; the rest as the profile says
    folder.check_flags(resume=args.resume, overwrite=args.overwrite)  # before config.json is read
    if getattr(args, "run_config", None):
        overrides, args.profile = _with_run_config(overrides, args.run_config, args.profile)
    if args.resume and args.out is not None:
        # The saved config decides; only what the user typed (options, --config) may change it.
        given = {k: v for k, v in overrides.items() if v is not None}
        if args.config is not None:
            given = {**config.load_file(args.config), **given}
        folder.recover_leftovers(folder.real_out(args.out))  # a swap a kill cut short, before reading it
        saved = config.load_saved(args.out)  # a damaged or invalid config.json: its own words
        folder.check_config(args.out)  # a hand edit of config.json is refused like a changed option
        return config.resume_config(saved, given, args.out)
    return config.resolve(args.profile, args.config, **overrides)


def _with_run_config(overrides: dict, text: str, profile: str) -> tuple[dict, str]:
    """Options plus Flower's ``--run-config`` settings; a setting given both ways must agree."""
    from .flower.runconfig import parse

    given = parse(text)
    profile = given.pop("profile", profile)  # --profile has a default, so the run config's wins
    for key, value in given.items():
        typed = overrides.get(key)
        if typed is not None and typed != value:
            raise UserError(
                f"--run-config sets {key.replace('_', '-')}={value!r} but an option sets it to {typed!r}; give it once."
            )
    return {**overrides, **given}, profile


def cmd_train(args) -> None:
    from .launch import run

    cfg = train_config(args)
    final = run(
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        superlink=args.superlink,
        root_certificates=args.root_certificates,
        deadline=args.deadline,
    )
    _print_final(final, args.out)


def _print_final(final: dict, out: str) -> None:
    print(
        f"{final['model']} {final['mode']}: train accuracy {final['train']['accuracy']:.4f}, "
        f"test accuracy {final['test']['accuracy']:.4f} on {final['data_description']}"
    )
    print(f"run directory: {out}")


def cmd_flower_local(args) -> None:
    from .deploy.local import LocalRun, run_local

    if not args.keep_up and args.out is None:
        raise UserError(
            "fedlib flower-local needs --out (the run directory), or --keep-up to only start "
            "the SuperLink and SuperNodes."
        )
    args.engine = args.engine or "flower"  # what flower-local runs, so --secagg validates
    how = LocalRun(
        keep_up=args.keep_up,
        workdir=args.workdir,
        warm=args.warm,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    final = run_local(train_config(args), args.out, how)
    if final is not None:
        _print_final(final, args.out)


def cmd_params(args) -> None:
    from .models import MODEL_NAMES, param_table

    for row in param_table(MODEL_NAMES):
        pub = f" (published {row['published_millions']:.1f}M)" if row.get("published_millions") else ""
        print(f"{row['display_name']:<24}{row['params_millions']:>10.2f}M{pub}")


# The training options ``fedlib reproduce`` passes to every run (with the COVIDx layout).
REPRODUCE_FIELDS = ("val_fraction", "class_weight", "pooled_budget", "parallel_clients", "compile")


def cmd_reproduce(args) -> None:
    from .reproduce import reproduce

    # Fields of every run's config (and of 00_data's); None: as the profile says.
    overrides = one_validation(flags.given(args, (*LAYOUT, *REPRODUCE_FIELDS)))
    seeds = args.seeds if args.seeds is not None else None if args.seed is None else [args.seed]
    reproduce(
        profile=args.profile,
        data=args.data,
        models=args.models,
        modes=args.modes,
        seeds=seeds,
        force=args.force,
        runs_dir=args.runs_dir,
        figures_dir=args.figures_dir,
        reports_dir=args.reports_dir,
        device=args.device,
        progress=not args.quiet,
        overrides=overrides,
        jobs=args.jobs,
        threads=args.threads,
    )


def cmd_study(args) -> None:
    from pathlib import Path

    from . import study
    from .reproduce import NOTEBOOKS_DIR, check_study_options, execute
    from .run.folder import data_set, study_paths

    check_study_options(args.seeds, runs_dir=args.runs_dir, figures_dir=args.figures_dir, report=args.report)
    overrides = one_validation({k: getattr(args, k) for k in LAYOUT if getattr(args, k) is not None})
    grid = study.Study(profile=args.profile, data=args.data)
    grid.overrides.update(overrides)
    tag = data_set(study.run_config(grid, "iid", None, "pooled", 0), progress=not args.quiet).tag
    paths = study_paths(args.profile, args.data, tag)  # folders of its own per profile and data set
    figures_dir = args.figures_dir or str(paths.figures)
    report = Path(args.report or paths.report)
    parameters = {
        "overrides": overrides,
        "profile": args.profile,
        "data": args.data,
        "seeds": args.seeds,
        "runs_dir": args.runs_dir or str(paths.runs),
        "figures_dir": figures_dir,
        "force": args.force,
    }
    execute(NOTEBOOKS_DIR / "05_non_iid.ipynb", report, parameters, progress=not args.quiet)
    print(f"figures and tables in {figures_dir}; executed notebook {report}")


def cmd_explain(args) -> None:
    from .explain import explain_run

    out = explain_run(
        run_dir=args.run, images=args.images, out=args.out, split=args.split, seed=args.seed, device=args.device
    )
    print(f"wrote {out}")


def _train_args(p: argparse.ArgumentParser, out_required: bool) -> None:
    """The options of one training run (``fedlib train`` and ``fedlib flower-local``): every
    TrainConfig field with a flag, grouped by section."""
    p.add_argument("--profile", default="quick", help=f"{' | '.join(PROFILES)} (default quick)")
    p.add_argument("--config", help="JSON or YAML file of TrainConfig fields")
    p.add_argument("--out", required=out_required, help="run directory, e.g. runs/resnet18-fedavg")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    flags.add_train_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedlib", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic COVIDx-format data set")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--n-train", type=int, default=1600, help="train images, 1 to 300000 (default 1600)")
    p.add_argument("--n-test", type=int, default=400, help="test images, 1 to 300000 (default 400)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels, 32 to 2048 (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", type=int, default=4, help="number of simulated hospitals, 1 to 511 (default 4)")
    p.add_argument("--class-mix", default="balanced", help="balanced | covidx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    add_data_summary(sub)

    p = sub.add_parser("train", help="train one model in one mode into a run directory")
    _train_args(p, out_required=True)
    g = p.add_argument_group("Flower deployment (--engine flower)")
    g.add_argument("--superlink", help="HOST:PORT of the running SuperLink to submit the run to")
    g.add_argument("--root-certificates", help="CA certificate (PEM) of the SuperLink's TLS; without it, insecure")
    g.add_argument(
        "--run-config",
        help="the run's settings in Flower's run-config syntax, e.g. 'rounds=5 strategy=\"fedprox\"' "
        "(keys: TrainConfig fields with dashes); any engine",
    )
    g.add_argument(
        "--deadline",
        type=float,
        help="seconds the whole Flower run may take before fedlib stops waiting (default: no limit)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "flower-local",
        help="a Flower SuperLink and one SuperNode per client on loopback: "
        "run a job on them (--out) or keep them up (--keep-up)",
    )
    _train_args(p, out_required=False)
    p.add_argument("--keep-up", action="store_true", help="only start them, print how to submit, stop on Ctrl-C")
    p.add_argument(
        "--warm",
        action="store_true",
        help="fedlib's warm SuperNodes (patch Flower 1.42 internals; checked, stock if they do not apply) "
        "instead of stock flower-supernode",
    )
    p.add_argument(
        "--workdir",
        help="where Flower's home and logs go (default: a temporary folder, removed after a successful job)",
    )
    p.set_defaults(func=cmd_flower_local)

    p = sub.add_parser("study", help="the non-IID hospitals study: notebook 05_non_iid headless (trains, then plots)")
    p.add_argument("--profile", default="quick", help="quick (CPU, about 20 minutes) | paper (GPU)")
    flags.add_flag(p, "data", default="synthetic")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every run (default: 0)")
    p.add_argument("--force", action="store_true", help="retrain every run from scratch")
    p.add_argument(
        "--runs-dir", default=None, help="where run directories go (default runs/study/<profile>/<data tag>)"
    )
    p.add_argument(
        "--figures-dir",
        default=None,
        help="where figures and tables go (default figures/study for the quick synthetic study, "
        "figures/study/<profile>-<data tag> otherwise)",
    )
    p.add_argument(
        "--report", default=None, help="the executed notebook (default reports/study/05_non_iid-<profile>.ipynb)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    flags.add_layout_flags(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("reproduce", help="run every notebook in order with papermill (trains, then plots)")
    p.add_argument("--profile", default="quick", help="quick (CPU, minutes) | paper (GPU) | smoke")
    flags.add_flag(p, "data", default="synthetic")
    p.add_argument("--models", nargs="+", default=None, help="models to train (default: the paper's four)")
    p.add_argument("--modes", nargs="+", default=None, help="training modes (default: fedavg central)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", nargs="+", type=int, help="train each model and mode per seed (default: quick 0 1 2, else 0)"
    )
    seeds.add_argument("--seed", type=int, default=None, help="one seed: the same as --seeds N")
    p.add_argument(
        "--force", action="store_true", help="retrain runs that already exist, finished or not, whatever their config"
    )
    p.add_argument(
        "--runs-dir",
        default=None,
        help="where run directories go (default runs/<profile>/<data tag>, the tag being the data "
        "set's name and fingerprint, e.g. runs/quick/synthetic-1a2b3c4d)",
    )
    p.add_argument(
        "--figures-dir",
        default=None,
        help="where figures and tables go (default figures/ for the profile's synthetic set, "
        "figures/<profile>-<data tag>/ for any other data set)",
    )
    p.add_argument(
        "--reports-dir",
        default=None,
        help="where executed notebooks go (default reports/<profile>/ for the profile's synthetic "
        "set, reports/<profile>-<data tag>/ for any other data set)",
    )
    flags.add_flag(p, "device", default="auto")
    p.add_argument("--jobs", type=int, help="training notebooks at once (default: 2 for quick, 1 for paper and smoke)")
    p.add_argument("--threads", type=int, help="each training kernel's torch threads (default: cores / --jobs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "training options for every run (default: as the profile says)",
        "a run folder trained with other values is not reused (--parallel-clients aside: it does not change the updates)",
    )
    flags.add_flags(g, REPRODUCE_FIELDS)
    flags.add_layout_flags(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("explain", help="Grad-CAM++ maps of one trained run")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quick/resnet18-fedavg")
    p.add_argument(
        "--images",
        nargs="*",
        default=None,
        help="image file names from the split (default: one per class, chosen by --seed)",
    )
    p.add_argument("--split", default="test", help="train | test")
    p.add_argument("--out", default=None, help="output PNG (default <run>/gradcam.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("params", help="parameter count of every model (the paper's Table 2 column)")
    p.set_defaults(func=cmd_params)
    add_covidx_commands(sub)
    return parser


_show_warning = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """fedlib's own warnings (a patient leak) as one line; others as Python shows them."""
    if category.__module__.startswith("fedlib"):
        print(f"fedlib: warning: {message}", file=file or sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _notes(exc: BaseException) -> str:
    """What the runner added on the way out (whether an earlier run is intact, how to resume)."""
    return "".join(f"; {n}" for n in getattr(exc, "__notes__", []))


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as cleanly as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return _run(argv)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fedlib: error: {str(exc).rstrip('.')}{_notes(exc)}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        notes = getattr(exc, "__notes__", [])
        print("fedlib: interrupted" + "".join(f"; {n}" for n in notes), file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, a read-only or vanished folder: the system's words, one line
        if args.debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"fedlib: error: cannot read or write{where} ({exc.strerror or exc}); {remedy(exc)}, then run the "
            "command again" + _notes(exc) + ".",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
