import numpy as np
import pytest

from fedlib.errors import UserError
from fedlib.partition import by_source, class_counts, dirichlet, iid, partition, quantity


def _assert_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert sorted(joined.tolist()) == list(range(n))


def test_iid_equal_shares_disjoint_covering_deterministic():
    parts = iid(103, 5, seed=1)
    _assert_disjoint_cover(parts, 103)
    assert sorted(len(p) for p in parts) == [20, 20, 21, 21, 21]
    again = iid(103, 5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = iid(103, 5, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def _skew(parts, labels):
    """Mean total-variation distance between client class mixes and the global mix."""
    counts = class_counts(parts, labels, 3).astype(float)
    mix = counts / counts.sum(1, keepdims=True)
    overall = np.bincount(labels, minlength=3) / len(labels)
    return float(np.mean(0.5 * np.abs(mix - overall).sum(1)))


def test_dirichlet_disjoint_covering_and_skew_grows_as_alpha_falls():
    labels = np.repeat([0, 1, 2], 200)
    skews = []
    for alpha in (100.0, 1.0, 0.1):
        parts = dirichlet(labels, 5, alpha, seed=0)
        _assert_disjoint_cover(parts, len(labels))
        assert all(len(p) > 0 for p in parts)
        skews.append(np.mean([_skew(dirichlet(labels, 5, alpha, seed=s), labels) for s in range(5)]))
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.05 and skews[2] > 0.3


def test_quantity_skew_sizes_vary_and_cover():
    parts = quantity(500, 5, alpha=0.3, seed=0)
    _assert_disjoint_cover(parts, 500)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1 and max(sizes) > 2 * min(sizes)


def test_by_source_one_client_per_source():
    sources = ["b", "a", "b", "c", "a"]
    parts = by_source(sources)
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]


def test_class_counts_table():
    parts = [np.array([0, 1]), np.array([2, 3, 4])]
    labels = np.array([0, 0, 1, 2, 2])
    assert class_counts(parts, labels, 3).tolist() == [[2, 0, 0], [0, 1, 2]]


def test_errors_name_the_culprit():
    with pytest.raises(UserError, match="--clients 10 is more than the 4 training images"):
        iid(4, 10, 0)
    with pytest.raises(UserError, match="unknown partition 'shards'"):
        partition("shards", [0, 1], ["a", "b"], 2, 0)
    with pytest.raises(UserError, match="--alpha must be positive"):
        dirichlet([0, 1, 2], 2, 0.0, 0)


def test_dirichlet_redraws_until_every_client_can_train():
    labels = np.repeat([0, 1, 2], 10)
    for seed in range(20):
        parts = dirichlet(labels, 4, 0.05, seed=seed)
        assert min(len(p) for p in parts) >= 2, seed
        assert sorted(np.concatenate(parts).tolist()) == list(range(30))
