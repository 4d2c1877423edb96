"""Checks of a ``TrainConfig``: every field's type, then each value, one sentence per problem."""

from __future__ import annotations

import math
from dataclasses import fields

from ..errors import UserError, quoted
from .fields import TrainConfig
from .profiles import PROFILES

MODES = ("fedavg", "central", "local")
POOLED_BUDGETS = ("paper", "matched")
CLASS_WEIGHTS = ("none", "balanced")
ENGINES = ("inprocess", "flower-sim", "flower")
DEVICES = ("auto", "cpu", "cuda", "mps")
# The paper trains at 224 px; 1024 covers any higher-resolution study, and a cached
# training set at 4096 px would need ~50 MB per image (an unbounded size took all memory).
MAX_IMAGE_SIZE = 1024


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text", "None": "null"}


def _type_ok(value, kinds: list[str]) -> bool:
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return "int" in kinds or "float" in kinds
    if isinstance(value, float):
        return "float" in kinds
    return isinstance(value, str) and "str" in kinds


def check_types(cfg: TrainConfig) -> None:
    """Every field against its annotation, in one place: a config file's ``amp: "no"`` or
    ``seed: abc`` is named here instead of failing (or silently meaning yes) later."""
    for f in fields(TrainConfig):
        kinds = [k.strip() for k in str(f.type).split("|")]
        value = getattr(cfg, f.name)
        if not _type_ok(value, kinds):
            expected = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
            raise UserError(
                f"config field {f.name} must be {expected}, got {quoted(value)}; "
                "fix it in the config file or on the command line."
            )
        if isinstance(value, str) and "\0" in value:  # no path or name can hold one (a traceback once)
            raise UserError(
                f"config field {f.name} holds a NUL byte ({quoted(value)}); fix it in the config file or on "
                "the command line."
            )


def validate(cfg: TrainConfig) -> TrainConfig:
    """Reject impossible values before any work starts, one sentence each."""
    # Late: these pull in torch and torchvision, which the command line's --help does without.
    from ..aggregate import AGGREGATIONS
    from ..models import MODEL_NAMES
    from ..partition import PARTITIONS

    check_types(cfg)
    _check(  # first: the checks below count the clients a round from it (nan once was a traceback)
        isinstance(cfg.fraction, int | float) and 0 < cfg.fraction <= 1,
        f"--fraction must be in (0, 1], got {cfg.fraction}.",
    )

    _check(cfg.model in MODEL_NAMES, f"unknown model {cfg.model!r}; choose one of {', '.join(MODEL_NAMES)}.")
    _check(cfg.mode in MODES, f"unknown mode {cfg.mode!r}; choose one of {', '.join(MODES)}.")
    _check(cfg.partition in PARTITIONS, f"unknown partition {cfg.partition!r}; choose one of {', '.join(PARTITIONS)}.")
    _check(
        cfg.aggregation in AGGREGATIONS,
        f"unknown aggregation {cfg.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}.",
    )
    _check(cfg.engine in ENGINES, f"unknown engine {cfg.engine!r}; choose one of {', '.join(ENGINES)}.")
    _check(
        cfg.engine == "inprocess" or cfg.mode == "fedavg",
        f"--engine {cfg.engine} runs FedAvg only; use --engine inprocess for --mode {cfg.mode}.",
    )
    if cfg.secagg:
        _check(
            cfg.engine != "inprocess",
            "--secagg needs a Flower engine (--engine flower-sim or flower): "
            "in one process there is nobody to hide the updates from.",
        )
        _check(cfg.aggregation == "weighted", "--secagg averages by sample count; drop --aggregation uniform.")
        _check(not cfg.dp, "--secagg with differential privacy is not supported yet; use one of them.")
        _check(cfg.clients_per_round >= 2, "--secagg needs at least 2 clients a round; raise --fraction.")
    _check_strategy(cfg)
    _check(
        cfg.pooled_budget in POOLED_BUDGETS,
        f"unknown pooled budget {cfg.pooled_budget!r}; choose one of {', '.join(POOLED_BUDGETS)}.",
    )
    _check(
        cfg.class_weight in CLASS_WEIGHTS,
        f"unknown class weight {cfg.class_weight!r}; choose one of {', '.join(CLASS_WEIGHTS)}.",
    )
    _check(
        isinstance(cfg.val_fraction, int | float)
        and not isinstance(cfg.val_fraction, bool)
        and 0 <= cfg.val_fraction < 1,
        f"--val-fraction must be in [0, 1), got {cfg.val_fraction!r}.",
    )
    _check_validation_split(cfg)
    _check(cfg.device in DEVICES, f"unknown device {cfg.device!r}; choose one of {', '.join(DEVICES)}.")
    _check(cfg.profile in PROFILES, f"unknown profile {cfg.profile!r}; choose one of {', '.join(PROFILES)}.")
    for name in (
        "rounds",
        "clients",
        "local_epochs",
        "batch_size",
        "eval_every",
        "checkpoint_every",
        "eval_batch_size",
        "parallel_clients",
        "synth_n_train",
        "synth_n_test",
        "synth_sources",
        "min_clients",
    ):
        value = getattr(cfg, name)
        _check(
            isinstance(value, int) and value >= 1,
            f"--{name.replace('_', '-')} must be an integer of at least 1, got {value!r}.",
        )
    _check(
        isinstance(cfg.image_size, int) and 32 <= cfg.image_size <= MAX_IMAGE_SIZE,
        f"--image-size must be an integer from 32 to {MAX_IMAGE_SIZE}, got {cfg.image_size!r}.",
    )
    _check(
        isinstance(cfg.covidnet_grid, int) and 0 <= cfg.covidnet_grid <= 7,
        f"--covidnet-grid must be an integer from 0 (the input's own grid) to 7 (the paper's), "
        f"got {cfg.covidnet_grid!r}.",
    )
    _check(
        cfg.model_norm != "batch" or cfg.batch_size >= 2,
        f"--batch-size must be at least 2 for {cfg.model} (BatchNorm cannot normalise a single image), "
        f"got {cfg.batch_size}.",
    )
    for name in ("lr", "weight_decay", "alpha"):
        value = getattr(cfg, name)
        _check(
            isinstance(value, int | float) and math.isfinite(value) and value >= 0,
            f"--{name.replace('_', '-')} must be a finite non-negative number, got {value!r}.",
        )
    _check(cfg.lr > 0, f"--lr must be positive, got {cfg.lr}.")
    _check(
        isinstance(cfg.round_retries, int) and cfg.round_retries >= 0,
        f"--round-retries must be a non-negative integer, got {cfg.round_retries!r}.",
    )
    _check(
        cfg.client_timeout is None
        or (
            isinstance(cfg.client_timeout, int | float) and math.isfinite(cfg.client_timeout) and cfg.client_timeout > 0
        ),
        f"--client-timeout must be a positive number of seconds, got {cfg.client_timeout!r}.",
    )
    _check(
        isinstance(cfg.inject_failures, int | float) and 0 <= cfg.inject_failures <= 1,
        f"--inject-failures must be a probability in [0, 1], got {cfg.inject_failures!r}.",
    )
    _check(
        not (cfg.dp_noise_multiplier is not None and cfg.dp_target_epsilon is not None),
        "--dp-noise-multiplier and --dp-target-epsilon both set; pass one of them.",
    )
    for name in ("dp_noise_multiplier", "dp_target_epsilon"):
        value = getattr(cfg, name)
        _check(
            value is None or (isinstance(value, int | float) and math.isfinite(value) and value > 0),
            f"--{name.replace('_', '-')} must be a positive number, got {value!r}.",
        )
    for name in ("dp_delta", "dp_max_grad_norm"):
        value = getattr(cfg, name)
        _check(
            isinstance(value, int | float) and math.isfinite(value) and value > 0,
            f"--{name.replace('_', '-')} must be a positive number, got {value!r}.",
        )
    _check(cfg.dp_delta < 1, f"--dp-delta must be below 1, got {cfg.dp_delta}.")
    _check(
        not cfg.dp or cfg.mode == "fedavg",
        f"differential privacy protects what clients send, so it needs --mode fedavg, not {cfg.mode}.",
    )
    _check(
        not (cfg.compile and cfg.dp),
        "--compile with differential privacy is not supported: Opacus trains through its own expanded "
        "weights, which torch.compile does not trace; use one of them.",
    )
    for name in ("central_epochs", "subset", "test_subset"):
        value = getattr(cfg, name)
        _check(
            value is None or (isinstance(value, int) and value >= 1),
            f"--{name.replace('_', '-')} must be an integer of at least 1, got {value!r}.",
        )
    return cfg


def _check_validation_split(cfg: TrainConfig) -> None:
    """The task's name, and one source of validation images: a published split or a share held out."""
    from ..data.covidx import TASKS  # late: keeps this module's import light

    _check(cfg.task in TASKS, f"unknown task {cfg.task!r} (--task); choose one of {', '.join(TASKS)}.")
    if cfg.val_split is None:
        return
    _check(
        not cfg.val_fraction,
        f"--val-split {cfg.val_split} and --val-fraction {cfg.val_fraction:g} both choose validation images; "
        "give one of them (--val-fraction 0 with --val-split).",
    )
    _check(
        cfg.data != "synthetic",
        "--val-split names a split file of a COVIDx folder, and the synthetic set has none; use --val-fraction.",
    )


def one_validation(overrides: dict) -> dict:
    """Options as typed (None: not given), with --val-split replacing the profile's --val-fraction;
    both typed is one error."""
    if overrides.get("val_split") is None:
        return overrides
    if overrides.get("val_fraction"):
        raise UserError(
            f"--val-split {overrides['val_split']} and --val-fraction {overrides['val_fraction']:g} both choose "
            "validation images; give one of them."
        )
    return {**overrides, "val_fraction": 0.0}


def _check_strategy(cfg: TrainConfig) -> None:
    """The strategy and its settings: ``fedlib.strategy.check`` knows what each strategy needs."""
    from ..strategy import check  # late, as in validate: the strategies import torch

    try:
        check(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
