"""Client (hospital) partitions of a training set.

Each function returns one array of sample indices per client: disjoint,
covering every index, sorted, and deterministic from the seed. ``class_counts``
turns them into the per-client class table the class-distribution figure uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import UserError

PARTITIONS = ("iid", "dirichlet", "by_source", "quantity")
MIN_CLIENT_IMAGES = 2  # fewest images a client can train on (BatchNorm normalises two or more)


def _check_clients(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise UserError(f"--clients must be at least 1, got {num_clients}.")
    if num_clients > n:
        raise UserError(
            f"--clients {num_clients} is more than the {n} training images; "
            "use fewer clients or more data, so that every client holds at least one image."
        )


def iid(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Equal random shares without replacement, as the paper (sizes differ by at most one)."""
    _check_clients(n, num_clients)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, num_clients)]


def dirichlet(labels: Sequence[int], num_clients: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew: each class is split across clients by proportions ~ Dir(alpha).

    Small alpha gives each client few classes; large alpha tends to IID. Draws are
    repeated (from the same seeded stream) until every client holds ``MIN_CLIENT_IMAGES``
    (NIID-Bench redraws the same way, to 10 images); a draw that met this was always kept.
    """
    labels = np.asarray(labels)
    _check_clients(labels.size, num_clients)
    if not alpha > 0:
        raise UserError(f"--alpha must be positive for the dirichlet partition, got {alpha}.")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients)) * idx.size).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if all(len(p) >= MIN_CLIENT_IMAGES for p in parts):
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise UserError(
        f"the dirichlet partition with alpha={alpha} left a client below {MIN_CLIENT_IMAGES} images in 1000 draws; "
        "raise --alpha or use fewer --clients."
    )


def quantity(n: int, num_clients: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Quantity skew: random shares whose sizes are ~ Dir(alpha) (at least one image each)."""
    _check_clients(n, num_clients)
    if not alpha > 0:
        raise UserError(f"--alpha must be positive for the quantity partition, got {alpha}.")
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(n - num_clients, rng.dirichlet([alpha] * num_clients))
    cuts = np.cumsum(extra + 1)[:-1]
    return [np.sort(part) for part in np.split(rng.permutation(n), cuts)]


def by_source(sources: Sequence[str]) -> list[np.ndarray]:
    """One client per source (the natural hospital split), in sorted source order."""
    sources = np.asarray(sources)
    return [np.flatnonzero(sources == s) for s in sorted(set(sources.tolist()))]


def partition(
    method: str,
    labels: Sequence[int],
    sources: Sequence[str],
    num_clients: int,
    seed: int,
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """Dispatch on ``method`` (one of ``PARTITIONS``); ``by_source`` ignores ``num_clients``."""
    n = len(labels)
    if method == "iid":
        return iid(n, num_clients, seed)
    if method == "dirichlet":
        return dirichlet(labels, num_clients, alpha, seed)
    if method == "quantity":
        return quantity(n, num_clients, alpha, seed)
    if method == "by_source":
        known = {str(s) for s in sources} - {"unknown"}
        if not known:
            raise UserError(
                "--partition by_source needs the source column of the split file (the 4th), "
                "but every image's source is unknown (3-column split file); use --partition "
                "iid or dirichlet."
            )
        return by_source(sources)
    raise UserError(f"unknown partition {method!r}; choose one of {', '.join(PARTITIONS)}.")


def holdout(labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions: a seeded, stratified ``fraction`` of each class is held
    out (rounded, at least one image of a class with two or more), the rest kept; both sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * idx.size))
        if fraction > 0 and idx.size >= 2:
            k = min(max(k, 1), idx.size - 1)
        held.extend(idx[:k].tolist())
    held_arr = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(labels.size), held_arr), held_arr


def check_parts(
    parts: Sequence[np.ndarray], method: str, minimum: int = MIN_CLIENT_IMAGES, val_fraction: float = 0.0
) -> None:
    """Refuse a partition that leaves a client too few images to train on (BatchNorm needs
    two), with the table of client sizes, instead of failing every round silently. The advice
    names what can help: --alpha only for the partitions that have one, --val-fraction when a
    validation split took images away."""
    small = [c for c, p in enumerate(parts) if len(p) < minimum]
    if small:
        sizes = ", ".join(f"{c}: {len(p)}" for c, p in enumerate(parts))
        remedies = ["raise --alpha"] if method in ("dirichlet", "quantity") else []
        if val_fraction:
            remedies.append(f"hold out less for validation (--val-fraction {val_fraction:g})")
        remedies += ["use fewer --clients", "another --partition"]
        raise UserError(
            f"the {method} partition leaves client(s) {', '.join(map(str, small))} with fewer than "
            f"{minimum} images (images per client: {sizes}); {', '.join(remedies[:-1])} or {remedies[-1]}."
        )


def class_counts(parts: Sequence[np.ndarray], labels: Sequence[int], num_classes: int) -> np.ndarray:
    """(clients, classes) table of image counts."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
