"""The op registry: what each graph op takes, the shape/dtype it makes, and what it costs.

An op is declared once, in the file for its family:

    @op("relu", inputs=("x",))
    def relu(x: TT) -> TT:            # shape inference: input types in, output type out
        return x

    @op("layernorm", inputs=("x", "weight", "bias?"), attrs={"eps": 1e-5}, flops=...)

`inputs` names the tensor arguments (`name?` optional and trailing, `*name` variadic);
`attrs` maps each compile-time attribute to its default (`REQUIRED` for none). The
inference function raises `ShapeError` for bad operands; the lowering attaches the source
span. `fold` computes it on constants at compile time. `scratch` is the rule for the buffers its compiled kernel needs besides its output
(dsl/scratch.py): the memory plan places them and the kernel's step builder takes them.
The NumPy reference of op `name` is `ref_<name>` in `runtime/kernels/`, called as
`ref_<name>(*tensor_args, **attrs)`; its compiled steps are the builder for it in
`runtime/steps/` (the family's file). tests/dsl/test_ops_registry.py walks this registry
and fails on an op missing either.

`traits` are what the passes, the planner and the layers ask instead of keeping lists of
op names (TVM's op patterns); each is a flag or carries a value:

    elementwise      one output element from the same element of each input
    unary, binary    the operand count of an elementwise op
    activation       a float function usable as a fused epilogue (linear_act, ffn, moe,
                     FFN/GLU layers' `act=`); its compiled form is a branch of the
                     activation kernel (runtime/kernels/elementwise.py ACT)
    contiguous_rows  the compiled kernel reads argument 0 as contiguous (rows, C): a strided
                     argument is copied into scratch "c" first (its scratch rule, unless
                     the op declares its own: dsl/scratch.py contiguous_rows)
    per_position     (argument positions): acts on each position alone, reading positions
                     from those arguments only (passes/last_position.py); "dynamic": from
                     every argument that is not a weight (binary arithmetic)
    commutative      a binary op whose operands may swap (patterns match either order)
    view             the result is a view of argument 0 (no storage, no copy): True always,
                     "contiguous" when argument 0 is contiguous (reshape) (plan_memory)
    inplace_part     (part, arg): that part of the tuple result may be written over that
                     argument when the argument dies here (the fused residual's sum)
    weight_args      (argument positions): matrix-product weights, which the executor
                     stores output-major (transposed once, when the executor is made)
    composite        no decomposition into primitive ops: its kernel is the only
                     implementation (lower_layers keeps it whole)
    caches_kv        an attention whose `cache` attribute declares a KV cache to plan
    keeps_tokens     maps argument 0 token by token (a projection, a rotation, a split, a
                     reshape): plan_kv_cache walks back through it from an attention's k/v
    mixes_positions  its result at one position depends on other positions in ways a KV-
                     cached step cannot recompute (runtime/kv_cache.py refuses to cache)
    position_bias    a score bias made from positions alone, rebuilt per cached step
    keeps_mask       a single-argument op a padding mask may pass through on its way to an
                     attention and still be recognised as the mask input
    norm, attention, mask, position, matmul, fused, shape, gather, memory, moe: the op's
                     family, for dumps and passes

So a new activation declared with `traits=ACTIVATION` is fused, planned, sliced to the last
position and accepted by `FFN(act=...)` with no other table to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from ..dims import DimLike, dim_add, dim_mul, numel, shape_str
from ..scratch import Arg, Cache, Scratch, ScratchRule, contiguous_rows


class TT(NamedTuple):
    """A tensor type: shape (ints and symbolic Dims) and dtype."""
    shape: tuple[DimLike, ...]
    dtype: str

    def __str__(self) -> str:
        short = {"float32": "float", "int64": "int"}.get(self.dtype, self.dtype)
        return f"{short}{shape_str(self.shape)}"


class ShapeError(Exception):
    """Raised by shape inference; `arg` is the index of the operand to blame, if one is."""

    def __init__(self, message: str, arg: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message, self.arg, self.hint = message, arg, hint


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def no_flops(*_types, **_attrs) -> DimLike:
    return 0


@dataclass(frozen=True)
class OpSpec:
    name: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    infer: Callable[..., Any]          # (*TT, **attrs) -> TT | tuple[TT, ...]
    flops: Callable[..., DimLike]      # (out: TT, *TT, **attrs) -> DimLike
    doc: str = ""
    family: str = ""
    traits: Mapping[str, Any] = field(default_factory=dict)   # see the module docstring
    scratch_rule: ScratchRule | None = None                      # dsl/scratch.py
    fold: Callable[..., Any] | None = None     # its value on constants (simplify folds them)

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def scratch(self, node, args: list[Arg], cache: Cache | None = None) -> Scratch:
        """The scratch buffers this op's compiled kernel needs for `node` at these sizes:
        its own rule, else its trait's (contiguous_rows), else none."""
        rule = self.scratch_rule
        if rule is None and self.has("contiguous_rows"):
            rule = contiguous_rows
        return rule(node, args, cache) if rule is not None else []

    @property
    def variadic(self) -> bool:
        return any(i.startswith("*") for i in self.inputs)

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith("?") and not i.startswith("*"))


OPS: dict[str, OpSpec] = {}


TRAITS = ("elementwise", "unary", "binary", "activation", "contiguous_rows", "per_position",
          "commutative", "view", "inplace_part", "weight_args", "composite", "caches_kv",
          "keeps_tokens", "mixes_positions", "position_bias", "keeps_mask",
          "norm", "attention", "mask", "position", "matmul", "fused", "shape", "gather",
          "memory", "moe")
ACTIVATION = {"elementwise": True, "unary": True, "activation": True, "contiguous_rows": True,
              "per_position": (0,)}


def op(name: str, inputs: tuple[str, ...], attrs: Mapping[str, Any] | None = None,
       flops: Callable[..., DimLike] = no_flops,
       traits: Mapping[str, Any] | tuple[str, ...] = (),
       scratch: ScratchRule | None = None, fold: Callable[..., Any] | None = None):
    """Register op `name` with its shape rule (the decorated function); `traits` is a
    mapping, or a tuple of flag names; `scratch` the rule for its kernel's scratch; `fold`
    a NumPy function computing it on constant arguments (fold(*arrays, **attrs)), for the
    ops cheap and exact enough to fold at compile time."""
    table = dict(traits) if isinstance(traits, Mapping) else {t: True for t in traits}
    unknown = set(table) - set(TRAITS)
    if unknown:
        raise RuntimeError(f"op {name!r}: unknown trait(s) {sorted(unknown)}; known: {TRAITS}")

    def register(infer):
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = OpSpec(name, tuple(inputs), dict(attrs or {}), infer, flops,
                           (infer.__doc__ or "").strip(), infer.__module__.rsplit(".", 1)[-1],
                           table, scratch, fold)
        return infer
    return register


def ops_with(trait: str) -> tuple[str, ...]:
    """The ops that have `trait`, in registration order (stable for messages)."""
    return tuple(n for n, s in OPS.items() if trait in s.traits)


def trait(op_name: str, name: str, default: Any = None) -> Any:
    """Trait `name` of an op (its value, True for a flag), or `default` when the op lacks
    it; graph leaves (input, param, const) have none."""
    spec = OPS.get(op_name)
    return spec.traits.get(name, default) if spec is not None else default


def activations() -> tuple[str, ...]:
    """Every op usable as `act=` of a fused product, FFN, GLU or MoE."""
    return ops_with("activation")


def infer(name: str, types: list[TT], attrs: Mapping[str, Any]):
    spec = OPS[name]
    full = {**{k: v for k, v in spec.attrs.items() if v is not REQUIRED}, **attrs}
    return spec.infer(*types, **full)


def count_flops(name: str, out, types: list[TT], attrs: Mapping[str, Any]) -> DimLike:
    spec = OPS[name]
    full = {**{k: v for k, v in spec.attrs.items() if v is not REQUIRED}, **attrs}
    return spec.flops(out, *types, **full)


# ---- helpers shared by the op families ---------------------------------------------------

def elementwise_flops(out: TT, *_types, **_attrs) -> DimLike:
    return numel(out.shape)


def scaled_flops(k: int):
    """FLOPs = k per output element (norms, softmax, gelu: a handful of ops each)."""
    def flops(out: TT, *_types, **_attrs) -> DimLike:
        return dim_mul(k, numel(out.shape))
    return flops


def is_float(dtype: str) -> bool:
    return dtype in ("float32", "float64")


def promote(*dtypes: str) -> str:
    if "float64" in dtypes:
        return "float64"
    if "float32" in dtypes:
        return "float32"
    if "int64" in dtypes:
        return "int64"
    return dtypes[0]


def broadcast(*shapes: tuple[DimLike, ...]) -> tuple[DimLike, ...]:
    """NumPy broadcasting over symbolic dims; raises ShapeError naming the operand."""
    rank = max(len(s) for s in shapes)
    out: list[DimLike] = []
    for axis in range(rank):
        dim: DimLike = 1
        for i, s in enumerate(shapes):
            k = axis - (rank - len(s))
            if k < 0:
                continue
            d = s[k]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif d != dim:
                raise ShapeError(
                    f"shapes {' and '.join(shape_str(x) for x in shapes)} do not broadcast: "
                    f"dimension {axis - rank} is {dim} in one and {d} in the other", arg=i)
        out.append(dim)
    return tuple(out)


def norm_axis(axis: int, rank: int, arg: int = 0) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} is out of range for a rank-{rank} tensor", arg=arg)
    return axis % rank


def dim_sum(dims) -> DimLike:
    total: DimLike = 0
    for d in dims:
        total = dim_add(total, d)
    return total


def load_all() -> None:
    """Import every family file in this package: adding an op family is adding a file."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


load_all()
