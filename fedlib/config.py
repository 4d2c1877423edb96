"""Every knob of a training run, with the paper's values as defaults.

A run is fully described by one ``TrainConfig``: ``config.json`` in the run
directory holds it resolved, so ``fedlib train --config runs/X/config.json``
repeats the run. Profiles are named sets of overrides: ``paper`` is the
paper's protocol (its Table 1 as the authors' code runs it, README), ``quick`` the same code at CPU size,
``smoke`` seconds for tests. Precedence: defaults < profile < config file < CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from .aggregate import AGGREGATIONS
from .errors import UserError
from .partition import PARTITIONS
from .strategy import NAMES as STRATEGIES
from .strategy import from_config as strategy_from_config

MODES = ("fedavg", "central", "local")
POOLED_BUDGETS = ("paper", "matched")
CLASS_WEIGHTS = ("none", "balanced")
ENGINES = ("inprocess", "flower-sim", "flower")
DEVICES = ("auto", "cpu", "cuda", "mps")
# The paper trains at 224 px; 1024 covers any higher-resolution study, and a cached
# training set at 4096 px would need ~50 MB per image (an unbounded size took all memory).
MAX_IMAGE_SIZE = 1024


@dataclass
class TrainConfig:
    model: str = "resnet18"  # one of fedlib.models.MODEL_NAMES
    mode: str = "fedavg"  # fedavg | central (pooled data) | local (each client alone)
    data: str = "synthetic"  # "synthetic" (generated on first use) or a COVIDx root folder
    profile: str = "paper"  # the profile these values started from (recorded, not re-applied)
    image_size: int = 224  # the paper resizes to 224 x 224
    # Federated protocol (the paper's Table 1)
    clients: int = 5  # K hospitals
    fraction: float = 0.4  # C, the paper's "score S": max(int(C*K), 1) = 2 clients per round
    rounds: int = 100  # R
    local_epochs: int = 3  # E
    batch_size: int = 10  # B
    lr: float = 2e-5  # Adam learning rate
    weight_decay: float = 1e-7  # Adam weight decay
    aggregation: str = "weighted"  # weighted by sample count (McMahan et al.); "uniform" = the authors' plain mean
    keep_optimizer_state: bool = False  # the authors create Adam afresh at each local update
    engine: str = "inprocess"  # inprocess | flower-sim (Flower simulation) | flower (Flower deployment)
    # Federated strategy (fedlib.strategy): how a client trains and how the server turns a round's
    # updates into the next global model. mode "fedavg" means federated rounds with this strategy.
    strategy: str = "fedavg"  # fedavg fedavgm fedprox fedadam fedyogi fedadagrad fedbn median trimmed_mean
    proximal_mu: float = 0.01  # FedProx: weight mu of the proximal term mu/2 ||w - w_global||^2
    server_lr: float | None = None  # FedAvgM and FedAdam/FedYogi/FedAdagrad; None = Flower's default for it
    server_momentum: float = 0.9  # FedAvgM: server momentum (Hsu et al. 2019; Flower's default 0 is FedAvg)
    beta1: float = 0.9  # FedAdam / FedYogi: first-moment decay
    beta2: float = 0.99  # FedAdam / FedYogi: second-moment decay
    tau: float = 1e-3  # FedAdam / FedYogi / FedAdagrad: adaptivity (added to the root of v)
    trim_fraction: float = 0.2  # trimmed_mean: share of the round's updates cut at each end, per coordinate
    secagg: bool = False  # Flower engines: SecAgg+ secure aggregation (the server sees only the sum)
    # Failing clients (fedlib.federated): a client that raises, times out or sends non-finite
    # or wrongly shaped tensors is dropped from the round.
    min_clients: int = 1  # a round stands with at least this many usable updates (capped at C*K)
    round_retries: int = 2  # a round with fewer is tried again with a fresh sample, this often
    client_timeout: float | None = None  # seconds per local update; None = no limit in-process
    inject_failures: float = 0.0  # probability that a client fails on purpose (seeded; for tests and demos)
    partition: str = "iid"  # iid | dirichlet | quantity | by_source
    alpha: float = 0.5  # Dirichlet concentration for the dirichlet and quantity partitions
    # Differential privacy (DP-SGD with Opacus on every client; BatchNorm becomes GroupNorm)
    dp_noise_multiplier: float | None = None  # Gaussian noise / clipping norm; None = no DP unless dp_target_epsilon
    dp_target_epsilon: float | None = None  # or: pick the noise so each client spends at most this over R rounds
    dp_delta: float = 1e-5  # delta of (epsilon, delta)-DP; below 1 / (images per client)
    dp_max_grad_norm: float = 1.0  # per-sample gradient clipping norm C
    # Baselines
    central_epochs: int | None = None  # pooled training epochs; None = pooled_budget decides
    # How many pooled epochs when central_epochs is None: "paper" = R x E epochs (the authors'
    # 300, 2.5x the sample passes of FedAvg with C=0.4), "matched" = the epochs that make as many
    # sample passes as FedAvg's clients make in R rounds (R x E x C, rounded up).
    pooled_budget: str = "paper"
    # Validation and class balance
    val_fraction: float = (
        0.0  # seeded, stratified share of the training set held out for validation; 0 = the paper's protocol
    )
    class_weight: str = "none"  # "balanced": inverse-frequency loss weights (per client from its own counts in FedAvg)
    # Bookkeeping
    eval_every: int = 1  # evaluate the global model on the test set every N rounds (epochs when pooled)
    checkpoint_every: int = 1  # checkpoint every N rounds; 1 so that --resume loses at most one round
    seed: int = 0  # every random choice derives from this: init, partition, sampling, batches, augmentation
    subset: int | None = None  # train on a seeded random subset of this many training images (None = all)
    test_subset: int | None = None  # evaluate on a seeded random subset of the test set (None = all)
    # Hardware
    device: str = "auto"  # auto = cuda if available, else cpu
    amp: bool | None = None  # bf16 autocast, opt-in (--amp); None = off: float32 everywhere, as the paper
    channels_last: bool | None = None  # None = on with CUDA
    eval_batch_size: int = 64  # evaluation only; does not change results
    # In-process FedAvg: train up to N of a round's clients at once, each in a worker process
    # with its own model replica (fedlib.parallel); every update is the sequential one.
    parallel_clients: int = 1
    compile: bool = False  # torch.compile the model (CUDA graphs on a GPU); equal to eager to float rounding
    # Synthetic data (used when data == "synthetic")
    synth_n_train: int = 1600  # images in the generated training split
    synth_n_test: int = 400  # images in the generated test split
    synth_size: int = 256  # generated PNG size in pixels
    synth_sources: int = 4  # generated "hospitals" (acquisition and class-mix differ)
    synth_class_mix: str = "balanced"  # balanced | covidx (COVID-19 a small minority, as COVIDx v3)
    synth_seed: int = 0  # the data set is fixed across experiment seeds, as a real one would be
    data_dir: str = "data"  # where generated data sets live
    # COVIDx layout: releases name their split files and folders differently
    train_split: str = "train_split.txt"
    test_split: str = "test_split.txt"
    train_dir: str = "train"
    test_dir: str = "test"
    # Recorded by the runner, not a knob: fedlib.data.identity.fingerprint of the data trained on
    # (split files, layout, image sizes). A run is resumed or reused only with the same data.
    data_fingerprint: str | None = None

    @property
    def layout(self):
        from .data.covidx import Layout

        return Layout(self.train_split, self.test_split, self.train_dir, self.test_dir)

    @property
    def clients_per_round(self) -> int:
        return max(int(self.fraction * self.clients), 1)

    @property
    def dp(self) -> bool:
        return self.dp_noise_multiplier is not None or self.dp_target_epsilon is not None

    @property
    def model_norm(self) -> str:
        """DP needs per-sample gradients, which BatchNorm does not have: GroupNorm then."""
        return "group" if self.dp else "batch"

    @property
    def pooled_epochs(self) -> int:
        if self.central_epochs is not None:
            return self.central_epochs
        if self.pooled_budget == "matched":
            return math.ceil(self.rounds * self.local_epochs * self.clients_per_round / self.clients)
        return self.rounds * self.local_epochs


PROFILES: dict[str, dict] = {
    # The paper's Table 1 as the authors' code runs it (README); meant for COVIDx on a GPU.
    # Its two clients a round train at once (--parallel-clients 2): the same updates as one
    # after another (bit for bit on a CPU at equal threads), 1.21x as fast on the 2-core CPU
    # (BENCHMARKS.md); on a GPU, where a batch of 10 leaves the device waiting on the host,
    # benchmarks/gpu_check.py is to measure it. --compile stays off: it changes the rounding.
    "paper": dict(parallel_clients=2),
    # The same code at 2-core CPU size: small images, few rounds, a larger learning rate
    # (the paper's 2e-5 needs its ~80,000 steps; quick has a few hundred). 12 rounds, because
    # FedAvg (2 of 5 clients a round) sees 40% of the images per round: at 6 rounds three of
    # the four models were still at chance. Pooled training makes as many sample passes as
    # FedAvg's clients (pooled_budget "matched": R x E x C = 9.6 epochs, so 10), not R x E = 24,
    # so the gap compares equal compute and the reproduction fits its CPU budget. 10% of the
    # training images are held out for validation: the per-model choices below are made on it.
    "quick": dict(
        image_size=64,
        rounds=12,
        local_epochs=2,
        batch_size=16,
        lr=1e-3,
        pooled_budget="matched",
        val_fraction=0.1,
        synth_n_train=400,
        synth_n_test=200,
        synth_size=128,
        eval_batch_size=100,
    ),
    # Seconds: what the tests use.
    "smoke": dict(
        image_size=32,
        clients=3,
        fraction=0.67,
        rounds=2,
        local_epochs=1,
        batch_size=8,
        lr=1e-3,
        synth_n_train=48,
        synth_n_test=24,
        synth_size=48,
        synth_sources=3,
        eval_batch_size=32,
    ),
}

# Per-model exceptions inside a profile, decided on the validation hold-out (never on the
# test set): mean validation accuracy over the last 3 of 12 FedAvg rounds, seed 0, 39
# validation images (so about +-0.08 of noise). MobileNet-v2 learns slowest per image on
# the synthetic set: 2 local epochs 0.33 (chance), 4 epochs 0.53. ResNeXt-50 with each
# client's Adam state kept between its rounds 0.56, with Adam created afresh every round
# (the authors' way, whose first steps move each weight by ~lr) 0.50. COVID-Net keeps the
# paper's lr 2e-5 on its training loss alone: its first dense layer has 103M input weights
# and at the quick lr of 1e-3 the loss blew up (35 in round 1).
PROFILE_MODEL_OVERRIDES: dict[str, dict[str, dict]] = {
    "quick": {
        "covidnet_small": dict(lr=2e-5),
        "covidnet_large": dict(lr=2e-5),
        "mobilenet_v2": dict(local_epochs=4),
        "resnext50_32x4d": dict(keep_optimizer_state=True),
    },
}

_FIELDS = {f.name: f for f in fields(TrainConfig)}


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
                f"config field {f.name} must be {expected}, got {value!r}; "
                "fix it in the config file or on the command line."
            )


def validate(cfg: TrainConfig) -> TrainConfig:
    """Reject impossible values before any work starts, one sentence each."""
    from .models import MODEL_NAMES  # late: models pull in torchvision

    check_types(cfg)

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
    _check(cfg.device in DEVICES, f"unknown device {cfg.device!r}; choose one of {', '.join(DEVICES)}.")
    _check(cfg.profile in PROFILES, f"unknown profile {cfg.profile!r}; choose one of {', '.join(PROFILES)}.")
    _check(
        isinstance(cfg.fraction, int | float) and 0 < cfg.fraction <= 1,
        f"--fraction must be in (0, 1], got {cfg.fraction}.",
    )
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


def _check_strategy(cfg: TrainConfig) -> None:
    """The strategy and its settings (``fedlib.strategy.build`` checks the ones it reads)."""
    s = cfg.strategy
    _check(s in STRATEGIES, f"unknown strategy {s!r}; choose one of {', '.join(STRATEGIES)}.")
    _check(
        s == "fedavg" or cfg.mode == "fedavg",
        f"--strategy {s} is a federated strategy; it needs --mode fedavg (federated rounds), not {cfg.mode}.",
    )
    try:
        strategy = strategy_from_config(cfg)
    except ValueError as exc:
        raise UserError(f"--strategy {s}: {exc}; change that option (README, Strategies).") from None
    if cfg.mode != "fedavg":
        return
    _check(
        not (cfg.secagg and s in ("fedbn", "median", "trimmed_mean")),
        f"--secagg shows the server only the sum of a round's updates; --strategy {s} needs each update "
        "(or each hospital's own layers): use one of them.",
    )
    _check(
        not (cfg.dp and s == "fedprox"),
        "--strategy fedprox with differential privacy is not supported: "
        "DP-SGD would drop the proximal term's gradient; use one of them.",
    )
    why = strategy.check_clients_per_round(min(cfg.clients_per_round, cfg.clients))
    _check(why is None, f"--strategy {s}: {why}.")


def from_dict(values: dict, source: str = "config") -> dict:
    """Check keys and types of a partial config; unknown keys are an error, not ignored."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise UserError(
            f"{source} has unknown key(s) {', '.join(unknown)}; valid keys are the fields of "
            "fedlib.config.TrainConfig (see README)."
        )
    return dict(values)


def load_file(path: str | Path) -> dict:
    """Read a JSON or YAML config file (partial configs are fine)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing JSON or YAML file to --config.")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read ({exc.strerror}); check its permissions.") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # YAML's messages span several lines
        raise UserError(f"config file {path} is not valid JSON/YAML ({detail}); fix its syntax.") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values.")
    return from_dict(values, source=f"config file {path}")


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


CUDA_EVAL_BATCH = 256  # evaluation batch on a GPU unless the config chose its own


def eval_batch_size(cfg: TrainConfig, cuda: bool) -> int:
    """The evaluation batch: ``cfg.eval_batch_size``, except on a GPU when it is still the
    profile's value (not chosen by the user), where a larger batch keeps the GPU busy. The
    CPU keeps the profile's value, so CPU numbers stay the committed ones."""
    profile_value = PROFILES.get(cfg.profile, {}).get("eval_batch_size", TrainConfig.eval_batch_size)
    if cuda and cfg.eval_batch_size == profile_value:
        return max(CUDA_EVAL_BATCH, profile_value)
    return cfg.eval_batch_size


# What --resume may change: how the run is executed and how far it goes, not what it learns.
# min_clients and round_retries are here because RoundFailed advises changing them and resuming;
# data and data_dir because a moved data set is still checked against the run's fingerprint.
RESUME_CHANGEABLE = (
    "rounds",
    "central_epochs",
    "device",
    "amp",
    "channels_last",
    "eval_batch_size",
    "parallel_clients",
    "compile",
    "eval_every",
    "checkpoint_every",
    "client_timeout",
    "min_clients",
    "round_retries",
    "data",
    "data_dir",
)


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
