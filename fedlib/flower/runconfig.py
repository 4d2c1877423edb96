"""The run's settings as Flower's run config: what ``flwr run --run-config`` can change.

The Flower App (``app/pyproject.toml``) declares one run-config key per fedlib setting:
the TrainConfig field with dashes (``rounds``, ``strategy``, ``proximal-mu``, ...),
default ``""`` for "from ``train-config`` or the profile". So a Flower user changes rounds
or the strategy as with any Flower App::

    flwr run fedlib/flower/app fedlib --run-config 'run-dir="/srv/runs/r" rounds=5 strategy="fedprox"'

Precedence: the profile's defaults < ``train-config`` (JSON) < the single keys.
``fedlib train --engine flower --run-config '...'`` takes the same text.
"""

from __future__ import annotations

import dataclasses
import json

from .. import config
from ..config import TrainConfig
from ..errors import UserError

OWN_KEYS = ("train-config", "run-dir", "resume", "overwrite")  # the run's, not a TrainConfig field's
INTERNAL = ("engine", "data_fingerprint")  # set by fedlib, never by a user
UNSET = ""  # a single key's default: take the value from train-config or the profile


def keys() -> list[str]:
    """The run-config key of every TrainConfig field a user may set."""
    return [f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig) if f.name not in INTERNAL]


def settings(run_config) -> dict:
    """TrainConfig values from a run config: ``train-config``'s JSON, then every single key
    that is not ``UNSET``."""
    try:
        values = json.loads(str(run_config.get("train-config", "{}")) or "{}")
    except json.JSONDecodeError as exc:
        raise UserError(f"run config train-config is not valid JSON ({exc}); give a JSON object.") from None
    if not isinstance(values, dict):
        raise UserError("run config train-config must be a JSON object of TrainConfig fields.")
    valid = set(keys())
    for key, value in run_config.items():
        if key in OWN_KEYS or value == UNSET:
            continue
        if key not in valid:
            raise UserError(
                f"run config key {key!r} is not a fedlib setting; use a TrainConfig field with dashes "
                "(rounds, strategy, proximal-mu, ...)."
            )
        values[key.replace("-", "_")] = value
    return config.from_dict(values, "the run config")


def parse(text: str | None) -> dict:
    """``--run-config`` text (Flower's syntax: ``key=value`` pairs, TOML values) as settings."""
    if not text:
        return {}
    from flwr.common.config import parse_config_args

    try:
        parsed = parse_config_args([text])
    except Exception as exc:  # noqa: BLE001 -- Flower raises ValueError or TOML errors
        raise UserError(f"--run-config {text!r} is not Flower's key=value syntax ({exc}).") from None
    return settings(parsed)
