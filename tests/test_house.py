"""The shape a newcomer can carry on (issue 21), checked on the code itself with ``ast``.

- no module of ``fedlib/`` over ``MAX_LINES`` lines;
- no function over ``MAX_PARAMETERS`` parameters (``self``/``cls`` not counted; a config or
  spec object is one parameter, so settings travel as one object);
- nothing outside ``fedlib/strategy/`` compares a strategy's name: a strategy says what it
  does through its own attributes and hooks;
- no run of ``MIN_REPEAT`` significant lines stands twice in ``fedlib/`` (blank lines, comments,
  lone punctuation and imports are passed over, white space folded).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fedlib"
MAX_LINES = 450
MAX_PARAMETERS = 6
MIN_REPEAT = 6


def sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def long_modules(texts: dict[str, str], limit: int = MAX_LINES) -> list[str]:
    return [f"{name}: {len(text.splitlines())} lines" for name, text in texts.items() if len(text.splitlines()) > limit]


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def long_signatures(texts: dict[str, str], limit: int = MAX_PARAMETERS) -> list[str]:
    found = []
    for name, text in texts.items():
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and parameter_count(node) > limit:
                found.append(f"{name}:{node.lineno} {node.name} takes {parameter_count(node)}")
    return found


def _constants(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_constants(e) for e in node.elts)) if node.elts else set()
    return set()


def strategy_name_comparisons(texts: dict[str, str], names: set[str]) -> list[str]:
    """Comparisons with a strategy's name outside fedlib/strategy/. "fedavg" is also a mode's
    name (``--mode fedavg``), so it counts only where the other side says "strategy"."""
    found = []
    for name, text in texts.items():
        if name.startswith("fedlib/strategy/"):
            continue
        for node in ast.walk(ast.parse(text, name)):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            said = set().union(*(_constants(o) for o in operands)) & names
            mentions = any("strategy" in ast.unparse(o) for o in operands if not _constants(o))
            if said - {"fedavg"} or (said and mentions):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    return found


_TRIVIAL = re.compile(r"^[\s\)\]\}\(\[\{,:;]*$")


def significant_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        folded = " ".join(line.split())
        if not folded or folded.startswith("#") or _TRIVIAL.match(folded):
            continue
        if folded.startswith(("import ", "from ")) and " import " in f" {folded} ":
            continue
        out.append((number, folded))
    return out


def repeated_blocks(texts: dict[str, str], size: int = MIN_REPEAT) -> list[str]:
    """Each run of ``size`` significant lines that stood before, with where it first stood
    (a run overlapping its own first place, as in six equal lines in a row, is not a repeat)."""
    seen: dict[tuple[str, ...], str] = {}
    found = []
    for name, text in texts.items():
        lines = significant_lines(text)
        for i in range(len(lines) - size + 1):
            window = tuple(line for _, line in lines[i : i + size])
            where = f"{name}:{lines[i][0]}-{lines[i + size - 1][0]}"
            first = seen.setdefault(window, where)
            if first != where and not (first.split(":")[0] == name and _overlaps(first, where)):
                found.append(f"{where} repeats {first}")
    return found


def _overlaps(a: str, b: str) -> bool:
    (a0, a1), (b0, b1) = (map(int, x.split(":")[1].split("-")) for x in (a, b))
    return a0 <= b1 and b0 <= a1


# The checks themselves, on made-up code: each one can fail.


def test_the_checks_find_what_they_look_for():
    code = "def f(a, b, c, d, e, f, g):\n    return cfg.strategy == 'fedprox'\n"
    block = "".join(f"x{i} = compute({i})\n" for i in range(6))
    texts = {"fedlib/m.py": code + block + "\n" + block, "fedlib/strategy/s.py": "ok = s == 'fedprox'\n"}
    assert long_signatures(texts) == ["fedlib/m.py:1 f takes 7"]
    assert strategy_name_comparisons(texts, {"fedavg", "fedprox"}) == ["fedlib/m.py:2 cfg.strategy == 'fedprox'"]
    assert len(repeated_blocks(texts)) == 1
    assert long_modules({"fedlib/big.py": "x = 1\n" * 451}) == ["fedlib/big.py: 451 lines"]
    mode = {"fedlib/m.py": "if cfg.mode == 'fedavg':\n    pass\n"}
    assert strategy_name_comparisons(mode, {"fedavg", "fedprox"}) == []


# The package.


def test_no_module_over_450_lines():
    assert not long_modules(sources())


def test_no_function_takes_more_than_6_parameters():
    assert not long_signatures(sources())


def test_nothing_outside_the_strategies_asks_which_strategy_runs():
    from fedlib.strategy import NAMES

    assert not strategy_name_comparisons(sources(), set(NAMES))


def test_no_block_of_six_lines_stands_twice():
    assert not repeated_blocks(sources())
