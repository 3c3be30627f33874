"""Linear, norms and embeddings: the layers every model family uses."""
from __future__ import annotations

from . import layer


def _tensor(ctx, x, what: str, index: int = 0):
    from ..values import Tensor
    if not isinstance(x, Tensor):
        raise ctx.error(f"{what}: expected a tensor as argument {index + 1}")
    return x


def _size(ctx, v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ctx.error(f"{what} must be a positive whole number, got {v!r}")
    return v


@layer("Linear")
def linear(ctx, x, out, bias=True, std=0.02):
    """Linear(x, out, bias=true): x @ weight + bias, weight of shape (in, out)"""
    x = _tensor(ctx, x, "Linear")
    d_in = x.shape[-1]
    if not isinstance(d_in, int):
        raise ctx.error(f"Linear: the input's last dimension {d_in} must be a known size")
    out = _size(ctx, out, "Linear: `out`")
    w = ctx.param("weight", (d_in, out), std=std)
    if bias:
        return ctx.op("linear", x, w, ctx.param("bias", (out,), init="zeros"))
    return ctx.op("linear", x, w)


@layer("LayerNorm")
def layer_norm(ctx, x, eps=1e-5, bias=True):
    """LayerNorm(x, eps=1e-5, bias=true) over the last dimension"""
    x = _tensor(ctx, x, "LayerNorm")
    d = x.shape[-1]
    w = ctx.param("weight", (d,), init="ones")
    if bias:
        return ctx.op("layernorm", x, w, ctx.param("bias", (d,), init="zeros"), eps=float(eps))
    return ctx.op("layernorm", x, w, eps=float(eps))


@layer("RMSNorm")
def rms_norm(ctx, x, eps=1e-6):
    """RMSNorm(x, eps=1e-6): x / rms(x) * weight"""
    x = _tensor(ctx, x, "RMSNorm")
    w = ctx.param("weight", (x.shape[-1],), init="ones")
    return ctx.op("rmsnorm", x, w, eps=float(eps))


@layer("Embedding")
def embedding(ctx, ids, vocab, dim, std=0.02):
    """Embedding(ids, vocab, dim): a learned table of shape (vocab, dim)"""
    ids = _tensor(ctx, ids, "Embedding")
    if ids.dtype != "int64":
        raise ctx.error(f"Embedding: ids must be int, got {ids.tt}")
    table = ctx.param("weight", (_size(ctx, vocab, "Embedding: `vocab`"),
                                 _size(ctx, dim, "Embedding: `dim`")), std=std)
    return ctx.op("embedding", ids, table)
