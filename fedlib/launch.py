"""``launch.run(cfg, out)``: a training run on the engine its config names.

``inprocess`` and ``flower-sim`` end in ``fedlib.runner.train`` in this process (the
simulation through Flower's ServerApp); ``flower`` submits the run to a SuperLink,
whose ServerApp calls ``fedlib.runner.train`` on its machine. This is the entry of
``fedlib train``, ``fedlib reproduce`` and the notebooks; it sits above both the runner
and ``fedlib.flower`` so that neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .run.folder import real_out
from .runner import train


def run(
    cfg: TrainConfig,
    out: str | Path,
    *,
    superlink: str | None = None,
    root_certificates: str | None = None,
    deadline: float | None = None,
    **flags,
) -> dict:
    """Train ``cfg`` into ``out``; returns final.json's content. ``flags``: the run folder's
    ``resume``, ``overwrite`` and ``progress``, as ``fedlib.runner.train`` takes them.
    ``superlink``, ``root_certificates`` and ``deadline`` (seconds) are for the ``flower``
    engine (see ``fedlib.flower.run_flower``)."""
    out = real_out(out)  # a link's target: renames and deletions never act on the link
    if cfg.engine == "inprocess":
        return train(cfg, out, **flags)
    from .flower import run_flower

    return run_flower(cfg, out, superlink=superlink, root_certificates=root_certificates, timeout=deadline, **flags)
