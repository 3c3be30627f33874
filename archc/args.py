"""The command line's small argument parsers, shared by the commands (cli.py,
run_cmds.py, compile_cmds.py): NAME=FILE inputs, --dim and --set, --weights-dtype, and the
number types.

Every number on the command line goes through a type here, so a seed of -1, a token id
of 10**30 or a NaN temperature is argparse's one-line usage error (exit 2) naming the
option, never a crash deep in NumPy:

    --seed -1          argument --seed: expected a whole number from 0 to 2**63-1, got -1
    --temperature nan  argument --temperature: expected a finite number >= 0, got nan
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence

from .dsl.errors import ArchError
from .dsl.literals import MAX_INT


def whole(low: int = 0, high: int = MAX_INT) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""
    top = "2**63-1" if high == MAX_INT else f"{high:,}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {top}, got {_shown(text)}")
        return value
    return parse


def real(low: float = 0.0, high: float = math.inf,
         low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] when `low_open`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            want = f"{'>' if low_open else '>='} {low:g}" + ("" if math.isinf(high)
                                                             else f" and <= {high:g}")
            raise argparse.ArgumentTypeError(f"expected a finite number {want}, got "
                                             f"{_shown(text)}")
        return value
    return parse


def _shown(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."


SEED = whole()
COUNT = whole(1)                 # a size, a batch, a length: at least one
THREADS = whole(1, 4096)
TOKEN = whole()                  # a token id (checked against the vocabulary later)


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
        try:
            if not sep or not name.isidentifier():
                raise argparse.ArgumentTypeError("")
            dims[name] = COUNT(value)
        except argparse.ArgumentTypeError:
            raise ArchError(f"--dim {_shown(item)}: expected NAME=N with N a whole number "
                            f"from 1 to 2**63-1, e.g. T=128") from None
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


def add_checkpoint_args(p: argparse.ArgumentParser, what: str = "") -> None:
    """--weights and --weights-map: the checkpoint a command reads (`what` says what for,
    beyond the names)."""
    p.add_argument("--weights", "-w", metavar="FILE",
                   help="a .safetensors checkpoint, or a Hugging Face folder (config.json + "
                        "model.safetensors); names go through the model's `weights` section"
                        + what)
    p.add_argument("--weights-map", metavar="NAME",
                   help="which `weights NAME { }` section maps the checkpoint's names")


def add_weights_args(p: argparse.ArgumentParser,
                     seed_help: str = "seed for random initialisation of parameters without "
                                      "weights") -> None:
    """Where a command's parameters come from: --weights, --weights-map, --allow-missing,
    --seed (run, generate, export)."""
    add_checkpoint_args(p)
    p.add_argument("--allow-missing", action="store_true",
                   help="initialise parameters missing from --weights randomly")
    p.add_argument("--seed", type=SEED, default=0, help=seed_help)


def add_weights_dtype(p) -> None:
    """--weights-dtype: how matrix-product weights are stored (checked by archc.load, so
    building the parser imports nothing)."""
    p.add_argument("--weights-dtype", metavar="DTYPE",
                   help="int8 (per-block scales) or bf16: store the matrix-product weights "
                        "packed, weight-only (default: float32, or the model's config "
                        "constant weights_dtype)")
