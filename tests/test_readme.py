"""The README's result tables are the files the notebooks wrote, not typed-in numbers."""

from __future__ import annotations

from pathlib import Path

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
