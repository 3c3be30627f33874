"""Parameters: deterministic random initialisation, and checkpoint tensors matched to them
(read by runtime/safetensors.py, named through runtime/checkpoint.py).

Every parameter's random values depend only on (seed, its name), so adding a layer does
not change the values of the others.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..dsl.dims import shape_str
from ..dsl.errors import ArchError
from ..dsl.graph import Graph


INIT_BLOCK = 1 << 16     # values drawn at a time by random initialisation (512 KiB)


def init_param(node, seed: int) -> np.ndarray:
    attrs = node.attrs
    shape = tuple(node.shape)
    if "value" in attrs:
        return np.asarray(attrs["value"], dtype=node.dtype)
    if attrs.get("init") == "ones":
        return np.ones(shape, dtype=node.dtype)
    if attrs.get("init") == "zeros":
        return np.zeros(shape, dtype=node.dtype)
    rng = np.random.default_rng([seed, zlib.crc32(attrs["name"].encode())])
    # drawn in float64 a block at a time, straight into the parameter: the same values as
    # one draw of the whole shape (the generator's stream is sequential), without a float64
    # copy (and a scaled one) of the largest matrix beside it: 5x its bytes at the peak
    out = np.empty(shape, dtype=node.dtype)
    flat = out.reshape(-1)
    std = attrs.get("std", 0.02)
    for start in range(0, flat.size, INIT_BLOCK):
        block = rng.standard_normal(min(INIT_BLOCK, flat.size - start))
        block *= std
        flat[start:start + block.size] = block
    return out


def packing_keeper(plan, kind: str):
    """`keep(name, array)` for the loaders: the parameter as the executor holds it, packed
    (int8 / bf16, runtime/packed.py) when `plan` (packing_plan) names it."""
    from .kernels._quant import pack_weight
    from .packed import is_packed

    def keep(name: str, arr):
        if name in plan and not is_packed(arr):
            return pack_weight(np.asarray(arr, np.float32), kind, plan[name])
        return arr
    return keep


def init_params(g: Graph, seed: int = 0, keep=None) -> dict[str, np.ndarray]:
    """Every parameter's initial value; `keep(name, array)` (runtime/packed.py) is the form
    it is stored in, applied to each as it is made."""
    keep = keep or (lambda name, arr: arr)
    return {n.attrs["name"]: keep(n.attrs["name"], init_param(n, seed)) for n in g.params()}


def apply_weights(g: Graph, tensors: dict[str, np.ndarray], seed: int = 0,
                  allow_missing: bool = False, source: str = "weights", mapping=None,
                  keep=None):
    """Match checkpoint tensors to parameters by name, through `mapping` (a resolved
    `weights` section, see runtime/checkpoint.py) when given. Every missing, unexpected or
    mis-shaped tensor is listed in one error. `keep(name, array)` is the form a parameter
    is stored in (packed weights: runtime/packed.py), applied as each is made, so the
    float32 matrices never all exist at once. Returns (params, warnings)."""
    params: dict[str, np.ndarray] = {}
    problems: list[str] = []
    warnings: list[str] = []
    expected = {n.attrs["name"]: n for n in g.params()}
    store = keep or (lambda name, arr: arr)

    def made(name: str, arr):
        # a parameter as it arrives: converted to its dtype, then stored as `keep` says;
        # a mis-shaped one is left as it is for the problem list
        node = expected.get(name)
        if node is None or tuple(arr.shape) != tuple(node.shape):
            return arr
        return store(name, _convert(name, arr, node.dtype, warnings))
    if mapping is not None:
        from .checkpoint import map_checkpoint
        tensors, _, problems = map_checkpoint(
            mapping, tensors, {k: tuple(n.shape) for k, n in expected.items()}, made)
    shapes = {k: _shape(tensors, k) for k in tensors}
    more, trained_missing = _coverage(expected, shapes, mapping, allow_missing)
    _raise(problems + more, source, trained_missing, any(n in shapes for n in expected))
    for name, node in expected.items():
        if name not in tensors:
            params[name] = store(name, init_param(node, seed))
            continue
        arr = None          # drop the previous raw tensor before reading the next
        arr = tensors[name]
        params[name] = made(name, arr)
    return params, warnings


def check_weights(g: Graph, ckpt, source: str = "weights", mapping=None) -> int:
    """What `apply_weights` would report, from the checkpoint's headers alone (no tensor
    is read): raises the same error, else returns how many parameters it fills."""
    expected = {n.attrs["name"]: n for n in g.params()}
    shapes = {k: _shape(ckpt.tensors, k) for k in ckpt.tensors}
    problems: list[str] = []
    if mapping is not None:
        from .checkpoint import map_shapes
        origin, problems = map_shapes(mapping, shapes,
                                      {k: tuple(n.shape) for k, n in expected.items()})
        # a parameter a rule fills has the shape the rule checked
        shapes = {k: tuple(expected[k].shape) for k in origin if k in expected}
    more, trained_missing = _coverage(expected, shapes, mapping, False)
    _raise(problems + more, source, trained_missing, any(n in shapes for n in expected))
    return len(shapes)


def _shape(tensors, name: str) -> tuple:
    """A tensor's shape, from a checkpoint's header when it has one (nothing read)."""
    entries = getattr(tensors, "entries", None)
    return tuple(entries[name].shape if entries is not None else tensors[name].shape)


def _coverage(expected: dict, shapes: dict[str, tuple], mapping,
              allow_missing: bool) -> tuple[list[str], bool]:
    """Missing, mis-shaped and unexpected parameters, given the shapes of those filled;
    and whether a missing one is mapped from a checkpoint tensor (a trained part)."""
    problems = []
    trained_missing = False
    for name, node in expected.items():
        if name not in shapes:
            if "value" not in node.attrs and not allow_missing:
                src = mapping.source_of(name) if mapping is not None else None
                trained_missing |= src is not None
                problems.append(f"missing: {name} {node.type_str}"
                                + (f" (checkpoint tensor {src})" if src else ""))
        elif shapes[name] != tuple(node.shape):
            problems.append(f"mis-shaped: {name} is {shape_str(shapes[name])} in the file, "
                            f"the model expects {shape_str(node.shape)}")
    problems += [f"unexpected: {name} {shape_str(shape)}" for name, shape in shapes.items()
                 if name not in expected]
    return problems, trained_missing


def _raise(problems: list[str], source: str, trained_missing: bool = False,
           found: bool = True) -> None:
    if problems:
        raise ArchError(f"{source} do not match the model ({len(problems)} problem"
                        f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems),
                        hint=_missing_hint(problems, trained_missing, found))


def _missing_hint(problems: list[str], trained_missing: bool, found: bool) -> str | None:
    """What to do about missing parameters. --allow-missing makes them random, so it is
    offered only for parameters no checkpoint tensor is mapped to, in a checkpoint that
    fills others: never for a trained part (a tied or absent head, a base model's missing
    task head) and never for a checkpoint of another model."""
    if not any(p.startswith("missing") for p in problems):
        return None
    if trained_missing:
        return ("the weights section maps these from tensors the checkpoint lacks: a base "
                "model without its task head, or a head tied to the embedding by a config "
                "flag (`tie_word_embeddings`) the section does not read (`if tied { ... }`)")
    if not found:
        return "no parameter was found in it: is it this model's checkpoint?"
    return ("--allow-missing initialises the missing parameters randomly (for new parameters "
            "that no checkpoint holds)")


def _convert(name: str, arr: np.ndarray, dtype: str, warnings: list[str]) -> np.ndarray:
    """`arr` as the parameter's dtype, with a warning when that changes values (bf16 and
    fp8 tensors arrive as float32 and widen exactly: no warning)."""
    if arr.dtype == np.dtype(dtype):
        return arr
    with np.errstate(over="ignore"):      # an overflow is warned about below, once
        converted = arr.astype(dtype)
    if arr.dtype.kind == "f" and np.dtype(dtype).kind == "f" and \
            np.dtype(dtype).itemsize < arr.dtype.itemsize:
        change = _narrowing_change(arr, converted)
        if change:
            warnings.append(f"weight {name}: {arr.dtype} -> {dtype} loses precision "
                            f"({change})")
    elif arr.dtype.kind != np.dtype(dtype).kind:
        warnings.append(f"weight {name}: converted {arr.dtype} -> {dtype}")
    return converted


def _narrowing_change(arr: np.ndarray, converted: np.ndarray) -> str | None:
    """How narrowing a float tensor changed it, or None if every value survived. NaN and
    Inf in the file are left out (they would hide every other change); finite values that
    became infinite are counted (a float64 1e300 is inf as float32)."""
    finite = np.isfinite(arr)
    over = int(np.count_nonzero(finite & ~np.isfinite(converted)))
    if over:
        return f"{over:,} of {arr.size:,} values overflow to infinity"
    diff = np.abs(converted.astype(arr.dtype)[finite] - arr[finite])
    lost = float(diff.max()) if diff.size else 0.0
    return f"max change {lost:.3g}" if lost > 0 else None
