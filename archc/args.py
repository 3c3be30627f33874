"""The command line's small argument parsers, shared by the commands (cli.py,
run_cmds.py): NAME=FILE inputs, --dim and --set."""
from __future__ import annotations

from typing import Sequence

from .dsl.errors import ArchError


def parse_named_files(items: Sequence[str]) -> list[tuple[str | None, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name.isidentifier():
            out.append((name, path))
        else:
            out.append((None, item))
    return out


def input_files(items: Sequence[str]) -> list[tuple[str, str]]:
    """(what, path) of the --input files, for the output clobber check."""
    return [("input", path) for _, path in parse_named_files(items) if path != "-"]


def parse_dims(items: Sequence[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier() or not value.strip().isdigit():
            raise ArchError(f"--dim {item}: expected NAME=N with N a whole number, e.g. T=128")
        dims[name] = int(value)
    return dims


def parse_sets(items: Sequence[str]) -> dict:
    """--set NAME=VALUE: numbers, true/false and none as in .arch, anything else a string."""
    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ArchError(f"--set {item}: expected NAME=VALUE, e.g. n_layer=2")
        text = text.strip()
        value: object = {"true": True, "false": False, "none": None}.get(text, text)
        if value is text:
            for conv in (int, float):
                try:
                    value = conv(text)
                    break
                except ValueError:
                    pass
        out[name] = value
    return out
