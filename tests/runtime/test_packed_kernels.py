"""The packed-weight kernels (runtime/kernels/_quant.py) against their NumPy twins: packing
bit for bit, the products and the row lookup on odd shapes (K not a multiple of 32, several
panels, one lane's columns, every float32 kernel a prompt's product may go through), NaN
and inf as float32's kernels give them."""
import numpy as np
import pytest

from archc.runtime.kernels import _quant as kq
from archc.runtime.kernels import elementwise as ke
from archc.runtime.kernels import linalg as kl
from archc.runtime import tune
from archc.runtime.packed import BLOCK, QMAX, dequantize

KINDS = ["int8", "bf16"]


def packed(rows: np.ndarray, kind: str):
    """(data, scales) of float32 rows, by the NumPy twins."""
    if kind == "int8":
        return kq.ref_pack_int8(rows)
    return kq.ref_pack_bf16(rows), np.empty((rows.shape[0], 0), np.float32)


@pytest.mark.parametrize("N,K", [(1, 1), (3, 31), (5, 32), (7, 33), (4, 100), (2, 768)])
def test_pack_matches_its_twin_bit_for_bit(N, K):
    rng = np.random.default_rng(N * 1000 + K)
    rows = (rng.standard_normal((N, K)) * rng.uniform(0.01, 10, (N, 1))).astype(np.float32)
    rows[0, :min(K, 5)] = 0                                    # a zero block keeps zeros
    q, s = kq.ref_pack_int8(rows)
    assert q.shape == (N, K) and s.shape == (N, -(-K // BLOCK)) and s.dtype == np.float32
    assert np.abs(q.astype(int)).max() <= QMAX
    for layout in (rows, np.asfortranarray(rows)):            # any layout of the source
        q2, s2 = np.empty_like(q), np.empty_like(s)
        kq.pack_int8(q2, s2, layout)
        np.testing.assert_array_equal(q2, q)
        np.testing.assert_array_equal(s2, s)
        b = np.empty((N, K), np.uint16)
        kq.pack_bf16(b, layout)
        np.testing.assert_array_equal(b, kq.ref_pack_bf16(rows))
    # the error bounds: half a step per block (int8), half an ulp of 8 bits (bf16)
    step = np.repeat(s, BLOCK, axis=1)[:, :K]
    assert (np.abs(dequantize(q, s) - rows) <= step / 2 + 1e-7).all()
    bf = dequantize(kq.ref_pack_bf16(rows), np.empty((N, 0), np.float32))
    assert (np.abs(bf - rows) <= np.abs(rows) * 2.0 ** -8).all()


def test_pack_weight_packs_rows_or_columns():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((70, 150)).astype(np.float32)          # more rows than PACK_ROWS
    for kind in KINDS:
        cols = kq.pack_weight(w, kind, transposed=True)             # a weight (K, N) = (70, 150)
        assert cols.shape == (70, 150) and cols.data.shape == (150, 70)
        np.testing.assert_array_equal(cols.data, packed(np.ascontiguousarray(w.T), kind)[0])
        rows = kq.pack_weight(w, kind, transposed=False)            # a table read by rows
        np.testing.assert_array_equal(rows.data, packed(w, kind)[0])
        np.testing.assert_array_equal(np.asarray(rows.T), np.asarray(rows).T)
        assert np.abs(np.asarray(cols) - w).max() < 0.05


def test_bf16_rounds_to_nearest_even_and_keeps_specials():
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF,
                     0x7F800000, 0xFF800000, 0x7F800001, 0xFFC00000, 0x80000000],
                    np.uint32)
    got = kq.ref_pack_bf16(bits.view(np.float32)[None])[0]
    # 1.0; a tie rounds to even (down); a tie rounds to even (up); above a tie rounds up;
    # the largest float rounds to inf; +-inf stay; a NaN whose payload would round into the
    # exponent stays a (quiet) NaN; -0 stays
    assert [hex(v) for v in got] == ["0x3f80", "0x3f80", "0x3f82", "0x3f81", "0x7f80",
                                     "0x7f80", "0xff80", "0x7fc0", "0xffc0", "0x8000"]
    b = np.empty((1, bits.size), np.uint16)
    kq.pack_bf16(b, bits.view(np.float32)[None])
    np.testing.assert_array_equal(b[0], got)


def test_int8_block_with_nan_or_inf_reads_back_nan():
    rows = np.ones((2, 70), np.float32)
    rows[0, 40], rows[1, 3] = np.inf, np.nan
    q, s = kq.ref_pack_int8(rows)
    q2, s2 = np.empty_like(q), np.empty_like(s)
    kq.pack_int8(q2, s2, rows)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(s2, s)
    values = dequantize(q, s)
    assert np.isnan(values[0, 32:64]).all() and (values[0, :32] == 1).all()
    assert np.isnan(values[1, :32]).all() and (values[1, 64:] == 1).all()


SHAPES = [(1, 1, 1), (1, 7, 5), (2, 64, 33), (4, 33, 130), (3, 100, 2), (1, 1040, 9)]


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_gemv_packed(M, K, N, nt, kind):
    rng = np.random.default_rng(M * 100 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    data, scales = packed(rng.standard_normal((N, K)).astype(np.float32), kind)
    b = rng.standard_normal(N).astype(np.float32)
    for act in ("identity", "relu", "gelu_tanh", "silu"):
        y = np.full((M, N), np.nan, np.float32)
        kq.gemv_packed(y, x, data, scales, b, ke.ACT[act], nt)
        np.testing.assert_allclose(y, kq.ref_packed_product(x, data, scales, b, act),
                                   atol=1e-5 * K, rtol=1e-5)


@pytest.mark.parametrize("M,K,N", [(5, 1, 1), (8, 33, 12), (13, 64, 37), (200, 17, 9),
                                   (7, 100, 600)])
@pytest.mark.parametrize("kernel", [None, *tune.KERNELS])
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_packed(M, K, N, kernel, kind):
    # through BLAS and through each kernel the tuner may choose (gemm_nt tiles on 256-row
    # panels, each a column slice of y; micro-kernels reading the packed rows themselves);
    # several panels (N = 600), one lane's columns
    assert kq.PANEL < 600
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    data, scales = packed(rng.standard_normal((N, K)).astype(np.float32), kind)
    want = kq.ref_packed_product(x, data, scales)
    tile = tune.KERNELS[kernel] if kernel else None
    for c0, c1 in ((0, N), (N // 3, N - N // 4)):
        y = np.full((M, N), np.nan, np.float32)
        kq.gemm_packed(y, x, data, scales, c0, c1, tile)
        np.testing.assert_allclose(y[:, c0:c1], want[:, c0:c1], atol=1e-5 * K, rtol=1e-5)
        assert np.isnan(y[:, :c0]).all() and np.isnan(y[:, c1:]).all()
        # what a program compiles up front is what the product then calls
        called = {fn for fn, _ in kq.gemm_packed_calls(y, x, data, scales, c0, c1, tile)}
        assert called == ({kq.MICRO[tile]} if tile in kq.MICRO else
                          {kq.widen_rows} | ({tile} if tile else set()))


@pytest.mark.parametrize("kind", KINDS)
def test_products_propagate_nan_and_inf_as_the_twin(kind):
    # fastmath here is reassociation and contraction only: no finite-math assumptions. A
    # weight that packs to 0 times an infinite input is NaN, exactly as in the twin
    rng = np.random.default_rng(2)
    data, scales = packed(rng.uniform(0.5, 1, (9, 40)).astype(np.float32), kind)
    for M in (2, 8):
        x = np.ones((M, 40), np.float32)
        x[1, 3], x[0, 39] = np.nan, np.inf
        want = kq.ref_packed_product(x, data, scales)
        assert np.isnan(want[1]).all() and np.isposinf(want[0]).all()
        y = np.zeros((M, 9), np.float32)
        kq.gemv_packed(y, x, data, scales, np.zeros(9, np.float32), 0, 2)
        np.testing.assert_array_equal(y[:2], want[:2])
        y = np.zeros((M, 9), np.float32)
        kq.gemm_packed(y, x, data, scales, 0, 9, kl.TILES["nt4x4"])
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(want))


@pytest.mark.parametrize("kind", KINDS)
def test_gather_packed(kind):
    rng = np.random.default_rng(3)
    data, scales = packed(rng.standard_normal((11, 45)).astype(np.float32), kind)
    ids = np.array([0, 10, 3, 3, 7])
    out = np.zeros((5, 45), np.float32)
    assert kq.gather_packed(out, ids, data, scales) == 0
    np.testing.assert_array_equal(out, dequantize(data, scales)[ids])
    out[:] = -1
    assert kq.gather_packed(out, np.array([1, 11, -1]), data, scales) == 2
    assert (out[1:] == -1).all()                      # left as they were: the caller raises
