"""Issue 15: training and evaluation without a host sync per batch, the call's images resident
on the device, and evaluation batched freely, all with the numbers of the per-batch path (CPU,
a tiny model on generated arrays, well under a second each)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedlib import config, train
from fedlib.train import Hardware, LocalSpec, evaluate, local_train

CPU = Hardware(device=torch.device("cpu"))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4, 3),
    )


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (31, 40, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 31).astype(np.int64)
    indices = rng.permutation(31)[:21]  # a client: unsorted, not every image
    return images, labels, indices


def fit(model, arrays, **kwargs):
    images, labels, indices = arrays
    options = dict(epochs=2, batch_size=4, lr=1e-2, weight_decay=0.0, image_size=32, seed=7, hw=CPU)
    return local_train(model, images, labels, indices, LocalSpec(**{**options, **kwargs}))


def test_the_loss_is_the_double_the_per_batch_item_sum_gave(arrays, monkeypatch):
    """The device-side float64 sum equals, bit for bit, the old host formula
    ``total += loss.item() * len(idx)`` over the same batches' float32 losses."""
    seen = []
    real = F.cross_entropy

    def recording(logits, y, *args, **kwargs):
        loss = real(logits, y, *args, **kwargs)
        seen.append((loss.item(), len(y)))
        return loss

    monkeypatch.setattr(train.F, "cross_entropy", recording)
    res = fit(tiny_model(), arrays)
    total, count = 0.0, 0
    for loss, n in seen:
        total += loss * n
        count += n
    assert count == 2 * 21 - 1 * 2  # 21 = 5 batches of 4 and one of 1, which is dropped, per epoch
    assert res.loss == total / count


@pytest.mark.parametrize("class_weight", [None, np.array([0.5, 1.0, 2.0])])
def test_resident_images_train_the_same_weights_as_per_batch_copies(arrays, class_weight):
    a, b = tiny_model(), tiny_model()
    per_batch = fit(a, arrays, resident=False, class_weight=class_weight)
    resident = fit(b, arrays, resident=True, class_weight=class_weight)
    assert per_batch.loss == resident.loss
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_a_repeated_index_is_found_in_the_resident_copy():
    indices = np.array([9, 4, 9, 2])
    found = train._positions(indices, np.array([2, 9, 4, 9]))
    assert indices[found].tolist() == [2, 9, 4, 9]


def test_evaluation_is_the_same_for_any_batch_size_and_either_path(arrays):
    images, labels, _ = arrays
    model = tiny_model()
    fit(model, arrays)  # trained a little: logits that are not all alike
    results = {
        (size, resident): evaluate(model, images, labels, image_size=32, hw=CPU, batch_size=size, resident=resident)
        for size in (3, 64, len(labels))
        for resident in (False, True)
    }
    reference = results[(64, False)]
    assert reference.confusion.sum() == len(labels)
    for key, res in results.items():
        assert np.array_equal(res.confusion, reference.confusion), key
        assert res.loss == pytest.approx(reference.loss, rel=1e-6), key
        if key[0] == 64:
            assert res.loss == reference.loss  # same batches: the same sum, bit for bit


def test_evaluate_of_a_copy_matches_the_model_left_training():
    """evaluate leaves the mode it found and reads the device once: a copy gives the same."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0])
    model = tiny_model(3)
    twin = copy.deepcopy(model)
    a = evaluate(model, images, labels, image_size=32, hw=CPU)
    b = evaluate(twin, images, labels, image_size=32, hw=CPU, resident=True)
    assert model.training and a.loss == b.loss and np.array_equal(a.confusion, b.confusion)


def test_cuda_evaluates_in_larger_batches_unless_the_user_chose_one():
    quick = config.resolve("quick", None)
    assert config.eval_batch_size(quick, cuda=False) == 100  # CPU: the profile's, numbers unchanged
    assert config.eval_batch_size(quick, cuda=True) == config.CUDA_EVAL_BATCH
    chosen = config.resolve("quick", None, eval_batch_size=48)
    assert config.eval_batch_size(chosen, cuda=True) == 48
    assert config.eval_batch_size(config.resolve("paper", None), cuda=True) == config.CUDA_EVAL_BATCH


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_update_does_not_wait_for_the_gpu_every_batch(arrays):
    """Counted with PyTorch's sync debug mode: a few waits per call (the uploads, the one
    loss read), not one or more per batch (10 batches here). Not yet run on a GPU."""
    import warnings

    gpu = train.pick_hardware("cuda")
    for resident in (True, False):
        model = tiny_model().to(gpu.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(model, arrays, hw=gpu, resident=resident)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        waits = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(waits) < 10, [str(w.message) for w in waits]  # fewer than the batches
