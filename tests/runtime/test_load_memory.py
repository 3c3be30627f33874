"""Weights held once: a checkpoint is converted tensor by tensor (never whole in memory beside
the parameters), and the compiled executor's concatenated layouts (QKV, gate/up) replace the
parameters they are made of instead of sitting beside them."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import archc
from archc.runtime.checkpoint import read_checkpoint
from archc.runtime.weights import apply_weights

ROOT = Path(__file__).resolve().parents[2]

D, LAYERS = 256, 6
MODEL = f"""
config {{ d = {D}  n_layer = {LAYERS} }}
model m(x: float[T, d]) {{
    param w: float[d, d] = normal(0.02)
    repeat n_layer as layers {{
        layer attn {{
            param q: float[d, d] = normal(0.02)
            param k: float[d, d] = normal(0.02)
            param o: float[d, d] = normal(0.02)
        }}
    }}
    return y = x @ w
}}
weights hf {{
    "w" -> transpose(w)
    "h.{{i}}.qk" -> split(layers.{{i}}.attn.q, layers.{{i}}.attn.k, axis=1)
    "h.{{i}}.o" -> transpose(layers.{{i}}.attn.o)
}}
"""


def _checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    t = {"w": rng.standard_normal((D, D), np.float32)}
    for i in range(LAYERS):
        t[f"h.{i}.qk"] = rng.standard_normal((D, 2 * D), np.float32)
        t[f"h.{i}.o"] = rng.standard_normal((D, D), np.float32)
    save_file(t, str(tmp_path / "w.safetensors"))
    (tmp_path / "m.arch").write_text(MODEL)
    return t


def test_checkpoint_is_converted_one_tensor_at_a_time(tmp_path):
    t = _checkpoint(tmp_path)
    m = archc.load(tmp_path / "m.arch")                      # the graph, random weights
    mapping = m.graph.meta["weight_maps"]["hf"]
    largest = max(a.nbytes for a in t.values())
    tracemalloc.start()
    try:
        ckpt = read_checkpoint(tmp_path / "w.safetensors")
        params, _ = apply_weights(m.graph, ckpt.tensors, mapping=mapping)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(a.nbytes for a in params.values())
    assert held == sum(a.nbytes for a in t.values())
    # the parameters plus one raw tensor being split (its pieces are copies); reading the
    # whole file first would hold twice the parameters
    assert peak <= held + largest + (256 << 10), (peak, held, largest)
    assert ckpt.tensors.reads == len(t)
    # the values are the checkpoint's, through the transforms
    np.testing.assert_array_equal(params["w"], t["w"].T)
    np.testing.assert_array_equal(params["layers.3.attn.o"], t["h.3.o"].T)
    np.testing.assert_array_equal(params["layers.2.attn.k"], t["h.2.qk"][:, D:])


def test_transposed_matrix_is_not_copied_at_load_or_compile(tmp_path):
    t = _checkpoint(tmp_path)
    m = archc.load(tmp_path / "m.arch", weights=tmp_path / "w.safetensors")
    w = m.params["w"]
    assert w.flags.f_contiguous and not w.flags.owndata      # a view of the tensor read
    ex = m.compiled()
    assert ex.weights["w"] is w and m.params["w"] is w       # already output-major
    x = np.random.default_rng(1).standard_normal((3, D)).astype(np.float32)
    np.testing.assert_allclose(m.run(x=x, executor="reference")["y"], x @ t["w"].T,
                               rtol=1e-5, atol=1e-6)


def _bases(arrays) -> dict[int, int]:
    out = {}
    for a in arrays:
        while isinstance(a.base, np.ndarray):
            a = a.base
        out[id(a)] = a.nbytes
    return out


def test_concatenated_layouts_replace_their_parameters():
    """LLaMA's QKV and gate/up concatenations: after compiling, the parameters they are
    made of are views into them, so the process holds each weight once."""
    cfg = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=96, vocab=128)
    m = archc.load(ROOT / "examples" / "llama.arch", config=cfg, seed=3)
    before = {k: v.copy() for k, v in m.params.items()}
    ids = np.random.default_rng(0).integers(0, 128, (1, 7))
    ref = m.run(ids=ids, executor="reference")["logits"]
    ex = m.compiled()
    concats = [v for n, v in ex.folded_values.items() if ex.graph.node(n).op == "concat"]
    assert concats, "the fusion passes made no concatenated weights"
    for name in ("layers.0.attn.q.weight", "layers.1.mlp.gate.weight"):
        assert name in m.params
        assert any(np.shares_memory(m.params[name], c) for c in concats), name
        assert ex.weights[name] is m.params[name]
    # every weight once: params, executor weights and layouts share their bytes
    alive = list(m.params.values()) + list(ex.weights.values()) + [
        v for v in ex.folded_values.values() if isinstance(v, np.ndarray)]
    assert sum(_bases(alive).values()) == sum(a.nbytes for a in before.values())
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v, err_msg=k)
    # both executors still compute the model from the shared weights
    np.testing.assert_allclose(m.run(ids=ids, executor="reference")["logits"], ref,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.run(ids=ids, executor="numba")["logits"], ref,
                               rtol=1e-4, atol=1e-5)
