"""The command line: one-line errors with exit code 2, and the data commands."""

import json
import subprocess
import sys

import pytest

from fedlib.cli import main


def test_synth_then_data_summary_json(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            ["synth", "--out", str(out), "--n-train", "9", "--n-test", "6", "--size", "48", "--sources", "2", "--quiet"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["data-summary", "--data", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["total"] == 9 and summary["test"]["total"] == 6
    assert sum(summary["train"][c] for c in ("normal", "pneumonia", "COVID-19")) == 9
    assert set(summary["sources"]["train"]) <= {"site-a", "site-b"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data-summary", "--data", "/nonexistent/covidx"], "data root /nonexistent/covidx does not exist"),
        (["train", "--profile", "smoke", "--fraction", "0", "--out", "{tmp}/r"], "--fraction must be in (0, 1]"),
        (["train", "--profile", "smoke", "--model", "vgg16", "--out", "{tmp}/r"], "unknown model 'vgg16'"),
        (
            ["train", "--profile", "smoke", "--data", "/nonexistent", "--out", "{tmp}/r"],
            "data root /nonexistent does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    res = subprocess.run([sys.executable, "-m", "fedlib.cli", *argv], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0  # one line, no traceback
    assert res.stderr.startswith("fedlib: error: ") and message in res.stderr
    assert not (tmp_path / "r" / "final.json").exists()


def test_debug_shows_the_traceback():
    res = subprocess.run(
        [sys.executable, "-m", "fedlib.cli", "--debug", "data-summary", "--data", "/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "Traceback" in res.stderr


def _subparsers():
    import argparse

    from fedlib.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _by_dest(parser):
    return {a.dest: a for a in parser._actions}


def _group_of(parser, dest):
    return next(g.title for g in parser._action_groups if any(a.dest == dest for a in g._group_actions))


# The options of one training run before they were generated from TrainConfig's fields: none may go or appear.
TRAIN_FLAGS = (
    "--model --mode --data --image-size --covidnet-grid --clients --fraction --rounds --local-epochs --batch-size --lr "
    "--weight-decay --aggregation --keep-optimizer-state --engine --strategy --proximal-mu --server-lr "
    "--server-momentum --beta1 --beta2 --tau --trim-fraction --secagg --min-clients --round-retries "
    "--client-timeout --inject-failures --partition --alpha --dp-noise-multiplier --dp-target-epsilon --dp-delta "
    "--dp-max-grad-norm --central-epochs --pooled-budget --val-fraction --class-weight --eval-every --seed "
    "--subset --device --amp --parallel-clients --compile --train-split --test-split --train-dir --test-dir "
    "--val-split --val-dir --task"
).split()


def test_a_flag_is_generated_for_every_field_that_has_one():
    from fedlib.config import FIELDS, SECTIONS, flags

    assert sorted(FIELDS[n].metadata["flag"] for n in flags.FLAGGED) == sorted(TRAIN_FLAGS)
    for command in ("train", "flower-local"):
        parser = _subparsers()[command]
        actions = _by_dest(parser)
        for name in flags.FLAGGED:
            meta, action = FIELDS[name].metadata, actions[name]
            assert action.option_strings[0] == meta["flag"] and action.help == meta["help"]
            assert action.default is None  # not given: the profile, file or saved run decides
            if flags.field_type(name) is not bool:
                assert action.type is flags.field_type(name)
            assert _group_of(parser, name) == SECTIONS[meta["section"]][0]  # grouped by section
        assert vars(parser.parse_args(["--out", "r"]))["secagg"] is None
    assert flags.field_type("client_timeout") is float and flags.field_type("amp") is bool


def test_train_help_shows_each_fields_help_by_section(capsys):
    from fedlib.config import FIELDS, SECTIONS, flags

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in flags.FLAGGED:
        assert " ".join(FIELDS[name].metadata["help"].split()) in shown, name
    titles = [f"{SECTIONS[s][0]}: {SECTIONS[s][1]}" for s in SECTIONS]
    assert all(t in shown for t in titles)
    assert [shown.index(t) for t in titles] == sorted(shown.index(t) for t in titles)


def test_layout_flags_are_one_definition_for_every_command():
    from fedlib.config import FIELDS, LAYOUT, SECTIONS

    assert LAYOUT == ("train_split", "test_split", "train_dir", "test_dir", "val_split", "val_dir", "task")
    commands = _subparsers()
    for command in ("data-summary", "train", "flower-local", "reproduce", "study"):
        actions = _by_dest(commands[command])
        for name in LAYOUT:
            a = actions[name]
            assert (a.option_strings, a.help, a.type, a.default) == (
                [FIELDS[name].metadata["flag"]],
                FIELDS[name].metadata["help"],
                str,
                None,
            )
            assert _group_of(commands[command], name) == SECTIONS["layout"][0]


def test_reproduce_and_study_flags_come_from_the_fields():
    from fedlib.cli import REPRODUCE_FIELDS
    from fedlib.config import FIELDS

    commands = _subparsers()
    reproduce, study = _by_dest(commands["reproduce"]), _by_dest(commands["study"])
    for name in REPRODUCE_FIELDS:
        assert reproduce[name].help == FIELDS[name].metadata["help"] and reproduce[name].default is None
    assert (reproduce["data"].default, reproduce["device"].default, study["data"].default) == (
        "synthetic",
        "auto",
        "synthetic",
    )
    assert reproduce["data"].help == study["data"].help == FIELDS["data"].metadata["help"]
    args = commands["reproduce"].parse_args(["--no-compile", "--val-fraction", "0.2", "--test-dir", "t"])
    assert (args.compile, args.val_fraction, args.test_dir, args.class_weight) == (False, 0.2, "t", None)
