"""The README's result tables are the files the notebooks wrote, not typed-in numbers."""

from __future__ import annotations

from pathlib import Path

from conftest import readme_block

from fedlib import readme

REPO = Path(__file__).resolve().parent.parent


def test_readme_tables_equal_the_tables_in_figures():
    framed = readme.blocks((REPO / "README.md").read_text())
    assert len(framed) >= 4  # Tables 2-4 and the gap at least
    for path, body in framed:
        assert body == readme.table_text(REPO / path), f"README table {path} differs: run python -m fedlib.readme"


def test_sync_rewrites_a_stale_table(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "t.md").write_text("Caption line.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    text = "intro\n<!-- table: figures/t.md -->\n| a | b |\n|---|---|\n| 9 | 9 |\n<!-- end table -->\nrest\n"
    (tmp_path / "README.md").write_text(text)
    assert readme.sync(tmp_path / "README.md", tmp_path) == 1
    assert (
        "| 1 | 2 |" in (tmp_path / "README.md").read_text() and "| 9 | 9 |" not in (tmp_path / "README.md").read_text()
    )
    assert readme.sync(tmp_path / "README.md", tmp_path) == 0


def test_the_several_hospitals_certificate_recipe_works_in_posix_sh(tmp_path):
    # The SuperLink's own SuperExec connects to 127.0.0.1: the certificate must name it.
    import ipaddress
    import shutil
    import subprocess

    import pytest
    from cryptography import x509

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    recipe = readme_block("openssl req -x509")
    assert "<(" not in recipe  # bash-only process substitution
    subprocess.run(["sh", "-e", "-c", recipe], cwd=tmp_path, check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "coordinator.example.org" in names.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()))


def test_the_readmes_flwr_run_config_example_is_a_valid_run():
    import shlex

    from flwr.common.config import parse_config_args

    from fedlib.flower import apps

    command = readme_block("flwr run fedlib/flower/app").replace("\\\n", " ")
    words = shlex.split(command)
    parsed = parse_config_args([words[words.index("--run-config") + 1]])
    cfg, out, _, _ = apps.run_config_train({"train-config": "{}", "resume": False, "overwrite": False, **parsed})
    assert (cfg.profile, cfg.rounds, cfg.strategy, cfg.proximal_mu, str(out)) == (
        "quick",
        5,
        "fedprox",
        0.01,
        "/srv/runs/r",
    )
