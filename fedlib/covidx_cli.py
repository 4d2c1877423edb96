"""``fedlib covidx build`` and ``fedlib covidx check``: a COVIDx folder from its public sources;
``fedlib data-summary``: what a COVIDx folder holds.

``fedlib.cli.build_parser`` registers them with one call, ``add_commands(sub)``; the
work is in ``fedlib.data.covidx_build``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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


def add_data_summary(subparsers) -> None:
    """Add ``data-summary`` to fedlib's subparsers."""
    from .config import flags

    p = subparsers.add_parser("data-summary", help="image counts per split, class and source")
    p.add_argument("--data", required=True, help="COVIDx root folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    flags.add_layout_flags(p)
    p.set_defaults(func=cmd_data_summary)


def cmd_data_summary(args) -> None:
    from .config import LAYOUT, flags
    from .data.baseline import source_only_of
    from .data.covidx import Layout, class_names, patient_overlap, summarize
    from .data.releases import detect_layout, known_release

    root = Path(args.data)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist; pass a COVIDx folder to --data.")
    layout, note = detect_layout(root, Layout(**flags.given(args, LAYOUT)))
    if note:
        print(f"fedlib: note: {note}", file=sys.stderr)
    summary = summarize(root, layout)
    leaked = patient_overlap(root, layout)
    if leaked:
        shown = ", ".join(leaked[:10]) + (" ..." if len(leaked) > 10 else "")
        print(f"warning: {len(leaked)} patient id(s) appear in both train and test: {shown}", file=sys.stderr)
    for split, rep in summary["repeated"].items():
        if rep["lines"]:  # real releases have them; the counts above are of distinct images
            shown = ", ".join(rep["first"]) + (" ..." if rep["images"] > len(rep["first"]) else "")
            other = f", {rep['other_patient_id']} of them with another patient id" if rep["other_patient_id"] else ""
            print(
                f"warning: {rep['lines']} line(s) of the {split} split repeat an image listed before with the "
                f"same label ({rep['images']} image(s): {shown}{other}); each image is counted once",
                file=sys.stderr,
            )
    release = known_release(summary)
    baseline = source_only_of(root, layout)
    if args.json:
        extra = {"release": release.name if release else None, "source_only_baseline": baseline}
        print(json.dumps({**summary, **extra}, indent=2))
        return
    classes = class_names(summary["task"])
    print(f"{'split':<8}" + "".join(f"{c:>12}" for c in classes) + f"{'total':>10}")
    for split in layout.split_names():
        counts = summary[split]
        print(f"{split:<8}" + "".join(f"{counts[c]:>12}" for c in classes) + f"{counts['total']:>10}")
    for split, by_source in summary["sources"].items():
        print(f"sources ({split}): " + ", ".join(f"{s}={n}" for s, n in sorted(by_source.items())))
    print(f"task: {summary['task']}")
    if release:
        print(f"release: {release.name} (counts as published: {release.source})")
    if baseline is None:
        print("source-only baseline: none (the train split names fewer than two sources)")
    else:
        rule = ", ".join(f"{s} -> {c}" for s, c in baseline["rule"].items())
        print(
            f"source-only baseline (each source's most common train class, scored on test: {rule}): accuracy "
            f"{baseline['accuracy']:.3f}, balanced accuracy {baseline['balanced_accuracy']:.3f}, "
            f"{baseline['positive_class']} sensitivity {baseline['positive_sensitivity']:.3f}"
        )
