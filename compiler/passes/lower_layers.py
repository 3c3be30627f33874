"""lower_layers: replace composite ops by primitive ones, keeping each node's layer scope.

Layer macros (dsl/layers/) already emit primitive ops, so most graphs arrive lowered. What
remains composite is listed in `DECOMPOSE` (op -> function emitting its primitive form);
ops without an entry are kept and run by their own kernels.

Status: DECOMPOSE is empty. `attention` is kept whole: it is already the fused form the
attention fusion targets, and its causal/window masks have no primitive op to lower to
(a `causal_mask`-style op would be needed). moe, longformer_attention and the other
family ops have no primitive decomposition either. The pass is in the pipeline so a
decomposition added here is verified (the verifier accepts ops listed in DECOMPOSE).

Requires: a verified graph. Ensures: the same outputs; no op in DECOMPOSE remains.
"""
from __future__ import annotations

from typing import Callable

from ...dsl.graph import Graph
from ..ir import PassResult

DECOMPOSE: dict[str, Callable] = {}


def lower_layers(g: Graph) -> PassResult:
    return PassResult(g.copy(), False)
