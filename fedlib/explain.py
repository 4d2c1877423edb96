"""``fedlib explain``: the Grad-CAM++ figure of one trained run, written to a file.

The figure is ``fedlib.report.gradcam.run_figure``'s and the writer ``fedlib.report.io``'s;
the maps, the paper's Figures 6-8 and the localisation table are in ``fedlib.report``.
The output is checked before any work: it is never a file of the data the run reads, nor one
of the run's own files (``gradcam.png`` aside), nor a folder.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .report.gradcam import run_figure
from .report.io import write_figure
from .run import results
from .run.folder import RUN_ENTRIES, data_roots


def explain_run(run_dir, images=None, out=None, split: str = "test", seed: int = 0, device: str = "auto") -> Path:
    """Grad-CAM++ of one run: each chosen image above its map, captioned with the predicted
    class and probability; written to ``out`` (default ``<run_dir>/gradcam.png``), which is returned."""
    target = Path(out) if out is not None else Path(run_dir) / "gradcam.png"
    check_out(target, run_dir)
    fig = run_figure(run_dir, images, split, seed, device)
    return write_figure(fig, target)


def check_out(target: Path, run_dir) -> None:
    """Refuse an output that would overwrite what the run reads or is: its data, its files."""
    run = results.load_run(run_dir)
    cfg = run.train_config
    if cfg.data != "synthetic" and not Path(cfg.data).is_dir():  # explain has no --data: say where it looks
        raise UserError(
            f"the data {run_dir} was trained on, {cfg.data}, is not there any more; explain reads the images "
            f"from where {Path(run_dir) / 'config.json'} says, so put the data set back there."
        )
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; name the PNG file to write, e.g. {target / 'gradcam.png'}.")
    resolved = target.resolve()
    for root in data_roots(cfg):
        root = Path(root).resolve()
        if resolved.is_relative_to(root):
            raise UserError(f"--out {target} lies inside the data the run reads ({root}); choose another --out.")
    inside_run = resolved.relative_to(run.path.resolve()) if resolved.is_relative_to(run.path.resolve()) else None
    if inside_run is not None and inside_run.parts[0] in RUN_ENTRIES and inside_run != Path("gradcam.png"):
        raise UserError(f"--out {target} is a file of the run {run.path} itself; choose another --out.")
