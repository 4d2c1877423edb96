"""fedlib on Flower: the same FedAvg in Flower's simulation runtime or on a real
SuperLink / SuperNode deployment (see docs/flower.md).

Telemetry and update checks are off unless the user turned them on, so that
fedlib talks to nothing but the SuperLink it was given.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from .engine import run_flower  # noqa: E402

__all__ = ["run_flower"]
