"""The compiled executor equals the reference executor on every example model, runs in its
planned arena, and keeps `archc check` free of Numba."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.runtime import lanes as lanes_mod
from archc.api import executor
from archc.runtime.executor import Profile

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
INPUT_NAMES = {"ids": "input_ids", "mask": "attention_mask", "types": "token_type_ids",
               "decoder_ids": "decoder_input_ids", "decoder_mask": "decoder_attention_mask",
               "global_mask": "global_attention_mask"}
# examples without a fixture: tiny configs
TINY = {
    "palm": dict(n_layer=2, d_model=32, n_head=4, head_dim=8, d_ff=64, vocab=64),
    "memory": dict(n_layers=2, n_heads=2, d_model=32, n_mem=4, n_keys=8, topk=4, pkm_heads=2,
                   vocab=64, n_ctx=32),
    "retro": dict(n_layers=2, n_enc_layers=1, n_heads=2, d_model=32, d_ff=64, vocab=64,
                  n_ctx=32, chunk=4),
}


def _inputs(model, fam, rng):
    names = {model.graph.node(n).attrs["name"]: model.graph.node(n) for n in model.graph.inputs}
    z = np.load(FIXTURES / fam / "io.npz") if (FIXTURES / fam).is_dir() else {}
    if z and all(INPUT_NAMES.get(n, n) in z for n in names):
        out = {n: z[INPUT_NAMES.get(n, n)] for n in names}
        if "decoder_mask" in names and "decoder_attention_mask" not in z:
            out["decoder_mask"] = np.ones_like(out["decoder_ids"])
        return out
    sizes = {"B": 2, "T": 8, "S": 8, "C": 2, "K": 2, "R": 8}
    out = {}
    for n, node in names.items():
        shape = tuple(d if isinstance(d, int) else d.evaluate(sizes) for d in node.shape)
        out[n] = (rng.integers(0, 2, shape) if "mask" in n else rng.integers(0, 16, shape))
    return out


def _examples():
    for p in sorted((ROOT / "examples").glob("*.arch")):
        yield pytest.param(p.stem, id=p.stem)


def _example(fam):
    """(model, inputs) of an example: its fixture, or a tiny config; skips without one."""
    rng = np.random.default_rng(0)
    path = ROOT / "examples" / f"{fam}.arch"
    if fam == "ffn":
        model = archc.load(path)
        inputs = {"x": np.load(ROOT / "examples" / "ffn_input.npy")}
    elif (FIXTURES / fam).is_dir():
        model = archc.load(path, weights=FIXTURES / fam)
        inputs = _inputs(model, fam, rng)
    elif fam in TINY:
        try:
            model = archc.load(path, config=TINY[fam])
        except archc.ArchError as e:
            pytest.skip(f"tiny config does not fit {fam}: {e.message}")
        inputs = _inputs(model, fam, rng)
    else:
        pytest.skip(f"no small configuration known for {fam}")
    return model, inputs


@pytest.mark.parametrize("fam", list(_examples()))
def test_example_matches_reference(fam):
    model, inputs = _example(fam)
    want = model.run(inputs, executor="reference")
    ex = executor(model.graph, model.params)
    got = ex.run(inputs)
    # every buffer came from the compiler's memory plan; no op fell back to its ref_
    prog = next(iter(ex._programs.values()))
    assert not prog.unplanned
    assert not [s.op for s in prog.steps if s.op.endswith("(ref)")]
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=0, err_msg=k)


@pytest.mark.parametrize("fam", list(_examples()))
def test_example_matches_reference_in_lanes(fam, monkeypatch):
    # two lanes cutting every product, norm and attention however small (runtime/lanes.py):
    # the same answers as the reference
    model, inputs = _example(fam)
    monkeypatch.setattr(lanes_mod, "MIN_LANE_FLOPS", 0)
    monkeypatch.setattr(lanes_mod, "MIN_LANE_ELEMENTS", 0)
    monkeypatch.setattr(lanes_mod, "COLUMN_ALIGN", 1)
    want = model.run(inputs, executor="reference")
    ex = executor(model.graph, model.params, threads=2)
    if ex.lanes is None:
        pytest.skip("one core: no lanes")
    got = ex.run(inputs)
    prog = next(iter(ex._programs.values()))
    assert not prog.unplanned and prog.blas_threads == 1
    # the lanes hold the cores: lane 0's Numba kernels run on one thread, as the helpers'
    assert prog.uses_lanes == any(ex.lanes.is_lane_step(s.fn) for s in prog.steps)
    assert prog.numba_threads == (1 if prog.uses_lanes or prog.uses_blas else 2)
    # no matrix product or norm of the dense layers ran outside the lanes (a product of
    # <= 4 rows is the decode kernel, gemv_t, on every core; attention's query blocks are
    # dealt to the lanes in test_prefill_attention.py)
    cut = ("linear", "linear_act", "linear_glu", "ffn", "add_layernorm", "add_rmsnorm",
           "layernorm", "rmsnorm")
    assert fam == "ffn" or any(s.fn == ex.lanes.run for s in prog.steps)   # ffn: 3 rows
    # the products: column items the lanes share out as they go
    assert fam == "ffn" or any(s.fn == ex.lanes.run_shared and s.op in cut
                               for s in prog.steps)
    alone = [(s.op, getattr(s.fn, "__name__", s.fn)) for s in prog.steps if s.op in cut and (
        s.fn in (np.dot, np.matmul) or getattr(s.fn, "__module__", "").endswith("norm"))]
    assert not alone
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=0, err_msg=k)


def test_program_is_reused_and_planned():
    model = archc.load(ROOT / "examples" / "gpt2.arch",
                       config=dict(n_layer=3, d_model=32, n_head=2, vocab=64, n_ctx=32))
    ex = executor(model.graph, model.params)
    ids = np.arange(10).reshape(2, 5)
    first = ex.run({"ids": ids})
    prog = ex.program({"B": 2, "T": 5})
    arena = prog.arena
    prof = Profile()
    second = ex.run({"ids": ids}, profile=prof)
    assert ex.program({"B": 2, "T": 5}) is prog and prog.arena is arena   # nothing rebuilt
    np.testing.assert_array_equal(first["logits"], second["logits"])
    assert prog.arena_bytes < prog.naive_bytes              # buffers are shared
    assert prof.calls["attention"] == 3 and prof.runs == 1
    assert "compile" in prof.table()


def test_check_and_dump_do_not_import_numba():
    code = ("import sys; from archc.cli import main; main(['check', 'examples/gpt2.arch']); "
            "main(['dump', 'examples/ffn.arch']); print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_cli_run_profile_and_executors(tmp_path):
    base = [sys.executable, "-m", "archc", "run", "examples/ffn.arch", "--input",
            "examples/ffn_input.npy"]
    fast = subprocess.run(base + ["--profile", "--threads", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    ref = subprocess.run(base + ["--executor", "reference"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert fast.returncode == 0 and ref.returncode == 0, fast.stderr + ref.stderr
    assert fast.stdout == ref.stdout
    assert "share" in fast.stderr and "compile" in fast.stderr


@pytest.mark.parametrize("index", ["1:3", "-2:"])
def test_slice_longer_than_the_bound_size_is_a_user_error(arch_file, index):
    # x[:, 1:3] / x[:, -2:] type as 2 positions; with T = 1 there is one (or none)
    from archc.dsl.errors import ArchError
    from archc.dsl.lower import lower
    g = lower(arch_file(f"model m(x: float[B, T, 4]) {{ return y = x[:, {index}] }}"))
    ex = executor(g, {})
    np.testing.assert_array_equal(ex.run({"x": np.arange(12.0).reshape(1, 3, 4)})["y"],
                                  np.arange(12.0).reshape(1, 3, 4)[:, 1:3])
    with pytest.raises(ArchError, match=r"axis of size 1 has [01] positions; the model's "
                                        r"shapes say 2") as e:
        ex.run({"x": np.zeros((1, 1, 4), np.float32)})
    assert e.value.span is not None and e.value.span.line == 1


def test_a_case_without_compiled_steps_runs_on_the_reference_and_says_so(tmp_path, capsys):
    # softmax is compiled over the last axis; over axis 0 it falls back, never silently
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[T, 4]) {\n    return y = softmax(x, axis=0)\n}\n")
    model = archc.load(src)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ex = model.compiled()
    for _ in range(2):
        np.testing.assert_allclose(ex.run({"x": x})["y"], model.run(x=x)["y"], rtol=1e-6)
    prog = next(iter(ex._programs.values()))
    assert list(prog.fallbacks.values()) == ["compiled for a float x over its last axis"]
    assert any(s.op == "softmax (ref)" for s in prog.steps)
    err = capsys.readouterr().err
    assert err.count("note: `softmax` runs on its NumPy reference") == 1
    assert f"{src}:2:" in err
