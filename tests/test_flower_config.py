"""What `fedlib train --engine flower` does before and around a deployment, without one:
Flower's run config, the credentials, the watch on `flwr run`, Flower's text made plain."""

import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

from fedlib import config
from fedlib.cli import build_parser, train_config
from fedlib.deploy.credentials import make_node_key, make_tls
from fedlib.errors import UserError
from fedlib.flower import apps, engine, runconfig
from fedlib.flower.connection import plain

pytest.importorskip("flwr")


def test_the_flower_app_declares_one_run_config_key_per_setting():
    declared = tomllib.loads((engine.APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert list(declared) == [*runconfig.OWN_KEYS, *runconfig.keys()]
    assert {declared[k] for k in runconfig.keys()} == {runconfig.UNSET}
    assert "proximal-mu" in declared and "engine" not in declared


def test_single_run_config_keys_override_train_config_and_the_profile():
    run_config = {
        "train-config": '{"profile": "smoke", "rounds": 7, "strategy": "fedavgm"}',
        "run-dir": "/srv/runs/r",
        "resume": False,
        "overwrite": True,
        "rounds": 3,
        "strategy": "fedprox",
        "proximal-mu": 0.25,
        "lr": runconfig.UNSET,
    }
    cfg, out, resume, overwrite = apps.run_config_train(run_config)
    assert (cfg.profile, cfg.rounds, cfg.strategy, cfg.proximal_mu) == ("smoke", 3, "fedprox", 0.25)
    assert cfg.lr == config.resolve("smoke").lr and cfg.engine == "flower"
    assert (out, resume, overwrite) == (Path("/srv/runs/r"), False, True)


@pytest.mark.parametrize(
    "run_config, message",
    [
        ({"train-config": "{", "run-dir": "/r"}, "train-config is not valid JSON"),
        ({"train-config": "[]", "run-dir": "/r"}, "must be a JSON object"),
        ({"train-config": "{}", "run-dir": "/r", "num-server-rounds": 3}, "'num-server-rounds' is not a fedlib"),
        ({"train-config": "{}", "run-dir": "runs/r"}, "is not an absolute path"),
        ({"train-config": "{}", "run-dir": "/r", "strategy": "fedsgd"}, "fedsgd"),
    ],
)
def test_a_bad_run_config_is_one_user_error(run_config, message):
    with pytest.raises(UserError, match=message):
        apps.run_config_train({"resume": False, "overwrite": False, **run_config})


def test_fedlib_train_takes_flower_run_config_text(tmp_path):
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--out", str(tmp_path / "r"), "--run-config", 'profile="smoke" rounds=4 strategy="fedprox"']
    )
    cfg = train_config(args)
    assert (cfg.profile, cfg.rounds, cfg.strategy) == ("smoke", 4, "fedprox")
    args = parser.parse_args(
        ["train", "--profile", "smoke", "--rounds", "5", "--out", str(tmp_path / "r"), "--run-config", "rounds=4"]
    )
    with pytest.raises(UserError, match="--run-config sets rounds=4 but an option sets it to 5"):
        train_config(args)
    args = parser.parse_args(["train", "--out", str(tmp_path / "r"), "--run-config", "rounds=="])
    with pytest.raises(UserError, match="is not Flower's key=value syntax"):
        train_config(args)


def test_credentials_are_what_flower_loads(tmp_path):
    tls = make_tls(tmp_path / "certs")
    cert = x509.load_pem_x509_certificate(tls.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    load_pem_private_key(tls.key.read_bytes(), password=None)
    private, public = make_node_key(tmp_path / "keys" / "hospital-0")
    load_ssh_private_key(private.read_bytes(), password=None)  # as flower-supernode reads it
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ") and private.stat().st_mode & 0o077 == 0


def test_flower_panels_become_one_plain_line():
    panel = "╭─ Error ─────╮\n│ Exit Code: 201 │\n╰──────────────╯\n"
    assert plain(panel) == "Error Exit Code: 201"


def test_a_serverapp_that_never_starts_is_reported(monkeypatch):
    monkeypatch.setattr(engine, "START_TIMEOUT", 0.5)
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    code, _, stopped = engine._follow(silent, {}, echo=False, timeout=None)
    assert stopped == "start" and code != 0
    talks = [sys.executable, "-c", f"import time; print({apps.STARTED_MARK!r}, flush=True); time.sleep(60)"]
    code, tail, stopped = engine._follow(talks, {}, echo=False, timeout=1.0)
    assert stopped == "deadline" and apps.STARTED_MARK in tail[0]
    done = [sys.executable, "-c", f"print({apps.STARTED_MARK!r})"]
    assert engine._follow(done, {}, echo=False, timeout=30.0)[::2] == (0, None)
