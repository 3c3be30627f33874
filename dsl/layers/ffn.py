"""Position-wise feed-forward layers: FFN (two linears around an activation) and the gated
family GLU / GEGLU / SwiGLU (Shazeer 2020).

    FFN:  x (B, T, d) -> up (B, T, d_ff) -> act -> down (B, T, d)
    GLU:  x (B, T, d) -> act(gate(x)) * up(x) (B, T, d_ff) -> down (B, T, d)
"""
from __future__ import annotations

from . import layer
from .attention import _project
from .basic import _size, _tensor
from ..ops import activations



def _width(ctx, x, what: str) -> int:
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ctx.error(f"{what}: the input's last dimension {d} must be a known size")
    return d


def _act(ctx, act, what: str) -> str:
    """`act=` of a layer: any op with the activation trait (dsl/ops)."""
    allowed = activations()
    if act not in allowed:
        from ..errors import did_you_mean
        raise ctx.error(f"{what}: unknown activation {act!r}",
                        did_you_mean(str(act), allowed) or
                        "one of " + ", ".join(f'"{a}"' for a in allowed))
    return act


@layer("FFN")
def ffn(ctx, x, d_ff, act="gelu", bias=True, dropout=0.0, std=0.02):
    """FFN(x, d_ff, act="gelu" (or any activation op: "gelu_tanh", "relu", "silu", ...),
    bias=true, dropout=0.0):
    down(act(up(x))), sub-scopes `up` and `down`"""
    x = _tensor(ctx, x, "FFN")
    d = _width(ctx, x, "FFN")
    d_ff = _size(ctx, d_ff, "FFN: `d_ff`")
    act = _act(ctx, act, "FFN")
    h = ctx.op(act, _project(ctx, "up", x, d, d_ff, bias, std))      # (B, T, d_ff)
    y = _project(ctx, "down", h, d_ff, d, bias, std)                # (B, T, d)
    return ctx.op("dropout", y, rate=float(dropout)) if dropout else y


@layer("GLU")
def glu(ctx, x, d_ff, act="sigmoid", bias=False, dropout=0.0, std=0.02):
    """GLU(x, d_ff, act="sigmoid"|"gelu"|"gelu_tanh"|"silu", bias=false, dropout=0.0):
    down(act(gate(x)) * up(x)); act="silu" is SwiGLU, "gelu" GEGLU; sub-scopes `gate`,
    `up`, `down`"""
    x = _tensor(ctx, x, "GLU")
    d = _width(ctx, x, "GLU")
    d_ff = _size(ctx, d_ff, "GLU: `d_ff`")
    act = _act(ctx, act, "GLU")
    g = ctx.op(act, _project(ctx, "gate", x, d, d_ff, bias, std))    # (B, T, d_ff)
    h = ctx.op("mul", g, _project(ctx, "up", x, d, d_ff, bias, std))
    y = _project(ctx, "down", h, d_ff, d, bias, std)                # (B, T, d)
    return ctx.op("dropout", y, rate=float(dropout)) if dropout else y
