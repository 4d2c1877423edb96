"""``fedlib explain``: the Grad-CAM++ figure of one trained run, written to a file.

The figure is ``fedlib.report.gradcam.run_figure``'s and the writer ``fedlib.report.io``'s;
the maps, the paper's Figures 6-8 and the localisation table are in ``fedlib.report``.
"""

from __future__ import annotations

from pathlib import Path

from .report.gradcam import run_figure
from .report.io import write_figure


def explain_run(run_dir, images=None, out=None, split: str = "test", seed: int = 0, device: str = "auto") -> Path:
    """Grad-CAM++ of one run: each chosen image above its map, captioned with the predicted
    class and probability; written to ``out`` (default ``<run_dir>/gradcam.png``), which is returned."""
    fig = run_figure(run_dir, images, split, seed, device)
    return write_figure(fig, Path(out) if out is not None else Path(run_dir) / "gradcam.png")
