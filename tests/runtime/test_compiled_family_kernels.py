"""The compiled MoE, product-key memory, Longformer, T5 bias, RETRO, position-table and
embedding kernels against their `ref_` twins, over odd and even shapes."""
import math

import numpy as np
import pytest

from archc.runtime.kernels import attention as ka, elementwise as ke, embedding as kemb
from archc.runtime.kernels import longformer as kl, memory as kmem, moe as km
from archc.runtime.kernels import position as kp, relative_position as kr, retro as kret


def E(*shape, dt=np.float32):
    return np.empty(shape, dt)


@pytest.mark.parametrize("N,T,C,Ex,F,k,cap,cf,norm,gate,act", [
    (2, 5, 8, 4, 6, 1, None, None, False, False, "relu"),
    (1, 7, 6, 3, 5, 2, None, 1.0, True, True, "silu"),     # capacity from a factor
    (3, 3, 4, 5, 7, 2, 1, None, False, False, "gelu"),     # tight capacity drops tokens
])
def test_moe(N, T, C, Ex, F, k, cap, cf, norm, gate, act):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, C)).astype(np.float32)
    router = rng.standard_normal((C, Ex)).astype(np.float32)
    wu = rng.standard_normal((Ex, C, F)).astype(np.float32)
    wd = rng.standard_normal((Ex, F, C)).astype(np.float32)
    wg = rng.standard_normal((Ex, C, F)).astype(np.float32) if gate else None
    want = km.ref_moe(x, router, wu, wd, wg, top_k=k, act=act, capacity=cap,
                      capacity_factor=cf, normalize=norm)
    M = N * T
    c = km.moe_capacity(T, Ex, k, cap, cf)
    out = E(M, C)
    x2 = x.reshape(M, C)
    offsets, slot_tok = E(Ex + 1, dt=np.int64), E(M * k, dt=np.int64)
    slot_w = E(M * k, dt=np.float64)
    km.route_tokens(x2 @ router, T, k, -1 if c is None else c, norm, True,
                    E(M, k, dt=np.int64), E(M, k, dt=np.float64), offsets, E(Ex, dt=np.int64),
                    slot_tok, slot_w)
    km.moe_experts(out, x2, wu, wd, wg if gate else wu, gate, ke.ACT[act], offsets, slot_tok,
                   slot_w, E(M, C), E(M, F), E(M if gate else 0, F), E(M, C),
                   E(M, C, dt=np.float64))
    np.testing.assert_allclose(out.reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    if cap == 1:                                    # the capacity really dropped tokens
        free = km.ref_moe(x, router, wu, wd, wg, top_k=k, act=act, normalize=norm)
        assert not np.allclose(want, free)


@pytest.mark.parametrize("N,H,n,half,k,Dv,lanes", [(5, 1, 6, 4, 3, 7, 2), (9, 2, 8, 3, 8, 5, 8),
                                                   (1, 2, 4, 2, 1, 3, 1)])
def test_product_key_memory(N, H, n, half, k, Dv, lanes):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((N, H * 2 * half)).astype(np.float32)
    keys = rng.standard_normal((H, 2, n, half)).astype(np.float32)
    keys[0, 0, 1] = keys[0, 0, 2]                   # tied scores: the lower index wins
    values = rng.standard_normal((n * n, Dv)).astype(np.float32)
    want = kmem.ref_product_key_memory(q, keys, values, topk=k, heads=H)
    out = E(N, Dv)
    kmem.product_key_memory(out, q, keys, values, k, E(lanes, 2, n, dt=np.float64),
                            E(lanes, 2, k, dt=np.float64), E(lanes, 2, k, dt=np.int64),
                            E(lanes, k, dt=np.float64), E(lanes, k, dt=np.int64),
                            E(lanes, Dv, dt=np.float64))
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)


def test_prepend_memory():
    rng = np.random.default_rng(2)
    x, slots = rng.standard_normal((3, 5, 4)), rng.standard_normal((2, 4))
    out = E(3, 7, 4, dt=np.float64)
    kmem.prepend_memory(out, x, slots)
    np.testing.assert_array_equal(out, kmem.ref_prepend_memory(x, slots))


@pytest.mark.parametrize("B,T,H,D,window,with_mask", [(2, 9, 2, 4, 4, True), (1, 7, 3, 2, 2, False),
                                                      (2, 5, 1, 3, 16, True)])
def test_longformer_attention(B, T, H, D, window, with_mask):
    rng = np.random.default_rng(3)
    q, k, v, qg, kg, vg = (rng.standard_normal((B, T, H * D)).astype(np.float32)
                           for _ in range(6))
    glob = (rng.random((B, T)) < 0.3).astype(np.int64)
    glob[0, 0] = 1
    mask = np.ones((B, T), np.int64)
    mask[-1, -2:] = 0                                 # padding at the end of a row
    want = kl.ref_longformer_attention(q, k, v, qg, kg, vg, glob, mask if with_mask else None,
                                       heads=H, window=window)
    out = E(B, T, H, D)
    real = mask != 0 if with_mask else np.zeros((B, 0), bool)
    split = [a.reshape(B, T, H, D) for a in (q, k, v, qg, kg, vg)]
    kl.longformer_attention(out, *split, glob != 0, real, window // 2, 1 / math.sqrt(D),
                            E(B, T, dt=np.int64), E(B, dt=np.int64), E(B * H, T, dt=np.float64),
                            E(B * H, D, dt=np.float64))
    np.testing.assert_allclose(out.reshape(B, T, H * D), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T,S,offset,bidir,md", [(5, 5, 0, True, 8), (3, 11, 4, False, 6),
                                                 (1, 7, 6, False, 128), (9, 4, 0, True, 3)])
def test_relative_position_bias(T, S, offset, bidir, md):
    rng = np.random.default_rng(4)
    table = rng.standard_normal((16, 3)).astype(np.float32)
    xq, xk = np.zeros((1, T, 2)), np.zeros((1, S, 2))
    want = kr.ref_relative_position_bias(xq, xk, table, bidir, md, offset)
    lo = -(offset + T - 1)
    buckets = kr.bucket_table(lo, S - 1 - offset, bidir, 16, md)
    out = E(1, 3, T, S)
    kr.relative_position_bias(out, table, buckets, lo, offset)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("B,T,C,N,H,D,chunk", [(2, 9, 2, 3, 2, 4, 4), (1, 5, 3, 2, 1, 3, 2)])
def test_chunked_cross_attention(B, T, C, N, H, D, chunk):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((B, T, H * D)).astype(np.float32)
    k = rng.standard_normal((B, C, N, H * D)).astype(np.float32)
    v = rng.standard_normal((B, C, N, H * D)).astype(np.float32)
    want = kret.ref_chunked_cross_attention(q, k, v, chunk=chunk, heads=H)
    out = E(B, T, H, D)
    kret.chunked_cross_attention(out, q.reshape(B, T, H, D), k.reshape(B, C, N, H, D),
                                 v.reshape(B, C, N, H, D), chunk, 1 / math.sqrt(D),
                                 E(B * H, N, dt=np.float64), E(B * H, D, dt=np.float64))
    np.testing.assert_allclose(out.reshape(B, T, H * D), want, atol=1e-5, rtol=1e-5)
    assert not out[:, :chunk - 1].any()               # before the first chunk: nothing


@pytest.mark.parametrize("P,dim", [(1, 2), (7, 10), (33, 64)])
def test_sinusoidal_positions(P, dim):
    pos = np.arange(P, dtype=np.int64) * 3
    out = E(P, dim)
    kp.sinusoidal_positions(out, pos, 10000.0)
    np.testing.assert_allclose(out, kp.ref_sinusoidal_positions(pos, dim), atol=1e-6)


@pytest.mark.parametrize("H,S,symmetric", [(1, 1, False), (6, 7, False), (8, 5, True)])
def test_alibi(H, S, symmetric):
    want = ka.ref_alibi(np.zeros((1, S, 4)), heads=H, symmetric=symmetric)
    out = E(*want.shape)
    ka.alibi(out, ka.alibi_slopes(H), symmetric)
    np.testing.assert_allclose(out, want, atol=1e-7)


def test_embedding_counts_ids_out_of_range():
    rng = np.random.default_rng(6)
    table = rng.standard_normal((11, 5)).astype(np.float32)
    ids = rng.integers(0, 11, 13)
    out = E(13, 5)
    assert kemb.embedding(out, ids, table) == 0
    np.testing.assert_array_equal(out, kemb.ref_embedding(ids, table))
    ids[[2, 7]] = [11, -1]
    assert kemb.embedding(out, ids, table) == 2


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("R,K,a_rows,b_rows", [(7, 5, 7, 1), (3, 64, 1, 3), (1, 9, 1, 1)])
def test_binary_rows(op, R, K, a_rows, b_rows):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((a_rows, K)).astype(np.float32)
    b = rng.standard_normal((b_rows, K)).astype(np.float32) + 3
    out = E(R, K)
    ke.binary_rows(out, a, b, ke.BINARY[op])
    np.testing.assert_allclose(out, getattr(ke, f"ref_{op}")(a, b), rtol=1e-6)


@pytest.mark.parametrize("T,E,k,routing", [
    (5, 4, 1, ""),
    (7, 3, 2, ", capacity_factor=1.0"),            # capacity from a factor
    (6, 5, 2, ", capacity=1, normalize=true"),     # tight capacity drops tokens: -1
])
def test_moe_router_steps(arch_file, T, E, k, routing):
    """A tap's moe_router runs compiled (moe's routing steps, planned scratch, no fallback)
    and chooses what its reference does."""
    import archc
    m = archc.load(arch_file(f"""
        model m(x: float[B, T, 6]) {{
            y = MoE(x, {E}, 8, top_k={k}{routing}) as moe
            return y
        }}
        """), seed=3)
    x = np.random.default_rng(0).standard_normal((2, T, 6)).astype(np.float32)
    tapped = m.tapped(["moe.router"])
    got = tapped.run(x=x)["moe.router"]
    want = tapped.run(x=x, executor="reference")["moe.router"]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (2, T, k) and got.dtype == np.int64
    if "capacity=1" in routing:
        assert (got == -1).any()
    programs = list(tapped.compiled()._programs.values())
    assert programs and all(not p.fallbacks and not p.unplanned for p in programs)
