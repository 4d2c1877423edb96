"""fedlib's FedAvg as a Flower App: a ClientApp per site and a ServerApp.

Flower only moves messages. The maths stays fedlib's: the ClientApp calls
``fedlib.client.fit`` (the in-process engine's site code) and the ServerApp runs
``fedlib.runner.train`` with ``FlowerClients`` as its client pool, so sampling,
update checks, aggregation, evaluation and the run directory are the in-process
engine's own code, and the engines agree bit for bit on CPU.

A SuperNode is one site. Its node config says which fedlib client it is
(``partition-id``) and where its images are: ``data-dir``, a COVIDx-format
folder whose training split is the site's data (a real hospital), or, without
it, part ``partition-id`` of the run's data set split as the in-process engine
splits it (``num-partitions`` parts; trying it on one machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .. import client, config, experiment, runner
from ..config import TrainConfig
from ..errors import UserError
from ..federated import ClientResult, start_of
from . import runconfig, secagg
from .messages import (
    pack,
    read_extra,
    read_site,
    read_train_request,
    read_update,
    site_reply,
    train_request,
    unpack,
    update_reply,
)
from .site import load_site, site_id

REPLY_TIMEOUT = 3600.0  # seconds a round waits for its sites when --client-timeout is not given
NODE_WAIT = 300.0  # seconds the server waits for every site's SuperNode to connect
ERROR_MARK = "fedlib: error: "  # how the ServerApp's log tells `fedlib train` why a run failed
STARTED_MARK = "fedlib: ServerApp started"  # ... and that the run has begun on the SuperLink


# ---- the site ---------------------------------------------------------------------------------

client_app = ClientApp(mods=[secagg.route])  # SecAgg+ messages take their own path (--secagg)


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which fedlib client this node serves."""
    try:
        return Message(site_reply(*site_id(context.node_config)), reply_to=msg)
    except UserError as exc:
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=msg)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One local update of the global model on this site's data (``fedlib.client.fit``)."""
    packed, cfg, round_idx, attempt, client_id = read_train_request(msg.content)
    task = client.Task(round_idx, client_id, attempt, extra=read_extra(msg.content))
    try:
        if site_id(context.node_config)[0] != client_id:
            raise UserError(f"this SuperNode serves client {site_id(context.node_config)[0]}, not client {client_id}")
        exp, indices, model = load_site(
            json.dumps(config.to_dict(cfg)), json.dumps(dict(context.node_config), sort_keys=True)
        )
        model.load_state_dict(unpack(packed, model.state_dict()))
        update, _ = client.fit(model, (exp.data.train_images, exp.data.train_labels, indices), cfg, exp.hw, task)
    except Exception as exc:
        log(ERROR, "client %d failed in round %d", client_id, round_idx + 1, exc_info=exc)
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, failure_reason(exc)), reply_to=msg)
    return Message(update_reply(update), reply_to=msg)


def failure_reason(exc: Exception) -> str:
    """What the server learns about a failing site: the exception's type only, since a
    message may name the site's files; the message itself stays in the site's log.
    Injected faults say all, as in-process, so a demo's history.csv is the same."""
    if isinstance(exc, client.InjectedFault):
        return f"raised {type(exc).__name__}: {exc}"
    return f"raised {type(exc).__name__} (details in the site's log)"


# ---- the server -------------------------------------------------------------------------------


def exchange(grid: Grid, messages: list[Message], timeout: float, poll: float = 0.2) -> list[Message | None]:
    """Send ``messages`` and collect their replies until all are in or ``timeout`` s passed;
    the reply to each message, in order (None: none came).

    A reply is matched by the message it answers, not by its sender: the SuperLink itself
    answers for a SuperNode it has lost. Grid.send_and_receive does the same but looks for
    replies every 3 s, which on a short round costs more than the training."""
    ids = list(grid.push_messages(messages))
    waiting, got = set(ids), {}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for reply in grid.pull_messages(waiting):
            got[reply.metadata.reply_to_message_id] = reply
            waiting.discard(reply.metadata.reply_to_message_id)
        if waiting:
            time.sleep(poll)
    return [got.get(i) for i in ids]


def discover(grid: Grid, num_clients: int, wait: float = NODE_WAIT) -> dict[int, int]:
    """{fedlib client id: Flower node id}: wait for the SuperNodes, then ask each which site it is."""
    deadline = time.monotonic() + wait
    while len(nodes := list(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise UserError(
                f"only {len(nodes)} of {num_clients} SuperNodes connected within {wait:g} s; "
                f"start one per client with --node-config 'partition-id=0..{num_clients - 1}'."
            )
        time.sleep(0.5)
    queries = [Message(RecordDict(), node, MessageType.QUERY) for node in nodes]
    sites: dict[int, int] = {}
    for node, reply in zip(nodes, exchange(grid, queries, wait), strict=True):
        if reply is None:
            continue  # reported below as a missing site
        if reply.has_error():
            raise UserError(f"SuperNode {node} did not say which client it serves ({reply.error.reason}).")
        client_id, parts = read_site(reply.content)
        if parts is not None and parts != num_clients:
            raise UserError(
                f"SuperNode {node} has num-partitions={parts} but the run has {num_clients} "
                "clients; give every SuperNode num-partitions=K."
            )
        if not 0 <= client_id < num_clients or client_id in sites:
            raise UserError(
                f"SuperNode {node} says partition-id={client_id}, which is out of range or "
                f"taken; give the SuperNodes the ids 0 to {num_clients - 1}, once each."
            )
        sites[client_id] = node
    missing = sorted(set(range(num_clients)) - set(sites))
    if missing:
        raise UserError(f"no SuperNode answered for client(s) {missing} within {wait:g} s; check those sites.")
    return sites


class FlowerClients:
    """The server's client pool (``fedlib.federated.ClientPool``) on a Flower Grid.

    A round's sites train in parallel, each on its own SuperNode; their results
    are handed to the server in ascending client order, as in-process, so the
    floating-point sums of the aggregation are the same.
    """

    def __init__(self, grid: Grid, exp: experiment.Experiment, node_wait: float = NODE_WAIT):
        self.grid, self.cfg = grid, exp.cfg
        self.timeout = exp.cfg.client_timeout or REPLY_TIMEOUT
        self.nodes = discover(grid, len(exp.parts), node_wait)

    def fit_round(self, round_idx, clients, global_state, attempt, starts=None) -> Iterator[ClientResult]:
        shared = pack(global_state)  # FedBN: a record per client, with its own layers
        messages = []
        for c in clients:
            state, extra = start_of(global_state, starts, c)
            arrays = shared if state is global_state else pack(state)
            request = train_request(arrays, self.cfg, round_idx, attempt, c, extra)
            messages.append(Message(request, self.nodes[c], MessageType.TRAIN))
        for c, reply in zip(clients, exchange(self.grid, messages, self.timeout), strict=True):
            yield self._result(c, reply, global_state)

    def _result(self, c: int, reply: Message | None, like: dict) -> ClientResult:
        if reply is None:
            return ClientResult(c, None, f"timeout (no reply within {self.timeout:g} s)")
        if reply.has_error():
            return ClientResult(c, None, reply.error.reason or f"Flower error code {reply.error.code}")
        try:
            return ClientResult(c, read_update(reply.content, like))
        except (KeyError, TypeError, ValueError) as exc:
            return ClientResult(c, None, f"malformed reply ({type(exc).__name__}: {exc})")


def serve(grid: Grid, context: Context, cfg: TrainConfig, out: str | Path, **flags) -> dict:
    """fedlib's FedAvg server on Flower's grid; writes the run directory as in-process.
    ``flags``: ``fedlib.runner.train``'s resume, overwrite and progress."""

    def pool(exp: experiment.Experiment):
        if not cfg.secagg:
            return FlowerClients(grid, exp)
        nodes = discover(grid, len(exp.parts))
        return secagg.SecAggClients(grid, exp, context, nodes, cfg.client_timeout or REPLY_TIMEOUT)

    try:
        return runner.train(cfg, out, pool=pool, **flags)
    except UserError as exc:
        log(ERROR, "%s%s", ERROR_MARK, exc)
        raise


def run_config_train(run_config) -> tuple[TrainConfig, Path, bool, bool]:
    """(config, run directory, resume, overwrite) from the run config `flwr run` was given."""
    values = {**runconfig.settings(run_config), "engine": "flower"}
    cfg = config.resolve(values.pop("profile", "quick"), **values)
    out = Path(str(run_config["run-dir"]))
    if not out.is_absolute():
        raise UserError(
            f"run-dir {str(out)!r} is not an absolute path; give the run directory on the "
            "SuperLink's machine as an absolute path."
        )
    return cfg, out, bool(run_config["resume"]), bool(run_config["overwrite"])


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """The deployment's entry: the run comes from the run config (``fedlib train --engine flower``)."""
    log(INFO, "%s (run %s)", STARTED_MARK, context.run_id)
    try:
        cfg, out, resume, overwrite = run_config_train(context.run_config)
    except UserError as exc:
        log(ERROR, "%s%s", ERROR_MARK, exc)
        raise
    serve(grid, context, cfg, out, resume=resume, overwrite=overwrite, progress=False)
