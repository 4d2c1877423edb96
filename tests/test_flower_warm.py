"""fedlib's warm SuperNodes (opt-in): every patch of Flower's internals is checked against the
installed Flower before use, falls back to the stock SuperNode when it does not apply, and a
warm deployment trains exactly as the in-process engine."""

import warnings

import pytest
from conftest import assert_same_weights, smoke, weights

from fedlib import config
from fedlib.deploy import LocalFederation, warm
from fedlib.deploy.local import tagged
from fedlib.flower import run_flower
from fedlib.launch import run

pytest.importorskip("flwr")


def test_every_patched_flower_attribute_is_there():
    # Fails on a Flower upgrade that moved or changed what fedlib.deploy.warm patches or calls:
    # then fix warm.py for the new Flower (and FLOWER_VERSION), or drop the warm mode.
    assert warm.problems() == []
    assert warm.supernode_command()[-3:] == ["-m", warm.MODULE, "supernode"]


@pytest.mark.parametrize(
    "target, value, message",
    [
        ("flwr.__version__", "9.0.0", "Flower 9.0.0 is installed"),
        ("flwr.supercore.superexec.run_superexec.get_executor", None, "run_superexec.get_executor is gone"),
        ("flwr.supernode.runtime.run_clientapp.run_clientapp", lambda token: None, "takes no certificates"),
    ],
)
def test_a_flower_that_does_not_match_gets_stock_supernodes_and_one_warning(monkeypatch, target, value, message):
    if value is None:
        monkeypatch.delattr(target)
    else:
        monkeypatch.setattr(target, value)
    assert any(message in p for p in warm.problems())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warm.supernode_command() == ["flower-supernode"]
    assert len(caught) == 1 and "stock ones run instead" in str(caught[0].message)


def test_a_warm_deployment_equals_inprocess(data_dir, tmp_path):
    cfg = smoke(data_dir, rounds=1, clients=2, fraction=1.0, client_timeout=120.0)
    run(cfg, tmp_path / "inprocess", progress=False)
    with LocalFederation(2, tmp_path / "flower", start_timeout=60, warm=True) as fed:
        assert fed.supernode_command[-1] == "supernode"
        run_flower(
            config.replace(cfg, engine="flower"),
            tmp_path / "warm",
            progress=False,
            superlink=fed.address,
            root_certificates=fed.root_certificates,
            timeout=240,
        )
    assert tagged(fed.tag) == []
    assert_same_weights(weights(tmp_path / "inprocess"), weights(tmp_path / "warm"))
