"""The run folder as a transaction: --overwrite replaces only a finished fedlib run, a
failing or killed replacement leaves the earlier run byte for byte, one process at a
time, and --resume changes only what it can change safely."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import smoke, write_covidx

from fedlib import config
from fedlib.cli import main
from fedlib.errors import UserError
from fedlib.run import io
from fedlib.run.folder import MARKER, is_finished, is_run_folder, recover
from fedlib.runner import train as run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(run_dir: Path) -> list[str]:
    """Anything fedlib left beside the run folder, apart from its lock file."""
    return sorted(
        p.name
        for p in run_dir.parent.iterdir()
        if p.name.startswith(f".{run_dir.name}.") and not p.name.endswith(".lock")
    )


@pytest.fixture(scope="module")
def data_config(data_dir):
    path = data_dir / "data.yaml"
    path.write_text(f"data_dir: {data_dir}\n")
    return path


@pytest.fixture
def earlier(data_dir, tmp_path) -> Path:
    """A finished one-round smoke run."""
    out = tmp_path / "runs" / "r"
    run(smoke(data_dir, rounds=1), out, progress=False)
    return out


def argv(data_config, out, *extra) -> list[str]:
    return ["train", "--profile", "smoke", "--config", str(data_config), "--out", str(out), "--quiet", *extra]


# ---------------------------------------------------------------- what --overwrite may replace


def test_overwrite_refuses_a_folder_that_is_not_a_run(data_config, tmp_path, capsys):
    folder = write_covidx(tmp_path / "covidx", [("p1", "a.png", "normal", "s")], [("p2", "b.png", "normal", "s")])
    before = snapshot(folder)
    assert main(argv(data_config, folder, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "--overwrite replaces only fedlib run folders" in err and "\n" not in err.strip()
    assert main(argv(data_config, folder)) == 2
    assert "is not empty and is not a fedlib run folder" in capsys.readouterr().err
    assert snapshot(folder) == before


def test_out_may_not_hold_the_data_being_read(tmp_path, capsys):
    root = write_covidx(
        tmp_path / "d" / "covidx",
        [(f"p{i}", f"a{i}.png", "normal", "s") for i in range(4)],
        [("q", "b.png", "normal", "s")],
    )
    io.atomic_write_text(tmp_path / "d" / MARKER, "looks like a run\n")  # even then
    before = snapshot(root)
    for out in (root, tmp_path / "d"):
        assert (
            main(["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--overwrite", "--quiet"]) == 2
        )
        assert "holds the data this run reads" in capsys.readouterr().err
    assert snapshot(root) == before


@pytest.mark.parametrize("out", ["a-file", "/dev/null"])
def test_out_naming_a_file_is_one_line(data_config, tmp_path, capsys, out):
    path = tmp_path / out if out == "a-file" else Path(out)
    if out == "a-file":
        path.write_text("x")
    assert main(argv(data_config, path)) == 2
    assert f"--out {path} is a file, not a folder" in capsys.readouterr().err


def test_an_older_run_without_marker_can_still_be_replaced(data_config, earlier):
    (earlier / MARKER).unlink()
    assert is_run_folder(earlier)
    assert main(argv(data_config, earlier, "--overwrite", "--rounds", "2")) == 0
    assert len(io.read_history(earlier / "history.csv")) == 2


# ---------------------------------------------------------------- replacing is a transaction


def test_a_replacement_failing_in_its_first_round_leaves_the_earlier_run(data_config, earlier, capsys):
    before = snapshot(earlier)
    bad = argv(data_config, earlier, "--overwrite", "--inject-failures", "1", "--round-retries", "0")
    for _ in range(2):  # a second failing replacement loses nothing either
        assert main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"the earlier run in {earlier} is unchanged" in err
        assert "--resume" not in err  # resuming would continue the earlier run, not this one
        assert snapshot(earlier) == before and siblings(earlier) == []


def test_a_finished_replacement_takes_the_place_of_the_earlier_run(data_config, earlier):
    assert main(argv(data_config, earlier, "--overwrite", "--rounds", "2", "--seed", "5")) == 0
    assert json.loads((earlier / "config.json").read_text())["seed"] == 5
    assert len(io.read_history(earlier / "history.csv")) == 2 and siblings(earlier) == []


def _train_process(data_config, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedlib.cli", *argv(data_config, out, *extra)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kill_at", ["config written", "first checkpoint", "second round written"])
def test_a_killed_replacement_leaves_the_earlier_run_byte_identical(data_config, earlier, kill_at):
    before = snapshot(earlier)
    work = earlier.with_name(f".{earlier.name}.replacing")
    reached = {
        "config written": lambda: (work / "config.json").exists(),
        "first checkpoint": lambda: (work / "checkpoints" / "last.pt").exists(),
        "second round written": lambda: len(io.read_history(work / "history.csv")) >= 2,
    }[kill_at]
    proc = _train_process(data_config, earlier, "--overwrite", "--rounds", "6")
    try:
        while not reached():
            assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert snapshot(earlier) == before
    # The next command on that folder cleans the remains up and finds the earlier run whole.
    assert main(argv(data_config, earlier, "--resume")) == 0
    assert snapshot(earlier) == before and siblings(earlier) == []


@pytest.mark.parametrize("finished", [True, False])
def test_recover_completes_or_undoes_a_swap_cut_between_its_renames(tmp_path, finished):
    out = tmp_path / "r"
    replaced, replacing = tmp_path / ".r.replaced", tmp_path / ".r.replacing"
    for folder, tag in ((replaced, "old"), (replacing, "new")):
        folder.mkdir()
        io.write_json(folder / "config.json", {"tag": tag})
    if finished:
        io.write_json(replacing / "final.json", {})
    recover(out)
    assert io.read_json(out / "config.json")["tag"] == ("new" if finished else "old")
    assert not replaced.exists() and not replacing.exists()


def test_a_finished_run_holds_config_json_and_final_json(tmp_path):
    io.write_json(tmp_path / "final.json", {})
    assert not is_finished(tmp_path)
    io.write_json(tmp_path / "config.json", {})
    assert is_finished(tmp_path)


# ---------------------------------------------------------------- one process at a time


def test_a_second_process_on_the_same_run_is_refused(data_config, tmp_path, capsys):
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys
        from fedlib.run import folder
        with folder.locked({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.read()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(argv(data_config, out)) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by process {holder.pid}" in err and "\n" not in err.strip()
        assert not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert main(argv(data_config, out, "--rounds", "1")) == 0  # released when the holder exits


# ---------------------------------------------------------------- --resume


def test_resume_applies_more_rounds_and_refuses_other_changes(data_config, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(argv(data_config, out, "--rounds", "1")) == 0
    (out / "final.json").unlink()  # as if stopped after round 1 of a longer run
    assert main(argv(data_config, out, "--resume", "--lr", "0.5")) == 2
    err = capsys.readouterr().err
    assert "cannot change lr (0.001 -> 0.5)" in err and "drop those options" in err
    assert main(argv(data_config, out, "--resume", "--rounds", "3")) == 0
    assert [int(r["round"]) for r in io.read_history(out / "history.csv")] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["rounds"] == 3


def test_resume_cannot_extend_a_finished_run_or_cut_below_what_is_done(data_config, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(argv(data_config, out, "--rounds", "2")) == 0
    assert main(argv(data_config, out, "--resume", "--rounds", "4")) == 2
    assert "does not extend a finished run" in capsys.readouterr().err
    (out / "final.json").unlink()
    assert main(argv(data_config, out, "--resume", "--rounds", "1")) == 2
    assert "has done 2 rounds already" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_text("{not json"), "config.json is damaged"),
        (
            lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "amp": "no"})),
            "config field amp must be true or false or null, got 'no'",
        ),
        (
            lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "learning_rate": 1})),
            "unknown key(s) learning_rate",
        ),
    ],
)
def test_resume_after_config_json_was_damaged_or_edited(data_config, tmp_path, capsys, damage, words):
    out = tmp_path / "r"
    assert main(argv(data_config, out, "--rounds", "1")) == 0
    damage(out / "config.json")
    assert main(argv(data_config, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert words in err and "\n" not in err.strip()


def test_the_data_changing_under_a_run_stops_its_resume(tmp_path, capsys):
    rows = [(f"p{i}", f"a{i}.png", ("normal", "pneumonia", "COVID-19")[i % 3], "s") for i in range(9)]
    root = write_covidx(tmp_path / "covidx", rows, rows[:3])
    out = tmp_path / "r"
    base = ["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--quiet"]
    assert main([*base, "--rounds", "1"]) == 0
    (out / "final.json").unlink()
    write_covidx(root, rows[:-1], rows[:3])  # the data set lost an image
    assert main([*base, "--resume", "--rounds", "2"]) == 2
    assert "the data at" in capsys.readouterr().err


def test_a_moved_data_set_resumes_when_its_fingerprint_is_the_same(tmp_path):
    import shutil

    rows = [(f"p{i}", f"a{i}.png", ("normal", "pneumonia", "COVID-19")[i % 3], "s") for i in range(9)]
    root = write_covidx(tmp_path / "covidx", rows, rows[:3])
    out = tmp_path / "r"
    assert (
        main(["train", "--profile", "smoke", "--data", str(root), "--out", str(out), "--quiet", "--rounds", "1"]) == 0
    )
    (out / "final.json").unlink()
    moved = shutil.move(root, tmp_path / "elsewhere")
    assert (
        main(
            [
                "train",
                "--profile",
                "smoke",
                "--data",
                str(moved),
                "--out",
                str(out),
                "--quiet",
                "--resume",
                "--rounds",
                "2",
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["data"] == str(Path(moved).resolve())


# ---------------------------------------------------------------- config types, one place


@pytest.mark.parametrize(
    "text, words",
    [
        ('amp: "no"\n', "config field amp must be true or false or null, got 'no'"),
        ("seed: abc\n", "config field seed must be an integer, got 'abc'"),
        ("data: 5\n", "config field data must be text, got 5"),
        ("rounds: 2.5\n", "config field rounds must be an integer, got 2.5"),
    ],
)
def test_config_fields_of_the_wrong_type_are_named(tmp_path, capsys, text, words):
    (tmp_path / "c.yaml").write_text(text)
    assert (
        main(["train", "--profile", "smoke", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err
    assert words in err and "\n" not in err.strip()


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(b"rounds: 2 \xff\xfe\n")
    assert (
        main(["train", "--profile", "smoke", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_every_profile_resolves_with_fields_of_their_declared_type():
    for profile in config.PROFILES:
        config.check_types(config.resolve(profile))


# ---------------------------------------------------------------- failures while writing


def test_disk_full_during_a_replacement_is_one_line_and_loses_nothing(data_config, earlier, monkeypatch, capsys):
    before = snapshot(earlier)

    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(io, "save_torch", full)
    assert main(argv(data_config, earlier, "--overwrite")) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "\n" not in err
    assert f"the earlier run in {earlier} is unchanged" in err
    assert snapshot(earlier) == before and siblings(earlier) == []


def test_sigterm_during_training_is_a_clean_stop_that_resumes(data_config, tmp_path):
    out = tmp_path / "r"
    proc = _train_process(data_config, out, "--rounds", "30")
    try:
        while not (out / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.stderr.close()
    assert "Traceback" not in err and "continue it with the same command and --resume" in err
    assert io.load_checkpoint(out) is not None
    assert not [p for p in out.rglob("*.tmp")]


def test_a_checkpoint_of_the_older_loop_is_refused_and_left_alone(data_dir, tmp_path):
    out = tmp_path / "r"
    cfg = smoke(data_dir, rounds=2)
    run(cfg, out, progress=False)
    checkpoint = io.load_checkpoint(out)
    del checkpoint["history_rows"]  # what fedlib wrote before the one training loop
    io.save_checkpoint(out, checkpoint)
    (out / "final.json").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="older fedlib"):
        run(cfg, out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------- the run folder is the truth (issue 26)


def test_resume_refuses_a_hand_edited_config_json_naming_the_changed_keys(data_config, tmp_path, capsys):
    """A hand edit (lr 0.001 -> 0.5) on an unfinished run was applied on --resume without a word."""
    out = tmp_path / "r"
    assert main(argv(data_config, out, "--rounds", "1")) == 0
    (out / "final.json").unlink()  # as if stopped after round 1 of a longer run
    path = out / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "lr": 0.5, "rounds": 3}, indent=2))
    before = snapshot(out)
    assert main(argv(data_config, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json was edited after the run wrote it: lr (0.001 -> 0.5), rounds (1 -> 3)" in err, err
    assert "\n" not in err and snapshot(out) == before
    with pytest.raises(UserError, match="edited after the run wrote it"):
        run(config.load_saved(out), out, resume=True, progress=False)


def test_resume_accepts_what_the_run_wrote_after_a_resume_changed_it(data_config, tmp_path):
    out = tmp_path / "r"
    assert main(argv(data_config, out, "--rounds", "1")) == 0
    (out / "final.json").unlink()
    assert main(argv(data_config, out, "--resume", "--rounds", "2")) == 0  # config.json now says 2 rounds
    (out / "final.json").unlink()
    assert main(argv(data_config, out, "--resume", "--rounds", "3")) == 0


def test_overwrite_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(data_config, earlier, capsys):
    """--out a link to a finished run: --overwrite trained, swapped, then failed with "Cannot call
    rmtree on a symbolic link", leaving a .replaced folder that made every rerun fail."""
    link = earlier.parent / "latest"
    link.symlink_to(earlier)
    for _ in range(2):
        assert main(argv(data_config, link, "--overwrite", "--rounds", "1")) == 0, capsys.readouterr().err
        assert link.is_symlink() and link.resolve() == earlier and is_finished(earlier)
        assert siblings(earlier) == [] and siblings(link) == []


def test_a_swap_cut_between_its_renames_is_recovered_before_resume_judges_the_folder(data_config, earlier):
    """Killed between the two renames of an unfinished replacement: .r.replaced holds the run and
    r is gone; the next --resume puts it back (as ``recover`` does) instead of finding no run."""
    before = snapshot(earlier)
    replacing = earlier.with_name(".r.replacing")
    replacing.mkdir()
    io.write_json(replacing / "config.json", {"tag": "unfinished"})
    os.replace(earlier, earlier.with_name(".r.replaced"))
    assert main(argv(data_config, earlier, "--resume")) == 0
    assert snapshot(earlier) == before and siblings(earlier) == []


def test_a_full_disk_inside_torch_save_is_one_line_naming_the_file(data_config, earlier, monkeypatch, capsys):
    """torch.save turns a failed write into 'RuntimeError: unexpected pos' (a 51-line traceback);
    here the checkpoint is written to /dev/full, as a full disk answers."""
    import tempfile

    before = snapshot(earlier)
    make = tempfile.mkstemp

    def full(dir, prefix, suffix):
        fd, name = make(dir=dir, prefix=prefix, suffix=suffix)
        if prefix.startswith(".next.pt"):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, name

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    assert main(argv(data_config, earlier, "--overwrite")) == 2
    err = capsys.readouterr().err.strip()
    assert "next.pt (No space left on device)" in err and "\n" not in err, err
    assert f"the earlier run in {earlier} is unchanged" in err
    assert snapshot(earlier) == before and siblings(earlier) == []
