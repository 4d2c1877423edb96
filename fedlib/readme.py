"""Keep the result tables of README.md and docs/*.md equal to the tables the notebooks wrote.

A table in README.md or a page of docs/ is framed by ``<!-- table: figures/<name>.md -->`` and
``<!-- end table -->``; ``python -m fedlib.readme`` copies each named file in
between (run it after ``make reproduce``), and ``tests/test_readme.py`` fails
when a table in the README differs from its file, so no number is typed in.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .errors import UserError
from .run.io import atomic_write_text

BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    """(file path, the README's text between the markers) for every framed table."""
    return [(m["path"], m["body"]) for m in BLOCK.finditer(text)]


def table_text(path: Path) -> str:
    """The Markdown table of a figures/*.md file (its caption lines left out)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("|")]
    return "\n".join(lines) + "\n"


def sync(readme: Path, root: Path) -> int:
    """Rewrite every framed table from its file; returns how many changed."""
    text = readme.read_text()
    changed = 0

    missing = [path for path, _ in blocks(text) if not (root / path).is_file()]
    if missing:
        raise UserError(
            f"{readme.name} frames {', '.join(missing)}, which do(es) not exist; run the command the "
            "README names for each (make reproduce, ...) first."
        )

    def replace(m: re.Match) -> str:
        nonlocal changed
        body = table_text(root / m["path"])
        changed += body != m["body"]
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(replace, text)
    if new != text:
        atomic_write_text(readme, new)
    return changed


if __name__ == "__main__":
    repo = Path(__file__).resolve().parent.parent
    try:
        for page in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
            print(f"{sync(page, repo)} table(s) updated in {page.relative_to(repo)}")
    except UserError as exc:
        print(f"fedlib: error: {exc}", file=sys.stderr)
        sys.exit(2)
