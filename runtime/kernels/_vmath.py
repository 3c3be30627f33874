"""exp and the activations built on it, written so LLVM can vectorise a loop over them.

libm's `expf`, `tanhf` and `erff` are scalar calls: a loop calling them runs one element at a
time. GPT-2's GELU over a (128, 3072) prefill block took 3.6 ms that way, as long as the
matrix product before it. These are plain arithmetic (a range reduction, a polynomial, a
bit cast for 2^n), so a loop over them becomes SIMD code.

float32 takes the fast forms; float64 keeps libm, so the float64 paths stay exact references
for tests. Accuracy of the float32 forms against float64 (tests/runtime/test_vmath.py):
exp within 1 ulp on [-87, 88], exp(88) above and 0 below (no infinities, no subnormals);
sigmoid 2 ulp; silu, gelu_tanh and exact GELU within 6e-7 absolute plus 2 ulp of the result.
The erfc behind exact GELU is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 absolute), so
where GELU's output is tiny (x < -3) its relative error grows to ~2e-4. NaN stays NaN.

Every function is overloaded on the argument's type: call `exp_(v)` etc. from a kernel.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

_LOG2E = 1.4426950408889634
# ln 2 split in two: n * _LN2_HI is exact in float32 for |n| <= 128, so r = x - n ln2 keeps
# its low bits (Cody & Waite's range reduction)
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
# largest / smallest x whose 2^n stays a normal float32 (n = round(x log2 e) in [-126, 127])
_EXP_MAX = 88.0
_EXP_MIN = -87.0
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
# Abramowitz & Stegun 7.1.26: erfc(z) ~ t (a1 + t (a2 + ...)) exp(-z^2), t = 1 / (1 + p z)
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of the integer `bits`."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen


def relu_(v):
    return v if not v < 0 else 0 * v


@overload(relu_)
def _relu_impl(v):
    zero = as_dtype(v).type(0)                  # 0 in v's own type: the result keeps it
    # NaN stays NaN, like np.maximum. "+ zero": in place, `x[j] = v or 0` stores v back
    # where it is, so LLVM made the loop a masked store of the zeros, which AMD's Zen
    # microcodes (ReLU ran at 0.8 ns an element on Zen 3, a plain multiply at 0.06); v + 0
    # is not v to LLVM (-0 + 0 is +0), so the store stays a plain one
    return lambda v: (v if not v < zero else zero) + zero


def exp_(v):
    """exp(v) in v's precision."""
    return math.exp(v)


@overload(exp_)
def _exp_impl(v):
    if v != types.float32:
        return lambda v: math.exp(v)
    f32 = np.float32

    def exp32(v):
        # saturates at exp(88) above, 0 below -87 (no infinities, no subnormals); NaN stays
        x = f32(_EXP_MAX) if v > f32(_EXP_MAX) else v
        x = f32(_EXP_MIN) if x < f32(_EXP_MIN) else x
        n = np.floor(x * f32(_LOG2E) + f32(0.5))            # exp(x) = 2^n exp(r)
        r = x - n * f32(_LN2_HI)
        r = r - n * f32(_LN2_LO)                              # |r| <= ln2 / 2
        # Taylor to r^7: the next term is below 6e-9 relative on |r| <= 0.347
        p = f32(1.0 / 5040.0)
        p = p * r + f32(1.0 / 720.0)
        p = p * r + f32(1.0 / 120.0)
        p = p * r + f32(1.0 / 24.0)
        p = p * r + f32(1.0 / 6.0)
        p = p * r + f32(0.5)
        p = p * r + f32(1.0)
        p = p * r + f32(1.0)
        # int32, not int64: AVX2 converts 8 floats to int32 at once but has no float ->
        # int64 conversion, so int64 made LLVM do this one lane at a time (the whole exp
        # ran at 1.5 ns an element on Zen 3); n is within [-126, 127] here
        e = p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
        return f32(0.0) if v < f32(_EXP_MIN) else e
    return exp32


def sigmoid_(v):
    return 1.0 / (1.0 + math.exp(-v))


@overload(sigmoid_)
def _sigmoid_impl(v):
    if v != types.float32:
        def sigmoid64(v):
            # split by sign so exp never overflows
            if v >= 0.0:
                return 1.0 / (1.0 + math.exp(-v))
            e = math.exp(v)
            return e / (1.0 + e)
        return sigmoid64
    one = np.float32(1.0)
    return lambda v: one / (one + exp_(-v))                  # exp_ clamps: no overflow


def gelu_tanh_(v):
    return 0.5 * v * (1.0 + math.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))


@overload(gelu_tanh_)
def _gelu_tanh_impl(v):
    if v != types.float32:
        return lambda v: 0.5 * v * (1.0 + math.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
    f32 = np.float32

    def gelu_tanh32(v):
        # 0.5 v (1 + tanh u) = v sigmoid(2u): no tanh, and no cancellation for u << 0
        u = f32(_SQRT_2_OVER_PI) * (v + f32(0.044715) * v * v * v)
        return v * sigmoid_(f32(2.0) * u)
    return gelu_tanh32


def gelu_(v):
    return 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))


@overload(gelu_)
def _gelu_impl(v):
    if v != types.float32:
        return lambda v: 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
    f32 = np.float32
    a1, a2, a3, a4, a5 = (f32(a) for a in _AS_A)

    def gelu32(v):
        # 0.5 v (1 + erf z) with z = v / sqrt 2; through erfc(|z|), which is accurate where
        # 1 + erf z would cancel (v << 0)
        z = abs(v) * f32(_INV_SQRT2)
        t = f32(1.0) / (f32(1.0) + f32(_AS_P) * z)
        erfc = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * exp_(-z * z)
        tail = f32(0.5) * v * erfc               # gelu(v) for v < 0, v - gelu(v) for v >= 0
        pos = f32(v >= 0)                         # no branch: (pos, 1 - 2 pos) is (1, -1) or (0, 1)
        return pos * v + (f32(1.0) - f32(2.0) * pos) * tail
    return gelu32
