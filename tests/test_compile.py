"""Issue 15: ``--compile`` (torch.compile of the model) trains to what eager training gives, to
float rounding, keeps the state dict's keys, and where compilation cannot work says so in one
line before any training (CPU; Inductor compiles with the machine's C++ compiler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smoke
from torch import nn

from fedlib.errors import UserError
from fedlib.train import LocalSpec, check_compile, compile_model, evaluate, local_train, pick_hardware

CPU = pick_hardware("cpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(  # no bias before BatchNorm, as in the paper's models: its gradient is rounding noise
        nn.Conv2d(3, 8, 3, stride=2, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def data(n: int = 24, size: int = 40):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 3, n)


def train(model: nn.Module) -> float:
    images, labels = data()
    spec = LocalSpec(epochs=2, batch_size=8, lr=1e-3, weight_decay=1e-7, image_size=32, seed=4, hw=CPU)
    res = local_train(model, images, labels, np.arange(len(labels)), spec)
    return res.loss


def test_compiled_training_equals_eager_to_float_rounding():
    eager, compiled = tiny_model(), compile_model(tiny_model(), CPU)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints and aggregation unchanged

    eager_loss, compiled_loss = train(eager), train(compiled)

    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    moved = False
    start = tiny_model().state_dict()
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-4, atol=1e-5)
        moved |= not torch.equal(value, start[key])
    assert moved  # the comparison is of trained weights
    images, labels = data(12)
    a = evaluate(eager, images, labels, image_size=32, hw=CPU)
    b = evaluate(compiled, images, labels, image_size=32, hw=CPU)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_compile_unavailable_is_one_clear_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore details")

    check_compile.cache_clear()
    monkeypatch.setattr(torch, "compile", broken)
    try:
        with pytest.raises(
            UserError, match=r"^--compile: torch.compile does not work here on cpu .*InvalidCxx.*without"
        ):
            compile_model(tiny_model(), CPU)
    finally:
        check_compile.cache_clear()


def test_compile_with_dp_is_refused(data_dir):
    with pytest.raises(UserError, match="--compile with differential privacy"):
        smoke(data_dir, compile=True, dp_noise_multiplier=1.0)


def test_compile_reaches_every_model_a_run_builds(data_dir, tmp_path, monkeypatch):
    # The real compilation of a paper model takes a minute on a CPU: here the call is recorded.
    from fedlib import experiment

    compiled = []
    monkeypatch.setattr(experiment, "compile_model", lambda model, hw: compiled.append(model) or model)
    exp = experiment.setup(smoke(data_dir, compile=True), tmp_path)
    model = exp.new_model()
    assert compiled == [model]
    experiment.setup(smoke(data_dir), tmp_path).new_model()
    assert len(compiled) == 1
