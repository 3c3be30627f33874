"""The generate budget counts the KV cache the run will allocate: it plans the graph the
executor runs (the optimised one), so hand-written attention is a cached attention there."""
from __future__ import annotations

import numpy as np

import archc
from archc.runtime.budget import check_generate
from archc.runtime.generate import session_for

HAND = """
model m(ids: int[B, T]) {
    x = Embedding(ids, 11, 8) as wte
    q = Linear(x, 8) as q
    k = Linear(x, 8) as k
    v = Linear(x, 8) as v
    qh = transpose(reshape(q, [B, T, 2, 4]), [0, 2, 1, 3])     # (B, H, T, D)
    kh = transpose(reshape(k, [B, T, 2, 4]), [0, 2, 1, 3])
    vh = transpose(reshape(v, [B, T, 2, 4]), [0, 2, 1, 3])
    p = softmax(qh @ transpose(kh) / sqrt(4) + attention_mask(qh, kh, causal=true))
    a = reshape(transpose(p @ vh, [0, 2, 1, 3]), [B, T, 8])
    return Linear(a, 11) as logits
}
"""


def test_generate_budget_is_the_kv_cache_the_session_allocates(tmp_path):
    src = tmp_path / "m.arch"
    src.write_text(HAND)
    model = archc.load(src)
    ex = model.compiled(1)
    est = check_generate(ex, 2, 17, 1 << 40)
    sess = session_for(ex, 2, 17)
    assert est.kv_cache > 0 and est.kv_cache == sess.nbytes
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert model.generate(ids, 3).ids.shape == (2, 3)
