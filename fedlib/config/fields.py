"""``TrainConfig``: every knob of a training run, each declared once with what it means.

The dataclass stays flat (``cfg.lr``; ``config.json`` holds its fields in this order), and
each field carries metadata (``knob``): its section, its help text (the words ``fedlib train
--help`` shows), its command-line flag if it has one, and whether ``--resume`` may change it.
The command line (``fedlib.config.flags``) and ``RESUME_CHANGEABLE`` are made from them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Section -> (title, description): the groups of ``fedlib train --help``, in this order.
SECTIONS: dict[str, tuple[str, str]] = {
    "training": ("training", "the model and how it learns"),
    "federation": (
        "federation",
        "the federated protocol (the paper's Table 1); a client that raises, times out or sends "
        "non-finite or wrongly shaped tensors is dropped from the round",
    ),
    "strategy": (
        "strategy",
        "fedlib.strategy: how a client trains and how the server turns a round's updates into the "
        "next global model; --mode fedavg means federated rounds with this strategy",
    ),
    "privacy": ("privacy", "DP-SGD with Opacus on every client (BatchNorm becomes GroupNorm); SecAgg+ with Flower"),
    "data": ("data", "which images, and how the clients share them; synth_* shape the generated (synthetic) set"),
    "layout": (
        "COVIDx layout",
        "releases name their split files and folders differently, and label three classes or two (positive/negative)",
    ),
    "evaluation": ("evaluation", "validation, test evaluation and checkpoints"),
    "hardware": ("hardware", "where and how fast the run executes"),
}


def knob(default, section: str, help: str, *, flag: str | None = None, resume: bool = False, negatable: bool = True):
    """A TrainConfig field: its default, section and help text; ``flag`` its command-line
    option (None: a config-file key only); ``resume`` whether ``--resume`` may change it;
    ``negatable`` whether a true/false flag also has its ``--no-`` form."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}")
    meta = {"section": section, "help": help, "flag": flag, "resume": resume, "negatable": negatable}
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    model: str = knob(
        "resnet18",
        "training",
        "network, one of fedlib.models.MODEL_NAMES: covidnet_small, covidnet_large, resnet18, resnext50_32x4d, "
        "mobilenet_v2",
        flag="--model",
    )
    mode: str = knob("fedavg", "training", "fedavg | central (pooled data) | local (each client alone)", flag="--mode")
    data: str = knob(
        "synthetic",
        "data",
        "'synthetic' (generated on first use) or a COVIDx root folder",
        flag="--data",
        resume=True,  # a moved data set is still checked against the run's fingerprint
    )
    profile: str = knob("paper", "training", "the profile these values started from (recorded, not re-applied)")
    image_size: int = knob(224, "training", "input size in pixels; the paper resizes to 224 x 224", flag="--image-size")
    covidnet_grid: int = knob(
        0,
        "training",
        "COVID-Net: the grid its head flattens; 0 = its last stage's own (image size / 32: the paper's 7x7 "
        "at 224 px, 2x2 at 64 px), 7 = the paper's 117.6M parameters at any size",
        flag="--covidnet-grid",
    )
    clients: int = knob(5, "federation", "clients K (hospitals)", flag="--clients")
    fraction: float = knob(
        0.4,
        "federation",
        "client fraction C in (0, 1], the paper's 'score S': max(int(C*K), 1) = 2 clients per round",
        flag="--fraction",
    )
    rounds: int = knob(100, "federation", "federated rounds R", flag="--rounds", resume=True)
    local_epochs: int = knob(3, "federation", "local epochs E of each client's update", flag="--local-epochs")
    batch_size: int = knob(10, "training", "batch size B", flag="--batch-size")
    lr: float = knob(2e-5, "training", "Adam learning rate", flag="--lr")
    weight_decay: float = knob(1e-7, "training", "Adam weight decay", flag="--weight-decay")
    aggregation: str = knob(
        "weighted",
        "federation",
        "weighted (by sample count, McMahan et al.) | uniform (the authors' plain mean)",
        flag="--aggregation",
    )
    keep_optimizer_state: bool = knob(
        False,
        "training",
        "each client keeps its Adam state between its rounds; off: Adam is created afresh at each local "
        "update, as the authors",
        flag="--keep-optimizer-state",
    )
    engine: str = knob(
        "inprocess",
        "federation",
        "inprocess | flower-sim (Flower simulation) | flower (Flower deployment); the Flower engines run FedAvg only",
        flag="--engine",
    )
    strategy: str = knob(
        "fedavg",
        "strategy",
        "fedavg | fedavgm | fedprox | fedadam | fedyogi | fedadagrad | fedbn | median | trimmed_mean | scaffold",
        flag="--strategy",
    )
    proximal_mu: float = knob(
        0.01, "strategy", "FedProx: weight mu of the proximal term mu/2 ||w - w_global||^2", flag="--proximal-mu"
    )
    server_lr: float | None = knob(
        None,
        "strategy",
        "FedAvgM and FedAdam/FedYogi/FedAdagrad: server learning rate; unset = Flower's default for it",
        flag="--server-lr",
    )
    server_momentum: float = knob(
        0.9,
        "strategy",
        "FedAvgM: server momentum (Hsu et al. 2019; Flower's default 0 is FedAvg)",
        flag="--server-momentum",
    )
    beta1: float = knob(0.9, "strategy", "FedAdam / FedYogi: first-moment decay", flag="--beta1")
    beta2: float = knob(0.99, "strategy", "FedAdam / FedYogi: second-moment decay", flag="--beta2")
    tau: float = knob(
        1e-3, "strategy", "FedAdam / FedYogi / FedAdagrad: adaptivity (added to the root of v)", flag="--tau"
    )
    trim_fraction: float = knob(
        0.2,
        "strategy",
        "trimmed_mean: share of the round's updates cut at each end, per coordinate",
        flag="--trim-fraction",
    )
    secagg: bool = knob(
        False,
        "privacy",
        "Flower engines: SecAgg+ secure aggregation (the server sees only the sum)",
        flag="--secagg",
        negatable=False,
    )
    # min_clients and round_retries may change on --resume: RoundFailed advises that.
    min_clients: int = knob(
        1,
        "federation",
        "a round stands with at least this many usable client updates (capped at C*K)",
        flag="--min-clients",
        resume=True,
    )
    round_retries: int = knob(
        2,
        "federation",
        "a round with fewer is tried again with a fresh sample, this often",
        flag="--round-retries",
        resume=True,
    )
    client_timeout: float | None = knob(
        None,
        "federation",
        "seconds per local update before a client is dropped; unset = no limit in-process",
        flag="--client-timeout",
        resume=True,
    )
    inject_failures: float = knob(
        0.0,
        "federation",
        "probability that a client fails on purpose (seeded; for tests and demos)",
        flag="--inject-failures",
    )
    partition: str = knob("iid", "data", "iid | dirichlet | quantity | by_source", flag="--partition")
    alpha: float = knob(
        0.5, "data", "Dirichlet concentration for the dirichlet and quantity partitions", flag="--alpha"
    )
    dp_noise_multiplier: float | None = knob(
        None,
        "privacy",
        "DP-SGD on every client with this noise multiplier (Gaussian noise / clipping norm); "
        "unset = no DP unless --dp-target-epsilon",
        flag="--dp-noise-multiplier",
    )
    dp_target_epsilon: float | None = knob(
        None,
        "privacy",
        "or: DP-SGD with the noise that makes each client spend at most this epsilon over R rounds",
        flag="--dp-target-epsilon",
    )
    dp_delta: float = knob(
        1e-5, "privacy", "delta of (epsilon, delta)-DP; below 1 / (images per client)", flag="--dp-delta"
    )
    dp_max_grad_norm: float = knob(
        1.0, "privacy", "DP-SGD per-sample gradient clipping norm C", flag="--dp-max-grad-norm"
    )
    central_epochs: int | None = knob(
        None,
        "training",
        "pooled training epochs; unset = as --pooled-budget says",
        flag="--central-epochs",
        resume=True,
    )
    pooled_budget: str = knob(
        "paper",
        "training",
        "pooled epochs when --central-epochs is unset: paper = R x E (the authors' 300, 2.5x the sample passes "
        "of FedAvg with C=0.4) | matched = as many sample passes as FedAvg's clients make in R rounds "
        "(R x E x C, rounded up)",
        flag="--pooled-budget",
    )
    val_fraction: float = knob(
        0.0,
        "evaluation",
        "seeded, stratified share of the training set held out for validation; 0 = the paper's protocol",
        flag="--val-fraction",
    )
    class_weight: str = knob(
        "none",
        "training",
        "none | balanced (inverse-frequency loss weights, per client from its own counts in FedAvg)",
        flag="--class-weight",
    )
    eval_every: int = knob(
        1,
        "evaluation",
        "evaluate the global model on the test set every N rounds (epochs when pooled)",
        flag="--eval-every",
        resume=True,
    )
    checkpoint_every: int = knob(
        1, "evaluation", "checkpoint every N rounds; 1 so that --resume loses at most one round", resume=True
    )
    seed: int = knob(
        0,
        "training",
        "every random choice derives from this: init, partition, sampling, batches, augmentation",
        flag="--seed",
    )
    subset: int | None = knob(
        None,
        "data",
        "train on a seeded random subset of this many training images (unset = all)",
        flag="--subset",
    )
    test_subset: int | None = knob(
        None, "evaluation", "evaluate on a seeded random subset of the test set (unset = all)"
    )
    device: str = knob(
        "auto", "hardware", "auto (cuda if available, else cpu) | cpu | cuda | mps", flag="--device", resume=True
    )
    amp: bool | None = knob(
        None,
        "hardware",
        "bf16 autocast on CUDA, opt-in; unset = off: float32 everywhere, as the paper",
        flag="--amp",
        resume=True,
    )
    channels_last: bool | None = knob(
        None, "hardware", "channels-last memory format; unset = on with CUDA", resume=True
    )
    eval_batch_size: int = knob(64, "hardware", "evaluation batch size; does not change results", resume=True)
    parallel_clients: int = knob(
        1,
        "hardware",
        "in-process FedAvg: train up to N of a round's clients at once, each in a worker process with its own "
        "model replica (fedlib.parallel); every update is the sequential one",
        flag="--parallel-clients",
        resume=True,
    )
    compile: bool = knob(
        False,
        "hardware",
        "torch.compile the model (CUDA graphs on a GPU); equal to eager to float rounding",
        flag="--compile",
        resume=True,
    )
    synth_n_train: int = knob(1600, "data", "synthetic: images in the generated training split")
    synth_n_test: int = knob(400, "data", "synthetic: images in the generated test split")
    synth_size: int = knob(256, "data", "synthetic: generated PNG size in pixels")
    synth_sources: int = knob(4, "data", "synthetic: generated 'hospitals' (acquisition and class mix differ)")
    synth_class_mix: str = knob(
        "balanced", "data", "synthetic: balanced | covidx (COVID-19 a small minority, as COVIDx v3)"
    )
    synth_seed: int = knob(
        0, "data", "synthetic: the data set is fixed across experiment seeds, as a real one would be"
    )
    data_dir: str = knob("data", "data", "where generated data sets live", resume=True)
    train_split: str = knob(
        "train_split.txt", "layout", "train split file name (default train_split.txt)", flag="--train-split"
    )
    test_split: str = knob(
        "test_split.txt", "layout", "test split file name (default test_split.txt)", flag="--test-split"
    )
    train_dir: str = knob("train", "layout", "train image folder (default train)", flag="--train-dir")
    test_dir: str = knob("test", "layout", "test image folder (default test)", flag="--test-dir")
    val_split: str | None = knob(
        None,
        "layout",
        "a published validation split file (val.txt in COVIDx CXR-3/4), used instead of --val-fraction (default: none)",
        flag="--val-split",
    )
    val_dir: str = knob("val", "layout", "validation image folder, with --val-split (default val)", flag="--val-dir")
    task: str = knob(
        "auto",
        "layout",
        "auto (as the split files' labels say) | binary (pneumonia and normal count as negative) | three-class "
        "(default auto)",
        flag="--task",
        resume=True,  # config.json holds the resolved task; a change of data is caught by the fingerprint
    )
    data_fingerprint: str | None = knob(
        None,
        "data",
        "recorded by the runner, not a knob: fedlib.data.identity.fingerprint of the data trained on "
        "(split files, layout, image sizes); a run is resumed or reused only with the same data",
    )

    @property
    def layout(self):
        from ..data.covidx import Layout

        return Layout(
            self.train_split, self.test_split, self.train_dir, self.test_dir, self.val_split, self.val_dir, self.task
        )

    @property
    def head_grid(self) -> int:
        """The grid COVID-Net's head flattens (``covidnet_grid``, or the last stage's own)."""
        return self.covidnet_grid or max(1, self.image_size // 32)

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


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


def section_fields(section: str) -> tuple[str, ...]:
    """The fields of one section, in the dataclass's order."""
    return tuple(name for name, f in FIELDS.items() if f.metadata["section"] == section)


# What --resume may change: how the run is executed and how far it goes, not what it learns.
RESUME_CHANGEABLE: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.metadata["resume"])
# The COVIDx layout: where a release keeps its split files and image folders.
LAYOUT: tuple[str, ...] = section_fields("layout")
