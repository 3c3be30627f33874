"""Element-wise ops: arithmetic with NumPy broadcasting, and activations."""
from __future__ import annotations

import numpy as np

from ..errors import did_you_mean
from . import (ACTIVATION, TT, ShapeError, broadcast, elementwise_flops, is_float, op, promote,
               scaled_flops)


def _binary(name: str, commutative: bool, fold):
    @op(name, inputs=("a", "b"), flops=elementwise_flops, fold=fold,
        traits={"elementwise": True, "binary": True, "per_position": "dynamic",
                **({"commutative": True} if commutative else {})})
    def infer(a: TT, b: TT) -> TT:
        return TT(broadcast(a.shape, b.shape), promote(a.dtype, b.dtype))
    infer.__doc__ = f"{name}(a, b): element-wise, NumPy broadcasting"
    return infer


for _name, _commutes, _fold in (("add", True, np.add), ("sub", False, np.subtract),
                                ("mul", True, np.multiply), ("div", False, np.divide)):
    _binary(_name, _commutes, _fold)

UNARY = {"elementwise": True, "unary": True, "per_position": (0,)}


def _unary(name: str, cost: int, doc: str, needs_float: bool = True, traits=UNARY, fold=None):
    @op(name, inputs=("x",), flops=scaled_flops(cost), traits=traits, fold=fold)
    def infer(x: TT) -> TT:
        if needs_float and not is_float(x.dtype):
            raise ShapeError(f"{name} needs a float tensor, got {x}", arg=0)
        return x
    infer.__doc__ = doc
    return infer


_unary("neg", 1, "neg(x) = -x", needs_float=False, fold=np.negative)
_unary("relu", 1, "relu(x) = max(x, 0)", traits=ACTIVATION)
_unary("gelu", 8, "gelu(x) = x * Phi(x), the exact (erf) form", traits=ACTIVATION)
_unary("gelu_tanh", 8, "gelu_tanh(x): the tanh approximation used by GPT-2", traits=ACTIVATION)
_unary("silu", 4, "silu(x) = x * sigmoid(x), a.k.a. swish", traits=ACTIVATION)
_unary("sigmoid", 4, "sigmoid(x) = 1 / (1 + exp(-x))", traits=ACTIVATION)
_unary("tanh", 4, "tanh(x)", traits=ACTIVATION)
_unary("relu2", 2, "relu2(x) = relu(x)^2 (Primer)", traits=ACTIVATION)
_unary("exp", 1, "exp(x)", fold=np.exp)
_unary("sqrt", 1, "sqrt(x)", fold=np.sqrt)
_unary("rsqrt", 2, "rsqrt(x) = 1 / sqrt(x)", fold=lambda x: 1.0 / np.sqrt(x))
_unary("square", 1, "square(x) = x * x", fold=np.square)


@op("cast", inputs=("x",), attrs={"dtype": "float32"}, traits={**UNARY, "keeps_mask": True},
    fold=lambda x, dtype="float32": x.astype(dtype))
def cast(x: TT, dtype: str) -> TT:
    """cast(x, dtype="float32"): convert element type (float32, int64, bool)"""
    dtypes = ("float32", "float64", "int64", "bool")
    if dtype not in dtypes:
        raise ShapeError(f"cast: unknown dtype {dtype!r}; expected float32, float64, int64 "
                         "or bool", hint=did_you_mean(str(dtype), dtypes))
    return TT(x.shape, dtype)
