"""Every knob of a training run, with the paper's values as defaults.

A run is fully described by one ``TrainConfig``: ``config.json`` in the run
directory holds it resolved, so ``fedlib train --config runs/X/config.json``
repeats the run. Profiles are named sets of overrides: ``paper`` is the
paper's protocol (its Table 1 as the authors' code runs it, docs/protocol.md), ``quick`` the same code at CPU size,
``smoke`` seconds for tests. Precedence: defaults < profile < config file < CLI.

The parts: ``fields`` (TrainConfig, each field with its section, help, flag and whether
``--resume`` may change it), ``profiles``, ``validate`` (the checks), ``load`` (resolve,
files, resume) and ``flags`` (the command-line options made from the fields).
"""

from __future__ import annotations

from .fields import FIELDS, LAYOUT, RESUME_CHANGEABLE, SECTIONS, TrainConfig, knob, section_fields
from .load import absolute_paths, from_dict, load_file, load_saved, replace, resolve, resume_config, to_dict
from .profiles import CUDA_EVAL_BATCH, PROFILE_MODEL_OVERRIDES, PROFILES, eval_batch_size
from .validate import (
    CLASS_WEIGHTS,
    DEVICES,
    ENGINES,
    MAX_IMAGE_SIZE,
    MODES,
    POOLED_BUDGETS,
    check_types,
    validate,
)

__all__ = [
    "CLASS_WEIGHTS",
    "CUDA_EVAL_BATCH",
    "DEVICES",
    "ENGINES",
    "FIELDS",
    "LAYOUT",
    "MAX_IMAGE_SIZE",
    "MODES",
    "POOLED_BUDGETS",
    "PROFILES",
    "PROFILE_MODEL_OVERRIDES",
    "RESUME_CHANGEABLE",
    "SECTIONS",
    "TrainConfig",
    "absolute_paths",
    "check_types",
    "eval_batch_size",
    "from_dict",
    "knob",
    "load_file",
    "load_saved",
    "replace",
    "resolve",
    "resume_config",
    "section_fields",
    "to_dict",
    "validate",
]
