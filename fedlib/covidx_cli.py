"""``fedlib covidx build`` and ``fedlib covidx check``: a COVIDx folder from its public sources.

``fedlib.cli.build_parser`` registers them with one call, ``add_commands(sub)``; the
work is in ``fedlib.data.covidx_build``.
"""

from __future__ import annotations

import argparse
import os

from .errors import UserError


def add_commands(subparsers) -> None:
    """Add ``covidx`` with its ``build`` and ``check`` commands to fedlib's subparsers."""
    p = subparsers.add_parser("covidx", help="assemble a COVIDx folder from its public sources, or check one")
    sub = p.add_subparsers(dest="covidx_command", required=True)

    b = sub.add_parser(
        "build",
        help="copy (or convert) every image a release's split files list from the sources you downloaded",
        description="Find every image the split files list in the source its line names, copy or convert it into "
        "OUT/train, OUT/test (OUT/val), write the split files and covidx-manifest.csv. Resumable: a second run "
        "writes only what is absent or changed. See docs/covidx-build.md.",
    )
    b.add_argument(
        "--train-split", required=True, help="path of the release's train split file, e.g. downloads/train_split_v3.txt"
    )
    b.add_argument(
        "--test-split", required=True, help="path of the release's test split file, e.g. downloads/test_split_v3.txt"
    )
    b.add_argument("--val-split", default=None, help="path of the release's validation split file, if it has one")
    b.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a source's folder, once per source: cohen, fig1, actmed (GitHub clones), sirm (COVID-19 Radiography "
        "Database), rsna (RSNA Pneumonia Detection Challenge)",
    )
    b.add_argument("--out", required=True, help="the COVIDx folder to create (or an earlier build's, to resume)")
    b.add_argument(
        "--allow-missing",
        action="store_true",
        help="build without the lines whose image is absent from its source (their count is printed)",
    )
    b.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes that read and convert images (default: the CPU count, at most 8)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("check", help="verify a built COVIDx folder against its split files and manifest")
    c.add_argument("--data", required=True, help="the folder covidx build made")
    c.set_defaults(func=cmd_check)


def parse_sources(values: list[str]) -> dict[str, str]:
    """``["cohen=DIR", ...]`` -> ``{"cohen": "DIR"}``; a malformed or repeated one is a UserError."""
    sources: dict[str, str] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--source {value!r}: write NAME=DIR, e.g. --source rsna=/data/rsna-pneumonia")
        if name in sources:
            raise UserError(f"--source {name} is given twice ({sources[name]} and {folder}); give each source once")
        sources[name] = folder
    if not sources:
        raise UserError("covidx build needs the sources' folders: --source NAME=DIR, once per source")
    return sources


def cmd_build(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .data.covidx_build import build

    splits = {"train": args.train_split, "test": args.test_split}
    if args.val_split:
        splits["val"] = args.val_split
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: give 1 or more processes")
    progress = (
        None if args.quiet else (lambda items, total: tqdm(items, total=total, desc="covidx build", unit="image"))
    )
    report = build(
        splits, parse_sources(args.source), args.out, args.allow_missing, progress=progress, workers=args.workers
    )
    print(report.describe(args.out))


def cmd_check(args: argparse.Namespace) -> None:
    from .data.covidx_build import check

    report = check(args.data)
    if not report.ok:
        raise UserError(report.describe(args.data))
    print(report.describe(args.data))
