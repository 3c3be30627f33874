"""Reference kernels of the MoE, T5 position-bias, Longformer, RETRO and memory families
against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archc.runtime.kernels import REFERENCE
from archc.runtime.kernels.moe import moe_capacity, moe_route
from archc.runtime.kernels.relative_position import relative_position_bucket

sig = lambda z: 1 / (1 + math.exp(-z))


def experts(E, scale_down=True):
    # expert e: up = I, down = (e + 1) I, so expert e maps x to (e + 1) * act(x)
    up = np.stack([np.eye(2, dtype=np.float32)] * E)
    down = np.stack([(e + 1) * np.eye(2, dtype=np.float32) for e in range(E)])
    return up, down


# ---- moe ---------------------------------------------------------------------------------

def test_moe_top1_scales_by_router_probability():
    x = np.array([[[2, 0], [0, 2], [3, 0]]], np.float32)       # logits = x: experts 0, 1, 0
    out = REFERENCE["moe"](x, np.eye(2, dtype=np.float32), *experts(2))
    want = [[2 * sig(2), 0], [0, 2 * 2 * sig(2)], [3 * sig(3), 0]]
    np.testing.assert_allclose(out[0], want, rtol=1e-6)


@pytest.mark.parametrize("limit", [dict(capacity=1), dict(capacity_factor=0.5)])
def test_moe_overflowing_token_gets_zero(limit):
    # expert 0 is full after token 0: token 2 (later by position) is dropped
    x = np.array([[[2, 0], [0, 2], [3, 0]]], np.float32)
    out = REFERENCE["moe"](x, np.eye(2, dtype=np.float32), *experts(2), **limit)
    np.testing.assert_allclose(out[0], [[2 * sig(2), 0], [0, 4 * sig(2)], [0, 0]], rtol=1e-6)


def test_moe_capacity_is_per_sequence():
    x = np.array([[[2, 0]], [[3, 0]]], np.float32)              # one token per sequence
    out = REFERENCE["moe"](x, np.eye(2, dtype=np.float32), *experts(2), capacity=1)
    np.testing.assert_allclose(out[:, 0, 0], [2 * sig(2), 3 * sig(3)], rtol=1e-6)


def test_moe_capacity_from_factor():
    assert moe_capacity(10, 4, 1, capacity_factor=1.25) == 4     # ceil(10 * 1.25 / 4)
    assert moe_capacity(10, 4, 2, capacity_factor=1.0) == 5
    assert moe_capacity(10, 4, 2, capacity=3) == 3
    assert moe_capacity(10, 4, 2) is None


def test_moe_top2_renormalises_the_chosen_probabilities():
    router = np.array([[math.log(4), math.log(2), 0], [0, 0, 0]], np.float32)   # 4:2:1
    x = np.array([[[1, 0]]], np.float32)
    up, down = experts(3)
    norm = REFERENCE["moe"](x, router, up, down, top_k=2, normalize=True)
    raw = REFERENCE["moe"](x, router, up, down, top_k=2)
    flat = REFERENCE["moe"](x, router, up, down, top_k=2, scale=False)
    np.testing.assert_allclose(norm[0, 0], [2 / 3 * 1 + 1 / 3 * 2, 0], rtol=1e-6)
    np.testing.assert_allclose(raw[0, 0], [4 / 7 * 1 + 2 / 7 * 2, 0], rtol=1e-6)
    np.testing.assert_allclose(flat[0, 0], [1 + 2, 0], rtol=1e-6)


def test_moe_glu_experts():
    x = np.array([[[1, -2]]], np.float32)
    up, down = experts(1)
    gate = np.stack([2 * np.eye(2, dtype=np.float32)])
    out = REFERENCE["moe"](x, np.zeros((2, 1), np.float32), up, down, gate, act="relu")
    # relu(gate x) * (up x) = relu([2, -4]) * [1, -2] = [2, 0]; one expert: weight 1
    np.testing.assert_allclose(out[0, 0], [2, 0], rtol=1e-6)


def test_moe_first_choices_fill_capacity_before_second_choices():
    router = np.array([[3, 1, 0], [0, 0, 0]], np.float32)      # both tokens: 0 then 1
    x = np.array([[[1, 0], [1, 0]]], np.float32)
    order, _, kept = moe_route(x, router, top_k=2, capacity=1)
    assert order[0].tolist() == [[0, 1], [0, 1]]
    # token 0 gets expert 0; token 1's first choice is full; token 0's second choice
    # (expert 1) comes before token 1's, which is then full too
    assert kept[0].tolist() == [[True, True], [False, False]]


# ---- T5 relative position bias -----------------------------------------------------------

def test_relative_position_buckets_by_hand():
    # 16 buckets, bidirectional: 8 per side, 4 exact, logarithmic up to distance 20
    rel = np.array([-3, 3, -4, -10, -19, -20, -100, 100])
    want = [3, 8 + 3, 4 + 0, 4 + int(math.log(10 / 4) / math.log(5) * 4), 7, 7, 7, 15]
    assert relative_position_bucket(rel, True, 16, 20).tolist() == want
    # causal: later keys share bucket 0; 8 exact buckets, then logarithmic
    assert relative_position_bucket(np.array([5, -5, -12, -30]), False, 16, 20).tolist() == \
        [0, 5, 8 + int(math.log(12 / 8) / math.log(20 / 8) * 8), 15]


def test_relative_position_bias_looks_up_the_table():
    table = np.arange(32, dtype=np.float32).reshape(16, 2)      # (buckets, heads)
    out = REFERENCE["relative_position_bias"](np.zeros((1, 3, 4)), np.zeros((1, 5, 4)), table,
                                              max_distance=20)
    assert out.shape == (1, 2, 3, 5)
    assert out[0, 1, 2, 0] == table[2, 1]                       # key 2 before: bucket 2
    assert out[0, 0, 0, 4] == table[8 + 4, 0]                   # key 4 after: bucket 12
    dec = REFERENCE["relative_position_bias"](np.zeros((1, 1, 4)), np.zeros((1, 5, 4)), table,
                                              bidirectional=False, max_distance=20, offset=4)
    assert dec[0, 0, 0].tolist() == [table[b, 0] for b in (4, 3, 2, 1, 0)]


# ---- Longformer --------------------------------------------------------------------------

def test_longformer_attends_window_and_globals_each_once():
    # q = k = 0: every visible key weighs the same, so the output is the mean of the
    # visible value rows; v = one-hot positions shows which keys were seen
    T = 5
    zeros = np.zeros((1, T, T), np.float32)
    v = np.eye(T, dtype=np.float32)[None]
    vg = 10 * v
    glob = np.array([[1, 0, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 0]])
    out = REFERENCE["longformer_attention"](zeros, zeros, v, zeros, zeros, vg, glob, mask,
                                            heads=1, window=2)[0]
    np.testing.assert_allclose(out[0], [2.5, 2.5, 2.5, 2.5, 0])    # global: all real, vg
    np.testing.assert_allclose(out[1], [1 / 3, 1 / 3, 1 / 3, 0, 0])  # 0 in window and global
    np.testing.assert_allclose(out[2], [1 / 4, 1 / 4, 1 / 4, 1 / 4, 0])
    np.testing.assert_allclose(out[3], [1 / 3, 0, 1 / 3, 1 / 3, 0])  # 4 is padding
    np.testing.assert_allclose(out[4], 0)                           # padded query


def test_longformer_scores_use_scaled_local_projections():
    q = np.array([[[1.0], [0.0]]], np.float32)
    k = np.array([[[0.0], [2.0]]], np.float32)
    v = np.array([[[1.0], [3.0]]], np.float32)
    z = np.zeros_like(q)
    out = REFERENCE["longformer_attention"](q, k, v, z, z, z, np.zeros((1, 2), int),
                                            heads=1, window=2, scale=0.5)
    p1 = math.exp(1.0) / (1 + math.exp(1.0))                        # scores 0 and 1*2*0.5
    np.testing.assert_allclose(out[0, 0, 0], (1 - p1) * 1 + p1 * 3, rtol=1e-6)


# ---- RETRO -------------------------------------------------------------------------------

def test_chunked_cross_attention_reads_the_previous_chunks_neighbours():
    # q = k = 0: each token's output is the mean of its chunk's neighbour values
    B, T, C, N = 1, 5, 2, 3
    q = np.zeros((B, T, 2), np.float32)
    k = np.zeros((B, C, N, 2), np.float32)
    v = np.arange(B * C * N * 2, dtype=np.float32).reshape(B, C, N, 2)
    out = REFERENCE["chunked_cross_attention"](q, k, v, chunk=2, heads=2)[0]
    mean = v[0].mean(axis=1)                                        # (C, 2)
    np.testing.assert_allclose(out, [[0, 0], mean[0], mean[0], mean[1], mean[1]])


# ---- memory ------------------------------------------------------------------------------

def test_product_key_memory_by_hand():
    keys = np.array([[[[1.0], [-1.0]], [[2.0], [0.5]]]], np.float32)    # (1, 2, n=2, 1)
    values = np.arange(8, dtype=np.float32).reshape(4, 2)               # key (i, j) -> 2i + j
    q = np.array([[1.0, 1.0]], np.float32)                              # halves 1 and 1
    # sub-scores: [1, -1] and [2, 0.5]; best pair (0, 0) = 3, next (0, 1) = 1.5
    top1 = REFERENCE["product_key_memory"](q, keys, values, topk=1)
    np.testing.assert_allclose(top1, [values[0]])
    top2 = REFERENCE["product_key_memory"](q, keys, values, topk=2)
    w = np.exp([3.0, 1.5]) / np.exp([3.0, 1.5]).sum()
    np.testing.assert_allclose(top2, [w[0] * values[0] + w[1] * values[1]], rtol=1e-6)
    # two heads with the same keys and query halves: outputs add
    two = REFERENCE["product_key_memory"](np.concatenate([q, q], -1),
                                          np.concatenate([keys, keys]), values, topk=2,
                                          heads=2)
    np.testing.assert_allclose(two, 2 * top2, rtol=1e-6)


def test_prepend_memory_and_mask():
    x = np.ones((2, 3, 4), np.float32)
    slots = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = REFERENCE["prepend_memory"](x, slots)
    assert out.shape == (2, 5, 4)
    np.testing.assert_array_equal(out[1, :2], slots)
    np.testing.assert_array_equal(out[1, 2:], 1)
    m = REFERENCE["memory_mask"](np.array([[1, 0]]), slots=2)
    assert m.tolist() == [[1, 1, 1, 0]]


def test_stack():
    a, b = np.zeros((2, 3)), np.ones((2, 3))
    assert REFERENCE["stack"](a, b).shape == (2, 2, 3)
    assert REFERENCE["stack"](a, b, axis=-1)[..., 1].tolist() == b.tolist()
