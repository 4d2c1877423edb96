"""Profiles: named sets of overrides of ``TrainConfig``'s defaults, each value with its reason.

``paper`` is the paper's protocol (its Table 1 as the authors' code runs it, docs/protocol.md),
``quick`` the same code at CPU size, ``smoke`` seconds for tests.
"""

from __future__ import annotations

from .fields import TrainConfig

PROFILES: dict[str, dict] = {
    # The paper's Table 1 as the authors' code runs it (docs/protocol.md); meant for COVIDx on a GPU.
    "paper": dict(
        # Its two clients a round train at once: the same updates as one after another (bit for
        # bit on a CPU at equal threads), 1.21x as fast on the 2-core CPU (BENCHMARKS.md); on a
        # GPU, where a batch of 10 leaves the device waiting on the host, benchmarks/gpu_check.py
        # is to measure it. compile stays off: it changes the rounding.
        parallel_clients=2,
    ),
    # The same code at 2-core CPU size.
    "quick": dict(
        image_size=64,  # small images
        # FedAvg (2 of 5 clients a round) sees 40% of the images per round: at 6 rounds three of
        # the four models were still at chance.
        rounds=12,
        local_epochs=2,
        batch_size=16,
        lr=1e-3,  # larger: the paper's 2e-5 needs its ~80,000 steps; quick has a few hundred
        # Pooled training makes as many sample passes as FedAvg's clients (R x E x C = 9.6 epochs,
        # so 10), not R x E = 24, so the gap compares equal compute and the reproduction fits its
        # CPU budget.
        pooled_budget="matched",
        # 10% of the training images are held out for validation: the per-model choices
        # (PROFILE_MODEL_OVERRIDES) are made on it.
        val_fraction=0.1,
        synth_n_train=400,
        synth_n_test=200,
        synth_size=128,
        eval_batch_size=100,
        # A checkpoint every 4 rounds (epochs) and the last: --resume then repeats at most 3 rounds
        # (a minute here), and 3 seeds write a quarter of the checkpoints (ResNeXt-50 keeps five
        # clients' Adam states, 0.6 GB a checkpoint).
        checkpoint_every=4,
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
# validation images (so about +-0.08 of noise).
PROFILE_MODEL_OVERRIDES: dict[str, dict[str, dict]] = {
    "quick": {
        # COVID-Net keeps the paper's lr 2e-5 on its training loss alone: its first dense layer
        # has 103M input weights and at the quick lr of 1e-3 the loss blew up (35 in round 1).
        "covidnet_small": dict(lr=2e-5),
        "covidnet_large": dict(lr=2e-5),
        # MobileNet-v2 learns slowest per image on the synthetic set: 2 local epochs 0.33
        # (chance), 4 epochs 0.53.
        "mobilenet_v2": dict(local_epochs=4),
        # ResNeXt-50 with each client's Adam state kept between its rounds 0.56, with Adam
        # created afresh every round (the authors' way, whose first steps move each weight by
        # ~lr) 0.50.
        "resnext50_32x4d": dict(keep_optimizer_state=True),
    },
}

CUDA_EVAL_BATCH = 256  # evaluation batch on a GPU unless the config chose its own


def eval_batch_size(cfg: TrainConfig, cuda: bool) -> int:
    """The evaluation batch: ``cfg.eval_batch_size``, except on a GPU when it is still the
    profile's value (not chosen by the user), where a larger batch keeps the GPU busy. The
    CPU keeps the profile's value, so CPU numbers stay the committed ones."""
    profile_value = PROFILES.get(cfg.profile, {}).get("eval_batch_size", TrainConfig.eval_batch_size)
    if cuda and cfg.eval_batch_size == profile_value:
        return max(CUDA_EVAL_BATCH, profile_value)
    return cfg.eval_batch_size
