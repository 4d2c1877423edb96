"""Which fedlib client a SuperNode is, and its data: shared by the ClientApp's plain
(``fedlib.flower.apps``) and SecAgg+ (``fedlib.flower.secagg``) training paths."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from torch import nn

from .. import config, experiment
from ..config import TrainConfig
from ..errors import UserError


def site_id(node_config) -> tuple[int, int | None]:
    """(fedlib client id, number of partitions or None) from a SuperNode's node config."""
    if "partition-id" not in node_config:
        raise UserError(
            "the SuperNode's --node-config has no partition-id; give each site "
            "partition-id=<its client number, 0 to K-1>."
        )
    parts = node_config.get("num-partitions") if "data-dir" not in node_config else None
    return int(node_config["partition-id"]), None if parts is None else int(parts)


@functools.lru_cache(maxsize=1)
def load_site(train_config: str, node_config: str) -> tuple[experiment.Experiment, np.ndarray, nn.Module]:
    """The site's data, its training indices and a model, loaded once per process and run."""
    cfg, nodes = TrainConfig(**json.loads(train_config)), json.loads(node_config)
    client_id, parts = site_id(nodes)
    if "data-dir" in nodes:  # a hospital: all of its own training split
        cfg = config.replace(cfg, data=str(nodes["data-dir"]), clients=1, partition="iid", subset=None)
        client_id = 0
    elif parts is not None and parts != cfg.clients:
        raise UserError(
            f"this SuperNode has num-partitions={parts} but the run has {cfg.clients} "
            "clients; start one SuperNode per client."
        )
    # The run directory is the server's; a site writes nothing.
    exp = experiment.setup(cfg, Path("."), progress=False)
    return exp, exp.parts[client_id], exp.new_model()
