"""What travels between the fedlib server and a site, as Flower records.

These functions are pure (no Flower runtime, no I/O) so that a test can check
the privacy promise directly: a site's reply holds one ``ArrayRecord`` (the
model parameters) and one ``MetricRecord`` (the sample count, the training loss
and further scalars) and nothing else. No images, labels, file names or patient
ids can leave a client, because the reply has no field that could hold them. A strategy
whose client side computes more (SCAFFOLD: the change of its control variate, one tensor
per parameter) adds one ``ArrayRecord`` of those tensors (``EXTRA``).

A model state travels as one array (``pack``): its tensors' bytes, in state order. The
receiver knows the model, so it reads them back with the dtypes and shapes of its own copy
(``unpack``), bit for bit, and the server aggregates exactly the tensors the client
computed. One array, not one per tensor: Flower 1.42 moves every array of a record as
objects of their own on each hop (ServerApp, SuperLink, SuperNode, ClientApp), so a
model's hundreds of tensors cost more than its bytes (BENCHMARKS.md).
"""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ..client import ExtendedUpdate, Update
from ..config import TrainConfig, replace, to_dict

ARRAYS = "arrays"  # the model parameters (global state in a request, the update in a reply)
EXTRA = "extra"  # the strategy's further tensors, by name (SCAFFOLD: control variates; their change)
TASK = "task"  # request: which round, attempt and client, and the TrainConfig
METRICS = "metrics"  # reply: num-examples, train-loss and further scalars
SITE = "site"  # reply to the discovery query: which fedlib client a node serves
NUM_EXAMPLES, TRAIN_LOSS = "num-examples", "train-loss"


PACKED = "state"  # the one array of a packed ArrayRecord


def pack(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """``state`` as an ArrayRecord of one uint8 array: each tensor's bytes, in state order."""
    parts = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in state.values()]
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
    return ArrayRecord({PACKED: flat})


def unpack(record: ArrayRecord, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state ``pack`` packed, read with the keys, dtypes and shapes of ``like``; a
    ValueError when the bytes do not fit ``like`` (another model, a damaged message)."""
    if list(record) != [PACKED]:
        raise ValueError(f"expected one packed array {PACKED!r}, got {list(record)}")
    flat = record.to_torch_state_dict()[PACKED]
    sizes = [t.numel() * t.element_size() for t in like.values()]
    if flat.dtype != torch.uint8 or flat.numel() != sum(sizes):
        raise ValueError(f"{flat.numel()} {flat.dtype} values where the model's state takes {sum(sizes)} bytes")
    chunks = torch.split(flat, sizes)
    return {
        k: chunk.clone().view(ref.dtype).reshape(ref.shape)  # clone: a fresh, aligned storage per tensor
        for (k, ref), chunk in zip(like.items(), chunks, strict=True)
    }


def train_request(
    arrays: ArrayRecord, cfg: TrainConfig, round_idx: int, attempt: int, client: int, extra: dict | None = None
) -> RecordDict:
    """The global state and everything a site needs to train it as the in-process engine would,
    with the strategy's ``extra`` tensors for this client if any (SCAFFOLD's control variates)."""
    task = ConfigRecord(
        {"round": round_idx, "attempt": attempt, "client": client, "train-config": json.dumps(to_dict(cfg))}
    )
    records = {ARRAYS: arrays, TASK: task}
    if extra:
        records[EXTRA] = ArrayRecord(dict(extra))
    return RecordDict(records)


def read_train_request(content: RecordDict) -> tuple[ArrayRecord, TrainConfig, int, int, int]:
    """(packed global state, config, round, attempt, client) from ``train_request``'s record;
    ``unpack`` the state with the site's model (``read_extra``: the strategy's tensors)."""
    task = content.config_records[TASK]
    cfg = replace(TrainConfig(**json.loads(task["train-config"])))
    return content.array_records[ARRAYS], cfg, int(task["round"]), int(task["attempt"]), int(task["client"])


def read_extra(content: RecordDict) -> dict[str, torch.Tensor] | None:
    """The strategy's extra tensors of a train request or a reply, by name, or None."""
    return content.array_records[EXTRA].to_torch_state_dict() if EXTRA in content.array_records else None


def update_reply(update: Update) -> RecordDict:
    """A site's answer: its parameters, its sample count, its loss and scalar metrics."""
    reserved = {NUM_EXAMPLES, TRAIN_LOSS} & set(update.metrics)
    if reserved:
        raise ValueError(f"metric name(s) {', '.join(sorted(reserved))} are reserved")
    metrics = MetricRecord(
        {
            NUM_EXAMPLES: int(update.num_examples),
            TRAIN_LOSS: float(update.loss),
            **{k: float(v) for k, v in update.metrics.items()},
        }
    )
    records = {ARRAYS: pack(update.state), METRICS: metrics}
    if getattr(update, "extra", None):
        records[EXTRA] = ArrayRecord(dict(update.extra))
    return RecordDict(records)


def read_update(content: RecordDict, like: dict[str, torch.Tensor]) -> Update:
    """The inverse of ``update_reply``; ``like`` is the model's state the update is of."""
    metrics = dict(content.metric_records[METRICS])
    num_examples, loss = metrics.pop(NUM_EXAMPLES), metrics.pop(TRAIN_LOSS)
    state, extra = unpack(content.array_records[ARRAYS], like), read_extra(content)
    if extra is not None:
        return ExtendedUpdate(state, num_examples, loss, metrics, extra)
    return Update(state, num_examples, loss, metrics)


def site_reply(client: int, num_partitions: int | None) -> RecordDict:
    """Which fedlib client this node serves, and into how many parts it splits shared data."""
    site = ConfigRecord({"client": client})
    if num_partitions is not None:
        site["num-partitions"] = num_partitions
    return RecordDict({SITE: site})


def read_site(content: RecordDict) -> tuple[int, int | None]:
    site = content.config_records[SITE]
    return int(site["client"]), site.get("num-partitions")
