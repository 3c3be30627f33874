"""Many inputs through one model call: which items may share a batch, how their arrays are
joined, and how the outputs are cut back into one result per item.

An item is one run's worth of inputs (what `archc run --input` takes), with `rows` rows
along the batch axis. Items share a call when the model allows it:

    batch axis   the model's inputs and outputs all lead with one symbol (B), and no op
                 reaches across it (a reduction, softmax, slice or reshape over B): then
                 row b of every output depends on row b of the inputs alone
    padding      the model has a key mask input (B, S): items of different lengths S are
                 padded to the call's longest (0 in the mask, so the padding is never
                 attended to) and every output axis of size S is cut back to the item's S
    otherwise    items of exactly the same shapes share a call; and a model with no batch
                 axis runs each item alone

    items (rows, S)        sorted by shape, then length: [a a] [b] [c c c] ...
    pieces                 a call takes up to N rows; an item may span two calls
    call (N, S_max)  ───>  model  ───>  outputs (N, S_max, ...)  ───>  per piece, cut to S

Nothing here runs a model: `plan` makes the calls, `gather` their inputs, `scatter` their
outputs; the job (archc/batch.py) runs them. A batched row equals the same row run alone
up to float rounding (a longer sum or another kernel for more rows), not bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..dsl.dims import Dim
from ..dsl.graph import Graph
from ..dsl.ops import trait

Arrays = Mapping[str, np.ndarray]
AXIS_ATTRS = ("axis", "axes")     # an op's axes (a transpose's perm moves B: its shape says)


@dataclass(frozen=True)
class Layout:
    """How items of a model share a call."""
    batch: str | None = None                 # the batch symbol, None: one item per call
    pad: str | None = None                   # the padded symbol, None: same shapes only
    pad_axes: Mapping[str, tuple[int, ...]] = None       # input name -> its axes of `pad`
    out_pad_axes: Mapping[str, tuple[int, ...]] = None   # output name -> its axes of `pad`


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of item `item`."""
    item: int
    start: int
    stop: int


def _symbol(d) -> str | None:
    """The symbol a dimension is, when it is exactly one (`B`, not `2*B` or `B*T`)."""
    if isinstance(d, Dim) and len(d.terms) == 1 and d.terms[0][1] == 1 \
            and len(d.terms[0][0]) == 1:
        return d.terms[0][0][0]
    return None


def _shapes(node) -> list[tuple]:
    if node.dtype == "tuple":
        return [s for s, _ in node.parts]
    return [node.shape] if node.shape is not None else []


def _axes_of(shape, sym: str) -> tuple[int, ...] | None:
    """The axes that are `sym`; None when `sym` is part of a compound size (S + 1)."""
    axes = []
    for i, d in enumerate(shape):
        if isinstance(d, Dim) and sym in d.symbols():
            if _symbol(d) != sym:
                return None
            axes.append(i)
    return tuple(axes)


def _keeps_rows(g: Graph, nid: str, b: str) -> bool:
    """Does op `nid` keep batch rows apart: B stays one axis of its result wherever an
    argument has it, and no axis attribute names an argument's B axis (conservative:
    positions along B, as ones_like(ids) makes, count as reaching across)."""
    node = g.node(nid)
    arg_axes = []
    for a in g.args(nid):
        for shape in _shapes(g.node(a)):
            axes = _axes_of(shape, b)
            if axes is None or len(axes) > 1:
                return False
            arg_axes.append((len(shape), axes))
    if not any(axes for _, axes in arg_axes):
        return True
    # positions, masks and position biases are made per position: one without B is made
    # from the sizes (positions(ids) is (T,)); any other op losing B reduced over it
    made_per_position = trait(node.op, "position") or trait(node.op, "mask")
    for shape in _shapes(node):
        axes = _axes_of(shape, b)
        if axes is None or len(axes) > 1 or not axes and not made_per_position:
            return False
    if node.op == "reshape" and (any(axes not in ((), (0,)) for _, axes in arg_axes)
                                 or _axes_of(node.shape, b) != (0,)):
        return False        # rows stay rows through a reshape only as its leading axis
    for name in AXIS_ATTRS:
        value = node.attrs.get(name)
        if value is None:
            continue
        named = value if isinstance(value, (list, tuple)) else [value]
        for rank, axes in arg_axes:
            if axes and any(isinstance(v, int) and v % rank == axes[0] for v in named):
                return False
    return True


def layout_of(g: Graph, mask_names: Sequence[str] = ()) -> Layout:
    """How items of model `g` share a call; `mask_names` are the input names that hold a
    key mask (1: a real position), whose second axis is the one padded."""
    inputs = {g.node(n).attrs["name"]: g.node(n) for n in g.inputs}
    outputs = {name: g.node(nid) for name, nid in g.outputs.items()}
    if not inputs or not outputs:
        return Layout()
    first = {_symbol(n.shape[0]) if n.shape else None for n in inputs.values()}
    b = first.pop() if len(first) == 1 else None
    if b is None or any(_shapes(n) == [] or _axes_of(n.shape, b) != (0,)
                        for n in [*inputs.values(), *outputs.values()]):
        return Layout()
    if not all(_keeps_rows(g, nid, b) for nid in g.topo()):
        return Layout()
    mask = next((inputs[m] for m in mask_names if m in inputs), None)
    s = _symbol(mask.shape[1]) if mask is not None and len(mask.shape) == 2 else None
    if s is None or s == b:
        return Layout(batch=b)
    pad_axes = {name: _axes_of(n.shape, s) for name, n in inputs.items()}
    out_axes = {name: _axes_of(n.shape, s) for name, n in outputs.items()}
    if any(axes is None for axes in [*pad_axes.values(), *out_axes.values()]):
        return Layout(batch=b)
    return Layout(batch=b, pad=s, pad_axes=pad_axes, out_pad_axes=out_axes)


def shape_key(layout: Layout, arrays: Arrays) -> tuple:
    """What items must share to be joined in one call: every input's dtype and shape
    past the batch axis, less the padded axes."""
    key = []
    for name in sorted(arrays):
        arr = arrays[name]
        skip = set(layout.pad_axes.get(name, ())) if layout.pad else set()
        key.append((name, arr.dtype.str,
                    tuple(-1 if i in skip else n for i, n in enumerate(arr.shape) if i)))
    return tuple(key)


def length(layout: Layout, arrays: Arrays) -> int:
    """An item's size along the padded axis (0 with no padding)."""
    for name, axes in (layout.pad_axes or {}).items():
        if axes:
            return arrays[name].shape[axes[0]]
    return 0


def plan(layout: Layout, items: Sequence[Arrays], batch_size: int) -> list[list[Piece]]:
    """The calls that run `items`: each a list of pieces of at most `batch_size` rows in
    all, items sorted by shape and then length (so a call pads little), an item cut
    across calls where it has more rows than fit."""
    if layout.batch is None:
        return [[Piece(i, 0, 1)] for i in range(len(items))]
    order = sorted(range(len(items)),
                   key=lambda i: (shape_key(layout, items[i]), length(layout, items[i]), i))
    calls: list[list[Piece]] = []
    current: list[Piece] = []
    room, key = batch_size, None
    for i in order:
        k = shape_key(layout, items[i])
        if k != key and current:
            calls.append(current)
            current, room = [], batch_size
        key = k
        rows = rows_of(layout, items[i])
        start = 0
        while start < rows:
            take = min(room, rows - start)
            current.append(Piece(i, start, start + take))
            start += take
            room -= take
            if room == 0:
                calls.append(current)
                current, room = [], batch_size
    if current:
        calls.append(current)
    return calls


def rows_of(layout: Layout, arrays: Arrays) -> int:
    return next(iter(arrays.values())).shape[0] if layout.batch else 1


def gather(layout: Layout, items: Sequence[Arrays], call: Sequence[Piece],
           pad_values: Mapping[str, object] | None = None) -> dict[str, np.ndarray]:
    """The inputs of one call: the pieces' rows stacked, padded to the longest."""
    if layout.batch is None:
        (piece,) = call
        return dict(items[piece.item])
    longest = max(length(layout, items[p.item]) for p in call)
    out = {}
    for name in items[call[0].item]:
        parts = []
        for p in call:
            arr = items[p.item][name][p.start:p.stop]
            axes = (layout.pad_axes or {}).get(name, ())
            if axes and arr.shape[axes[0]] < longest:
                widths = [(0, longest - n if i in axes else 0) for i, n in enumerate(arr.shape)]
                arr = np.pad(arr, widths, constant_values=(pad_values or {}).get(name, 0))
            parts.append(arr)
        out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out


def scatter(layout: Layout, items: Sequence[Arrays], call: Sequence[Piece],
            outputs: Arrays) -> list[dict[str, np.ndarray]]:
    """The outputs of one call cut back into the pieces it ran: each piece's rows, and
    each padded axis cut to that item's length."""
    if layout.batch is None:
        return [dict(outputs)]
    out = []
    row = 0
    for p in call:
        n = length(layout, items[p.item])
        part = {}
        for name, arr in outputs.items():
            cut = arr[row:row + p.stop - p.start]
            for axis in (layout.out_pad_axes or {}).get(name, ()) if layout.pad else ():
                cut = cut[(slice(None),) * axis + (slice(0, n),)]
            part[name] = cut
        out.append(part)
        row += p.stop - p.start
    return out


def join(layout: Layout, parts: Sequence[Arrays]) -> dict[str, np.ndarray]:
    """An item's outputs from its pieces' (in row order)."""
    if len(parts) == 1:
        return {k: np.ascontiguousarray(v) for k, v in parts[0].items()}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


__all__ = ["Layout", "Piece", "layout_of", "plan", "gather", "scatter", "join", "rows_of",
           "length", "shape_key"]
