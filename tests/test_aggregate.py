import pytest
import torch

from fedlib.aggregate import RunningAverage, client_weights, fedavg


def _state(w, mean, var, tracked):
    return {
        "w": torch.tensor(w, dtype=torch.float32),
        "bn.running_mean": torch.tensor(mean, dtype=torch.float32),
        "bn.running_var": torch.tensor(var, dtype=torch.float32),
        "bn.num_batches_tracked": torch.tensor(tracked, dtype=torch.int64),
    }


def test_weighted_fedavg_by_sample_count():
    a = _state([1.0, 2.0], [0.0], [1.0], 10)
    b = _state([4.0, 8.0], [3.0], [4.0], 13)
    out = fedavg([a, b], num_examples=[1, 2], mode="weighted")
    # (1*1 + 2*4)/3 = 3, (1*2 + 2*8)/3 = 6
    assert out["w"].tolist() == pytest.approx([3.0, 6.0])
    assert out["bn.running_mean"].tolist() == pytest.approx([2.0])
    assert out["bn.running_var"].tolist() == pytest.approx([3.0])
    # (10 + 26)/3 = 12 exactly; stays an integer tensor
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert out["bn.num_batches_tracked"].item() == 12


def test_uniform_fedavg_is_plain_mean_and_rounds_integers():
    a = _state([1.0, 2.0], [0.0], [1.0], 10)
    b = _state([4.0, 8.0], [3.0], [4.0], 13)
    out = fedavg([a, b], num_examples=[1, 2], mode="uniform")
    assert out["w"].tolist() == pytest.approx([2.5, 5.0])
    assert out["bn.running_var"].tolist() == pytest.approx([2.5])
    assert out["bn.num_batches_tracked"].item() == 12  # 11.5 rounds half to even


def test_single_client_is_exact_copy():
    a = {"w": torch.randn(5, 3), "n": torch.tensor(7)}
    out = fedavg([a], num_examples=[123])
    assert torch.equal(out["w"], a["w"])
    assert out["n"].item() == 7


def test_dtype_is_preserved():
    a = {"w": torch.ones(2, dtype=torch.float16)}
    out = fedavg([a, a], [1, 1])
    assert out["w"].dtype == torch.float16


def test_running_average_equals_batch_average():
    states = [{"w": torch.randn(4)} for _ in range(5)]
    acc = RunningAverage()
    for s, n in zip(states, [1, 2, 3, 4, 5], strict=True):
        acc.add(s, n)
    assert torch.allclose(acc.result()["w"], fedavg(states, [1, 2, 3, 4, 5])["w"])


def test_mismatched_keys_and_bad_mode_fail():
    with pytest.raises(ValueError, match="different keys"):
        fedavg([{"a": torch.ones(1)}, {"b": torch.ones(1)}], [1, 1])
    with pytest.raises(ValueError, match="unknown aggregation"):
        client_weights([1], "median")
    with pytest.raises(ValueError, match="no client state"):
        RunningAverage().result()
