"""The run's marker, ``.fedlib-run``: written first into every run folder (what --overwrite may
replace), and holding a copy of config.json as the run wrote it, so that ``--resume`` tells a
hand edit from the run's own record (``check_config``) and names the keys that changed."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError, bounded
from .io import atomic_write_text, json_text

MARKER = ".fedlib-run"  # written first into every run folder: what --overwrite may replace
MARKER_HEAD = "fedlib run folder\n"
_COPY = "config "  # a marker line holding a copy of config.json as the run wrote it


def _copies(run_dir: Path) -> list[dict]:
    """The copies of config.json the marker holds (none for a run of an older fedlib)."""
    try:
        lines = (Path(run_dir) / MARKER).read_text().splitlines()
        return [json.loads(line[len(_COPY) :]) for line in lines if line.startswith(_COPY)]
    except (OSError, ValueError):
        return []


def _write_marker(run_dir: Path, copies: list[dict]) -> None:
    text = MARKER_HEAD + "".join(f"{_COPY}{json.dumps(c, separators=(',', ':'))}\n" for c in copies)
    atomic_write_text(Path(run_dir) / MARKER, text)


def write_config(run_dir: Path, values: dict) -> None:
    """Write config.json, and a copy of it into the run's marker: ``--resume`` then tells a
    hand edit from what the run wrote (``check_config``). The marker accepts the old and the
    new config while config.json is replaced, so a kill between the writes refuses nothing."""
    run_dir = Path(run_dir)
    text = json_text(values)
    new = json.loads(text)
    _write_marker(run_dir, [*_copies(run_dir)[-1:], new])
    atomic_write_text(run_dir / "config.json", text)
    _write_marker(run_dir, [new])


def check_config(run_dir: Path) -> None:
    """Refuse a config.json that differs from what the run wrote (a hand edit), naming the
    changed keys, as a refused option is; a run of an older fedlib has no copy to check."""
    run_dir = Path(run_dir)
    copies = _copies(run_dir)
    try:
        current = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return  # missing or damaged: config.load_saved says so in its words
    if not copies or current in copies:
        return
    written = copies[-1]
    keys = (
        sorted(k for k in set(written) | set(current) if written.get(k) != current.get(k))
        if isinstance(current, dict)
        else []
    )
    shown = ", ".join(f"{k} ({written.get(k)!r} -> {current.get(k)!r})" for k in keys) or "its content"
    raise UserError(
        f"{run_dir}/config.json was edited after the run wrote it: {bounded(shown)}; --resume continues a run "
        "as it was trained, so put the values back, or start a new run with another --out (or --overwrite)."
    )
