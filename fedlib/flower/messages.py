"""What travels between the fedlib server and a site, as Flower records.

These functions are pure (no Flower runtime, no I/O) so that a test can check
the privacy promise directly: a site's reply holds one ``ArrayRecord`` (the
model parameters) and one ``MetricRecord`` (the sample count, the training loss
and further scalars) and nothing else. No images, labels, file names or patient
ids can leave a client, because the reply has no field that could hold them.

Tensors travel as NumPy ``.npy`` bytes, which keep dtype and bits, so the
server aggregates exactly the tensors the client computed.
"""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ..client import Update
from ..config import TrainConfig, replace, to_dict

ARRAYS = "arrays"  # the model parameters (global state in a request, the update in a reply)
TASK = "task"  # request: which round, attempt and client, and the TrainConfig
METRICS = "metrics"  # reply: num-examples, train-loss and further scalars
SITE = "site"  # reply to the discovery query: which fedlib client a node serves
NUM_EXAMPLES, TRAIN_LOSS = "num-examples", "train-loss"


def train_request(arrays: ArrayRecord, cfg: TrainConfig, round_idx: int, attempt: int, client: int) -> RecordDict:
    """The global state and everything a site needs to train it as the in-process engine would."""
    task = ConfigRecord(
        {"round": round_idx, "attempt": attempt, "client": client, "train-config": json.dumps(to_dict(cfg))}
    )
    return RecordDict({ARRAYS: arrays, TASK: task})


def read_train_request(content: RecordDict) -> tuple[dict[str, torch.Tensor], TrainConfig, int, int, int]:
    """(global state, config, round, attempt, client) from ``train_request``'s record."""
    task = content.config_records[TASK]
    cfg = replace(TrainConfig(**json.loads(task["train-config"])))
    state = dict(content.array_records[ARRAYS].to_torch_state_dict())
    return state, cfg, int(task["round"]), int(task["attempt"]), int(task["client"])


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
    return RecordDict({ARRAYS: ArrayRecord(update.state), METRICS: metrics})


def read_update(content: RecordDict) -> Update:
    """The inverse of ``update_reply``."""
    metrics = dict(content.metric_records[METRICS])
    num_examples, loss = metrics.pop(NUM_EXAMPLES), metrics.pop(TRAIN_LOSS)
    state = dict(content.array_records[ARRAYS].to_torch_state_dict())
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
