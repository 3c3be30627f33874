"""Masks: causal/window attention masks and additive padding masks."""
from __future__ import annotations

import numpy as np

from ..kernels import REFERENCE
from . import steps_for

@steps_for("attention_mask")
def build_attention_mask(P, node, args, attrs):
    # depends on the sizes alone: made once, copied in by each run
    mask = np.ascontiguousarray(REFERENCE["attention_mask"](*args, **attrs))
    out = P.output()
    P.step(np.copyto, out, mask)
    return out


@steps_for("padding_mask")
def build_padding_mask(P, node, args, attrs):
    mask = args[0]
    out = P.output()
    ok = P.temp("ok", mask.shape, np.bool_)
    P.step(np.not_equal, mask, 0, ok)
    P.step(np.copyto, out, np.full((), -np.inf, out.dtype))
    P.step(_where, out, np.zeros((), out.dtype), ok[..., None, None, :])
    return out


def _where(out, value, where):
    np.copyto(out, value, where=where)
