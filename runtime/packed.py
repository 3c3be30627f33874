"""Weights stored packed: int8 with per-block scales, or bf16 (--weights-dtype, the
`weights_dtype=` of archc.load and of the executor, or a model's config constant
`weights_dtype`). Weight-only: activations and sums stay float32.

What is packed: every float32 matrix the optimised graph reads only as a matrix-product
weight (the `linear` family's weight arguments, directly or concatenated along their
output axis into one, as QKV and gate/up are), and a tied LM head: the token embedding
read transposed as a product weight, and also looked up by rows. Everything else (norms,
biases, an untied embedding, MoE experts) stays float32. `packing_plan` decides on the
optimised graph; loading packs each parameter as it is made (runtime/weights.py), so the
float32 matrices never all exist at once, and nothing keeps one: the kernels
(kernels/_quant.py) read the packed form. This module imports no Numba (`archc stats`
reads the plan and the sizes).

    w = pack_weight(array, "int8", transposed=True)  # kernels/_quant.py: W (K, N), rows W^T
    w.shape == (K, N); w.dtype == float32       # what it stands for
    np.asarray(w)                               # its float32 values (the reference executor)
    w.T                                         # the other orientation, sharing the data
"""
from __future__ import annotations


import numpy as np

from ..dsl.graph import Graph
from ..dsl.lowering.model import WEIGHTS_DTYPES
from ..dsl.ops import trait

PACKED_DTYPES = tuple(d for d in WEIGHTS_DTYPES if d != "float32")
BLOCK = 32            # int8 weights per scale, along the packed axis (GGUF's Q8_0 block)
QMAX = 127            # int8 range used: -127..127, symmetric (-128 never occurs)
PACK_ROWS = 64        # rows packed per call: a transposed source is copied this much at once


class PackedWeight:
    """A float32 matrix stored as packed rows: `data` (R, C) int8 or uint16 (bf16 bits) and
    `scales` (R, ceil(C/32)) float32 ((R, 0) for bf16), each row packed along C. The matrix
    it stands for is the rows (`transposed` False: a table read by rows) or their
    transpose (True: a product weight W (K, N) whose rows are W's output columns)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, kind: str, data: np.ndarray, scales: np.ndarray, transposed: bool):
        self.kind, self.data, self.scales, self.transposed = kind, data, scales, transposed

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[::-1] if self.transposed else self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.scales.nbytes

    @property
    def T(self) -> "PackedWeight":
        return PackedWeight(self.kind, self.data, self.scales, not self.transposed)

    def rows(self, start: int, stop: int) -> "PackedWeight":
        """Rows start:stop as a view (a product weight's output columns start:stop)."""
        return PackedWeight(self.kind, self.data[start:stop], self.scales[start:stop],
                            self.transposed)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a packed weight's float32 values are a new array")
        rows = dequantize(self.data, self.scales)
        out = rows.T if self.transposed else rows
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return (f"PackedWeight({self.kind}, shape={self.shape}, "
                f"{'transposed rows' if self.transposed else 'rows'})")


def is_packed(value) -> bool:
    return isinstance(value, PackedWeight)


def kind_of(data: np.ndarray) -> str:
    """The kind of packed rows, by how they are stored: bf16 bits as uint16, else int8."""
    return "bf16" if data.dtype == np.uint16 else "int8"


def dequantize(data: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 values (R, C) packed rows stand for (int8 times its block's scale; bf16
    bits as the top half of a float32): the NumPy twin of every kernel's widening."""
    if kind_of(data) == "bf16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float32) * np.repeat(scales, BLOCK, axis=1)[:, :data.shape[1]]


def concat_outputs(parts: list[PackedWeight]) -> PackedWeight:
    """Product weights (K, N_i) side by side along their output axis: their rows stacked."""
    first = parts[0]
    return PackedWeight(first.kind, np.concatenate([p.data for p in parts]),
                        np.concatenate([p.scales for p in parts]), True)


# ---- which parameters -----------------------------------------------------------------------

def packing_plan(g: Graph) -> dict[str, bool]:
    """Parameter name -> `transposed` for each float32 matrix of the optimised graph `g`
    read only as a matrix-product weight: directly, concatenated along the output axis into
    one, or transposed into one (a tied LM head, which may also be looked up by rows)."""
    def product_weight(nid: str) -> bool:
        uses = g.users(nid)
        return bool(uses) and all(pos in trait(g.node(u).op, "weight_args", ())
                                  for u, pos in uses)

    def last_axis(node) -> bool:
        axis = node.attrs.get("axis", -1)
        return axis in (-1, len(node.shape) - 1)

    found: dict[str, set] = {}
    bad: set[str] = set()
    lookups: set[str] = set()
    for p in g.params():
        name = p.attrs["name"]
        if p.dtype != "float32" or len(p.shape) != 2:
            bad.add(name)
            continue
        for u, pos in g.users(p.id):
            use = g.node(u)
            if pos in trait(use.op, "weight_args", ()):
                found.setdefault(name, set()).add(True)
            elif use.op == "concat" and last_axis(use) and product_weight(u) and all(
                    g.node(a).op == "param" for a in g.args(u)):
                found.setdefault(name, set()).add(True)
            elif use.op == "transpose" and use.attrs.get("perm") in (None, [1, 0], (1, 0)) \
                    and product_weight(u):
                found.setdefault(name, set()).add(False)
            elif use.op == "embedding" and pos == 1:
                lookups.add(name)
            else:
                bad.add(name)
    plan = {}
    for name, ways in found.items():
        if name in bad or len(ways) != 1:
            continue
        transposed = next(iter(ways))
        if name in lookups and transposed:
            continue            # looked up by rows but stored by columns: not a tied head
        plan[name] = transposed
    return plan


def weights_dtype_of(g: Graph, explicit: str | None = None) -> str:
    """The weights dtype a run uses: `explicit` (--weights-dtype), else the model's config
    constant `weights_dtype`, else float32."""
    return explicit or g.meta.get("config", {}).get("weights_dtype") or "float32"


def weight_bytes(g: Graph, kind: str) -> dict[str, tuple[int, int]]:
    """dtype -> (values, bytes) of the parameters, were they loaded with `kind` weights
    (g: the optimised graph): what `archc stats` shows."""
    plan = packing_plan(g) if kind in PACKED_DTYPES else {}
    out: dict[str, list[int]] = {}
    seen = set()
    for p in g.params():
        name = p.attrs["name"]
        if name in seen:
            continue
        seen.add(name)
        n = int(np.prod([int(d) for d in p.shape], dtype=np.int64))
        if name in plan:
            R, C = (p.shape[1], p.shape[0]) if plan[name] else tuple(p.shape)
            scales = int(R) * -(-int(C) // BLOCK) * 4 if kind == "int8" else 0
            entry = out.setdefault(kind, [0, 0])
            entry[0] += n
            entry[1] += n * (1 if kind == "int8" else 2) + scales
        else:
            entry = out.setdefault(p.dtype, [0, 0])
            entry[0] += n
            entry[1] += n * np.dtype(p.dtype).itemsize
    return {k: (v[0], v[1]) for k, v in out.items()}
