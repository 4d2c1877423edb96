"""The run folder's owner: ``train(cfg, out)`` checks the target, resumes, picks the mode,
and writes config.json and final.json.

Every engine ends here: the in-process engine directly, Flower's ServerApp with its
own client pool (``fedlib.flower``). The steps, in order:

1. refuse a target that is not ours to write (``check_target``, ``fedlib.run.folder``),
   take the run folder's lock and clean up what a killed replacement left (``recover``);
2. with ``resume``, follow config.json (``config.resume_config``); a finished run is
   returned as it is;
3. load the data and split it (``experiment.setup``): bad data fails here, before an
   earlier run is touched; record the data's fingerprint;
4. train in a transaction (``transaction``): the mode's trainer runs the one
   loop (``fedlib.loop``), and final.json is written last.
"""

from __future__ import annotations

from pathlib import Path

from .central import run_central, run_local
from .config import TrainConfig, absolute_paths, load_saved, resume_config, to_dict
from .errors import UserError
from .experiment import describe, record_data, setup
from .federated import ClientPool, run_fedavg
from .loop import resumed_history
from .run.folder import (
    check_config,
    check_target,
    data_roots,
    is_finished,
    locked,
    real_out,
    recover,
    recover_leftovers,
    transaction,
    write_config,
)
from .run.io import load_checkpoint, read_json, write_json

BASELINES = {"central": run_central, "local": run_local}  # the modes without a client pool


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    pool=None,
) -> dict:
    """Train one run into ``out`` in this process; returns final.json's content.

    ``pool(exp)`` gives the federated server its clients (``fedlib.federated.ClientPool``;
    Flower's ServerApp passes its own); None trains them here. With ``resume``, ``cfg``
    may differ from the run's config.json only in what ``config.RESUME_CHANGEABLE``
    allows (more rounds, another device, ...).
    """
    out = real_out(out)  # a link's target: the rules apply to it, and renames never act on the link
    cfg = absolute_paths(cfg)  # what config.json records, so that it repeats from any folder
    recover_leftovers(out)  # a killed replacement's remains, before the target is judged
    check_target(out, resume=resume, overwrite=overwrite, data_roots=data_roots(cfg))
    with locked(out):  # also refuses a second process before any work
        recover(out)  # the remains of a killed replacement, whatever this command does next
    if resume:
        saved = load_saved(out)
        check_config(out)  # a hand edit of config.json is refused like a changed option
        cfg = resume_config(saved, to_dict(cfg), out)
        if is_finished(out):
            if cfg.pooled_epochs != saved.pooled_epochs or cfg.rounds != saved.rounds:
                raise UserError(
                    f"{out} has finished; --resume does not extend a finished run: start a new "
                    "run with the new --rounds in another --out."
                )
            return read_json(out / "final.json")
    exp = setup(cfg, out, progress)  # bad data fails here, before an earlier run is touched
    cfg = exp.cfg = record_data(exp.cfg, exp.data, resume)
    checkpoint = load_checkpoint(out) if resume else None  # a resumed run writes in place
    if checkpoint is not None and "history_rows" not in checkpoint:
        raise UserError(
            f"--resume: {out}'s checkpoint was written by an older fedlib, whose loop this one does not "
            "continue; finish it with that version, or start again with --overwrite."
        )
    with transaction(out, resume=resume) as work:
        exp.run_dir = work
        _check_progress(cfg, checkpoint, out)
        write_config(work, to_dict(cfg))
        history = resumed_history(exp, checkpoint)
        if cfg.mode == "fedavg":
            clients: ClientPool | None = pool(exp) if pool is not None else None
            final = run_fedavg(exp, checkpoint, history, clients)
        else:
            final = BASELINES[cfg.mode](exp, checkpoint, history)
        final = {
            "model": cfg.model,
            "mode": cfg.mode,
            "strategy": cfg.strategy if cfg.mode == "fedavg" else None,
            "profile": cfg.profile,
            "seed": cfg.seed,
            **describe(exp),
            **final,
            "sample_passes": _sample_passes(history),
            "pooled_budget": cfg.pooled_budget if cfg.mode != "fedavg" else None,
            "wall_time": exp.elapsed(),
        }
        write_json(work / "final.json", final)
    return final


def _check_progress(cfg: TrainConfig, checkpoint: dict | None, out: Path) -> None:
    """A resumed run cannot be cut below the rounds or epochs it has already done."""
    if checkpoint is None:
        return
    done = checkpoint.get("round", checkpoint.get("epoch", 0))
    total = cfg.rounds if cfg.mode == "fedavg" else cfg.pooled_epochs
    unit = "rounds" if cfg.mode == "fedavg" else "epochs"
    if total < done:
        raise UserError(
            f"--resume: {out} has done {done} {unit} already, more than the {total} asked for; ask for at least {done}."
        )


def _sample_passes(history: list[dict]) -> int:
    """Images seen in training, over all rounds (and clients): the run's compute."""
    last: dict = {}
    for row in history:
        last[row.get("client", "")] = int(row["sample_passes"])
    return sum(last.values())
