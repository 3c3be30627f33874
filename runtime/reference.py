"""The reference executor: a plain NumPy interpreter of the graph, one op at a time.

It is the oracle every fast path is tested against, so it stays obviously correct: each
op calls its `ref_` kernel, every result is checked against the inferred shape, and a
value is freed after its last use. An element-wise op on a large tensor is called a block
at a time (the same values), so the kernels' float64 temporaries stay small and the run's
peak is the memory plan's (runtime/budget.py), not several times it.
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping

import numpy as np

from ..dsl.dims import Dim, evaluate, shape_str
from ..dsl.errors import ArchError
from ..dsl.graph import Graph
from ..dsl.ops import OPS
from .inputs import bind_inputs
from .kernels import REFERENCE


# elements an element-wise op computes at a time (1 MiB of float64)
BLOCK = 1 << 17


class ExecutionError(RuntimeError):
    """The executor disagrees with the compiler (a bug in archc, not in the user's model)."""


def resolve(value: Any, bindings: Mapping[str, int]) -> Any:
    """Replace symbolic sizes in attributes by their values for this run."""
    if isinstance(value, Dim):
        return evaluate(value, bindings)
    if isinstance(value, (list, tuple)):
        return type(value)(resolve(v, bindings) for v in value)
    return value


def vocabulary_error(ids: np.ndarray, vocab: int, span) -> ArchError:
    """The error for token ids outside 0..vocab-1: one wording for every executor."""
    bad = ids[(ids < 0) | (ids >= vocab)]
    return ArchError(f"token id {int(bad.flat[0])} is outside the vocabulary (0..{vocab - 1}); "
                     f"{bad.size} id{'s' if bad.size > 1 else ''} out of range", span)


def check_ids(g: Graph, nid: str, ids: np.ndarray, vocab: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise vocabulary_error(ids, vocab, g.node(nid).span)


def run_reference(g: Graph, inputs: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                  *, bindings: Mapping[str, int] | None = None, train: bool = False,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Run the graph; `train` makes dropout drop, with a stream per node from (seed, id)."""
    arrays, found, _ = bind_inputs(g, dict(inputs))
    bindings = {**found, **(bindings or {})}
    order = g.topo()
    uses = {n: g.nx.out_degree(n) for n in order}
    keep = set(g.outputs.values())
    values: dict[str, Any] = {}
    for nid in order:
        node = g.node(nid)
        if node.op == "input":
            out = arrays[node.attrs["name"]]
        elif node.op == "param":
            out = params[node.attrs["name"]]
        elif node.op == "const":
            out = node.attrs["value"]
        else:
            fn = REFERENCE.get(node.op)
            if fn is None:
                raise ExecutionError(f"no reference kernel for op {node.op!r} ({nid})")
            args = [values[a] for a in g.args(nid)]
            attrs = {k: resolve(v, bindings) for k, v in node.attrs.items()}
            if node.op == "embedding":
                check_ids(g, nid, args[0], args[1].shape[0])
            if node.op == "dropout" and train:
                attrs["rng"] = np.random.default_rng([seed, zlib.crc32(nid.encode())])
            if OPS[node.op].has("unary") and np.size(args[0]) > BLOCK:
                out = _in_blocks(fn, args[0], attrs)
            else:
                out = fn(*args, **attrs)
            _check(node, out, bindings)
        values[nid] = out
        for a in set(g.args(nid)):
            uses[a] -= g.nx.number_of_edges(a, nid)
            if uses[a] == 0 and a not in keep:
                del values[a]
    return {name: np.asarray(values[nid]) for name, nid in g.outputs.items()}


def _in_blocks(fn, x: np.ndarray, attrs) -> np.ndarray:
    """An element-wise op a block of elements at a time: the same values, and the kernel's
    float64 temporaries (gelu's erf makes 14x its input) for one block, not the tensor."""
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1)
    first = fn(flat[:BLOCK], **attrs)
    out = np.empty(flat.shape, dtype=first.dtype)
    out[:BLOCK] = first
    for start in range(BLOCK, flat.size, BLOCK):
        out[start:start + BLOCK] = fn(flat[start:start + BLOCK], **attrs)
    return out.reshape(x.shape)


def _check(node, out, bindings) -> None:
    if node.dtype == "tuple":
        return
    try:
        want = tuple(evaluate(d, bindings) for d in node.shape)
    except KeyError:
        return
    got = np.shape(out)
    if got != want:
        raise ExecutionError(f"{node.id} ({node.op}): computed shape {shape_str(got)}, "
                             f"inferred {shape_str(want)}")
