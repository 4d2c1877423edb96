"""A ``TrainConfig`` from its sources: defaults < profile < config file < options, and a
saved run's ``config.json`` with what ``--resume`` may change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import yaml

from ..errors import UserError, bounded
from .fields import FIELDS as _FIELDS
from .fields import RESUME_CHANGEABLE, TrainConfig
from .profiles import PROFILE_MODEL_OVERRIDES, PROFILES
from .validate import validate


def from_dict(values: dict, source: str = "config") -> dict:
    """Check keys and types of a partial config; unknown keys are an error, not ignored."""
    unknown = sorted(map(str, set(values) - set(_FIELDS)))
    if unknown:
        raise UserError(
            f"{source} has unknown key(s) {bounded(', '.join(unknown))}; valid keys are the fields of "
            "fedlib.config.TrainConfig (fedlib train --help lists them)."
        )
    return dict(values)


def load_file(path: str | Path) -> dict:
    """Read a JSON or YAML config file (partial configs are fine)."""
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise UserError(f"config file {path} {what}; pass an existing JSON or YAML file to --config.")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(
                f"config file {path} holds {path.stat().st_size} bytes, more than a config file can need "
                f"(at most {MAX_CONFIG_BYTES}); pass the right file."
            )
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else _load_yaml(text, path)
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read ({exc.strerror}); check its permissions.") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # YAML's messages span several lines
        raise UserError(f"config file {path} is not valid JSON/YAML ({bounded(detail)}); fix its syntax.") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values.")
    return from_dict(values, source=f"config file {path}")


# A config file holds a few dozen settings: a megabyte is far more than any needs, and a
# file above it is the wrong file (or an attack), refused before it is parsed.
MAX_CONFIG_BYTES = 2**20


def _load_yaml(text: str, path: Path):
    """``yaml.safe_load`` without aliases: a few hundred bytes of nested aliases expand to
    millions of values (a 269-byte file gave an 80 MB error line)."""
    if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
        raise UserError(
            f"config file {path} uses YAML aliases (*name), which fedlib does not expand; write the values out."
        )
    return yaml.safe_load(text)


def resolve(profile: str = "paper", file: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults < profile (and its per-model exceptions) < config file < explicit overrides
    (None means 'not given')."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    values = {**PROFILES[profile], "profile": profile}
    from_file = load_file(file) if file is not None else {}
    given = {k: v for k, v in from_dict(overrides, "options").items() if v is not None}
    model = given.get("model", from_file.get("model", TrainConfig.model))
    values.update(PROFILE_MODEL_OVERRIDES.get(profile, {}).get(model, {}))
    values.update(from_file)
    values.update(given)
    return validate(TrainConfig(**values))


def load_saved(run_dir: str | Path) -> TrainConfig:
    """The config.json of a run, checked like any config file (a damaged or hand-edited one
    is one clear error, not a traceback)."""
    path = Path(run_dir) / "config.json"
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--resume: {run_dir} holds no run to resume; drop --resume to start it.") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is damaged ({exc}); restore it, or start the run again with --overwrite.") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is damaged (not a mapping); restore it, or start the run again with --overwrite.")
    return validate(TrainConfig(**from_dict(values, source=str(path))))


def resume_config(saved: TrainConfig, given: dict, run_dir: str | Path = "the run") -> TrainConfig:
    """The saved config with the given values applied; only RESUME_CHANGEABLE fields may
    change (None means not given). Anything else is refused in one line."""
    current = asdict(saved)
    changes = {
        k: v for k, v in from_dict(given, "options").items() if v is not None and k != "profile" and current[k] != v
    }
    refused = [k for k in changes if k not in RESUME_CHANGEABLE]
    if refused:
        shown = ", ".join(f"{k} ({current[k]!r} -> {changes[k]!r})" for k in sorted(refused))
        raise UserError(
            f"--resume continues {run_dir} as its config.json says and cannot change {shown}; "
            "drop those options, or start a new run with another --out."
        )
    return validate(dataclasses.replace(saved, **changes))


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The config with absolute data paths: config.json then repeats the run from any
    folder, and other processes (Flower sites) find the same files."""
    data = cfg.data if cfg.data == "synthetic" else str(Path(cfg.data).resolve())
    return dataclasses.replace(cfg, data=data, data_dir=str(Path(cfg.data_dir).resolve()))


def to_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return validate(dataclasses.replace(cfg, **changes))
