"""Scratch: what an op's compiled kernel needs besides its output, declared with the op.

An op's declaration (dsl/ops/<family>.py) may say `scratch=rule`, a function of the node
at concrete sizes:

    rule(node, args, cache) -> [(tag, shape, dtype), ...]

A size may be `LANES`: the plan gives that buffer once per lane a program may cut its
steps into (runtime/lanes.py), so each lane has its own (a kernel's per-lane panels); the
planner binds it, and the step builder asks for the bound shape (`Program.plan_lanes`).
`args` are `Arg(shape, dtype, layout)` with sizes bound; layout is "C" (C-contiguous),
"R" (rows: a last-axis slice of a contiguous value, so (B, T, H*D) still views as
(B, T, H, D)) or "S" (other strided views). `cache` is a `Cache` when a decoding session
caches this attention, else None.

The memory planner (compiler/passes/plan_memory.py) places every buffer a rule names in
the activation arena; the op's step builder (runtime/steps/) takes the same tags with
`P.temp(tag, shape, dtype)`. A tag the builder asks for that the plan lacks, or asks for
bigger than planned, is an error, so a rule and its kernel cannot drift apart unnoticed.
Where the choice of kernel decides the scratch (attention: BLAS products for a prompt,
the per-row kernel for a few rows), the choice is one function beside the op that both
the rule and the builder call (`dsl/ops/attention.py: attention_path`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np


@dataclass(frozen=True)
class Arg:
    shape: tuple[int, ...]
    dtype: str
    layout: str = "C"

    @property
    def contiguous(self) -> bool:
        return self.layout == "C"

    @property
    def viewable(self) -> bool:
        """Can the last axis be split into (heads, D) without a copy?"""
        return self.layout in ("C", "R")


class Cache(NamedTuple):
    """How a decoding session caches one attention (compiler/passes/plan_kv_cache.py)."""
    slots: int           # key positions held
    ring: bool = False   # a sliding window's ring buffer
    cross: bool = False  # keys from outside the decoded tokens (an encoder), laid out once


# a scratch size: one of each per lane (see above)
LANES = "lanes"

Scratch = list[tuple[str, tuple, str]]
ScratchRule = Callable[[object, list[Arg], "Cache | None"], Scratch]


def bind_lanes(shape: tuple, lanes: int) -> tuple[int, ...]:
    """A declared scratch shape with its LANES sizes bound to `lanes`."""
    return tuple(lanes if d == LANES else d for d in shape)


def copy_unless_contiguous(tag: str, a: Arg) -> Scratch:
    """A contiguous copy of `a` for a kernel that reads it flat, when it is not already."""
    return [] if a.contiguous else [(tag, a.shape, a.dtype)]


def copy_unless_viewable(tag: str, a: Arg) -> Scratch:
    """A contiguous copy of `a` for a kernel that splits its last axis into heads."""
    return [] if a.viewable else [(tag, a.shape, a.dtype)]


def rows(a: Arg) -> int:
    """The row count of `a` seen as (rows, last axis)."""
    return int(np.prod(a.shape[:-1], dtype=np.int64))


def contiguous_rows(node, args: list[Arg], cache) -> Scratch:
    """The rule of every op with the `contiguous_rows` trait: its kernel reads argument 0
    as contiguous (rows, C), so a strided argument is copied into scratch "c" first."""
    return copy_unless_contiguous("c", args[0])
