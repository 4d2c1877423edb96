"""TrainConfig's command-line options, made from its fields' metadata (``fedlib.cli`` uses them).

A field with a ``flag`` gets that option, its help text and the type of its annotation; a
true/false field gets ``--x/--no-x`` (or only ``--x`` when not ``negatable``). Every default
is None, "not given": the profile, the config file or the saved run decides.
"""

from __future__ import annotations

import argparse

from .fields import FIELDS, LAYOUT, SECTIONS, section_fields

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

# Every field with a flag, in the dataclass's order: the options of ``fedlib train``.
FLAGGED: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.metadata["flag"])


def field_type(name: str) -> type:
    """The value type of a field (``int | None`` -> int)."""
    kinds = [k.strip() for k in str(FIELDS[name].type).split("|")]
    return _TYPES[next(k for k in kinds if k != "None")]


def add_flag(target, name: str, default=None) -> argparse.Action:
    """The option of field ``name`` on a parser or argument group, stored under the field's name."""
    meta = FIELDS[name].metadata
    if meta["flag"] is None:
        raise ValueError(f"TrainConfig.{name} has no command-line flag")
    kind = field_type(name)
    if kind is bool:
        action = argparse.BooleanOptionalAction if meta["negatable"] else "store_true"
        return target.add_argument(meta["flag"], dest=name, action=action, default=default, help=meta["help"])
    return target.add_argument(meta["flag"], dest=name, type=kind, default=default, help=meta["help"])


def add_flags(target, names) -> None:
    for name in names:
        add_flag(target, name)


def add_section(parser: argparse.ArgumentParser, section: str) -> None:
    """One section's flags as a group of their own (none if the section has no flag)."""
    names = [n for n in section_fields(section) if n in FLAGGED]
    if names:
        add_flags(parser.add_argument_group(*SECTIONS[section]), names)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Every flagged field, grouped by section: the options of one training run."""
    for section in SECTIONS:
        add_section(parser, section)


def add_layout_flags(parser: argparse.ArgumentParser) -> None:
    """--train-split --test-split --train-dir --test-dir: the one definition every command uses."""
    add_section(parser, "layout")


def given(args: argparse.Namespace, names=FLAGGED) -> dict:
    """The fields among ``names`` that the command line set (None: not given)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


__all__ = [
    "FLAGGED",
    "LAYOUT",
    "add_flag",
    "add_flags",
    "add_layout_flags",
    "add_section",
    "add_train_flags",
    "field_type",
    "given",
]
