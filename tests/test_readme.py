"""The README's and docs/' result tables are the files the notebooks wrote, not typed-in numbers;
the README fits a screen or two and every relative link of the documentation leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import doc_pages, readme_block

from fedlib import readme

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_tables_equal_the_tables_in_figures():
    assert len(readme.blocks((REPO / "README.md").read_text())) >= 4  # Tables 2-4 and the gap at least
    for page in doc_pages():
        for path, body in readme.blocks(page.read_text()):
            assert body == readme.table_text(REPO / path), (
                f"{page.name}: table {path} differs: run python -m fedlib.readme"
            )


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


def test_the_readme_is_at_most_250_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to a page of docs/"


def without_code(text: str) -> str:
    """Markdown prose: fenced code blocks and HTML comments removed (inline code kept)."""
    return re.sub(r"<!--.*?-->", "", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.S)


def anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives the headings of ``page``."""
    found: set[str] = set()
    for line in without_code(page.read_text()).splitlines():
        if line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            n = sum(a == slug or re.fullmatch(re.escape(slug) + r"-\d+", a) is not None for a in found)
            found.add(f"{slug}-{n}" if n else slug)
    return found


def links(page: Path) -> list[str]:
    """The targets of the links and images of ``page`` outside code."""
    prose = re.sub(r"`[^`\n]*`", "", without_code(page.read_text()))
    return LINK.findall(prose)


def test_every_relative_link_of_the_documentation_leads_to_a_file_and_heading():
    broken = []
    for page in doc_pages():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert len(links(REPO / "README.md")) >= 8  # the checker reads the README's links at all


def test_the_link_checker_finds_links_anchors_and_skips_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# A title: `code` here\n\n## Two\n## Two\n[a\nb](x.md#y) ![i](f.png) `[c](no.md)`\n"
        "```\n# not a heading\n[d](no.md)\n```\n<!-- [e](no.md) -->\n"
    )
    assert links(page) == ["x.md#y", "f.png"]
    assert anchors(page) == {"a-title-code-here", "two", "two-1"}
