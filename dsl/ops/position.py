"""Positions: index ranges, sinusoidal tables and rotary embeddings (RoPE)."""
from __future__ import annotations

from ..dims import DimLike, dim_div, dim_mul, numel, shape_str
from ..scratch import Arg, Scratch, copy_unless_contiguous, copy_unless_viewable
from . import TT, ShapeError, is_float, norm_axis, op, scaled_flops


@op("positions", inputs=("x",), attrs={"axis": -1, "offset": 0}, traits=("position",))
def positions(x: TT, axis: int = -1, offset: int = 0) -> TT:
    """positions(x, axis=-1, offset=0) = offset + arange(x.shape[axis]), int; for learned
    absolute positions `Embedding(positions(ids), n_ctx, d)`"""
    ax = norm_axis(axis, len(x.shape))
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ShapeError(f"positions: offset must be a non-negative whole number, got {offset!r}")
    return TT((x.shape[ax],), "int64")


@op("sinusoidal_positions", inputs=("pos",), attrs={"dim": None, "base": 10000.0},
    flops=scaled_flops(4), traits=("position",),
    # the kernel reads the positions as flat rows
    scratch=lambda node, args, cache: copy_unless_contiguous("c", args[0]))
def sinusoidal_positions(pos: TT, dim: int | None = None, base: float = 10000.0) -> TT:
    """sinusoidal_positions(pos, dim, base=10000): the Transformer's table,
    PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(p / base^(2i/dim)); pos int (...)"""
    if pos.dtype != "int64":
        raise ShapeError(f"sinusoidal_positions: pos must be int positions, got {pos}", arg=0)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0 or dim % 2:
        raise ShapeError(f"sinusoidal_positions: dim must be a positive even number, got {dim!r}")
    return TT(tuple(pos.shape) + (dim,), "float32")


def _rope_flops(out: TT, *_types, heads=1, head_dim=None, rotary_dim=None, **_a) -> DimLike:
    # 3 per rotated element (two multiplies and an add), on rotary_dim of every head_dim
    n = numel(out.shape)
    if rotary_dim is None or head_dim is None:
        return dim_mul(3, n)
    return dim_mul(3, dim_div(dim_mul(n, rotary_dim), head_dim) or n)


def rope_scratch(node, x: Arg, positions: Arg | None) -> Scratch:
    """Positions (B, T) unless given (a copy of them if not contiguous), and the rotary
    angles' cos/sin per position: (B*T, 2, r/2) float64 (rope and rope_attention)."""
    B, T, C = x.shape
    D = node.attrs.get("head_dim") or C // node.attrs["heads"]
    r = node.attrs.get("rotary_dim") or D
    out = [("pos", (B, T), "int64")] if positions is None else \
        copy_unless_contiguous("pos_c", positions)
    return out + [("rope_cs", (B * T, 2, r // 2), "float64")]


def _rope_scratch(node, args, cache):
    # x is copied when it does not view as (B, T, H, D)
    return rope_scratch(node, args[0], args[1] if len(args) > 1 else None) + \
        copy_unless_viewable("rope_q", args[0])


@op("rope", inputs=("x", "positions?"),
    attrs={"heads": 1, "head_dim": None, "rotary_dim": None, "theta": 10000.0,
           "interleaved": False, "offset": 0},
    flops=_rope_flops, traits=("position", "keeps_tokens"), scratch=_rope_scratch)
def rope(x: TT, pos: TT | None = None, heads: int = 1, head_dim: int | None = None,
         rotary_dim: int | None = None, theta: float = 10000.0, interleaved: bool = False,
         offset: int = 0) -> TT:
    """rope(x, positions?, heads, head_dim, rotary_dim=head_dim, theta=10000,
    interleaved=false, offset=0): rotate the first rotary_dim dims of each head of x
    (B, T, heads*head_dim) by angle p * theta^(-2i/rotary_dim). Half-split pairs (i, i+r/2)
    as in LLaMA/NeoX (`rotate_half`), or interleaved pairs (2i, 2i+1) as in GPT-J.
    Positions are offset + arange(T) unless a (B, T) int tensor is given."""
    if len(x.shape) < 2 or not is_float(x.dtype):
        raise ShapeError(f"rope: x must be a float tensor (B, T, heads*head_dim), got {x}", arg=0)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ShapeError(f"rope: heads must be a positive whole number, got {heads!r}")
    D = dim_div(x.shape[-1], heads) if head_dim is None else head_dim
    if D is None or dim_mul(heads, D) != x.shape[-1]:
        raise ShapeError(f"rope: x {shape_str(x.shape)} does not hold heads*head_dim = "
                         f"{heads}*{D} features", arg=0)
    rd = D if rotary_dim is None else rotary_dim
    if not isinstance(rd, int) or isinstance(rd, bool) or rd <= 0 or rd % 2 or \
            (isinstance(D, int) and rd > D):
        raise ShapeError(f"rope: rotary_dim must be a positive even number <= head_dim {D}, "
                         f"got {rd!r}")
    if pos is not None:
        want = tuple(x.shape[:-1])
        if pos.dtype != "int64" or tuple(pos.shape) != want:
            raise ShapeError(f"rope: positions must be int of shape {shape_str(want)}, "
                             f"got {pos}", arg=1)
    return x
