"""`archc run --tap`: named values inside repeats, and MoE routers' chosen experts, as extra
outputs of the .npz, checked against transformers' own values (fixtures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_switch_routers_are_transformers_choices(tmp_path):
    z = np.load(FIX / "switch" / "io.npz")
    np.savez(tmp_path / "in.npz", ids=z["input_ids"], mask=z["attention_mask"],
             decoder_ids=z["decoder_input_ids"],
             decoder_mask=np.ones_like(z["decoder_input_ids"]))
    proc = run(ROOT / "examples" / "switch.arch", "-w", FIX / "switch", "-i",
               tmp_path / "in.npz", "--tap", "*.layers.*.mlp.router", "--tap",
               "encoder.layers.0", "-o", tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    meta = json.loads((FIX / "switch" / "meta.json").read_text())["stats"]["switch_routing"]
    for stack, hf in zip(("encoder", "decoder"), meta):
        got = out[f"{stack}.layers.1.mlp.router"][..., 0]          # top-1: (B, T)
        want = np.array(hf["expert_choice"])
        for b, t in hf["dropped_tokens_batch_pos"]:
            want[b, t] = -1                                         # over capacity
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(out["encoder.layers.0"], z["encoder_all_hidden_states"][1],
                               atol=1e-4)
    np.testing.assert_allclose(out["logits"], z["logits"], atol=1e-4)


def test_a_layer_inside_a_repeat_through_the_api():
    z = np.load(FIX / "mixtral" / "io.npz")
    model = archc.load(ROOT / "examples" / "mixtral.arch", weights=FIX / "mixtral")
    taps = ["layers.0", "layers.*.moe.router"]
    fast = model.run(ids=z["input_ids"], taps=taps)
    ref = model.run(ids=z["input_ids"], taps=taps, executor="reference")
    assert sorted(fast) == sorted(ref) == ["hidden", "layers.0", "layers.0.moe.router",
                                           "layers.1.moe.router", "logits"]
    np.testing.assert_allclose(fast["layers.0"], z["all_hidden_states"][1], atol=1e-4)
    for name in ("layers.0.moe.router", "layers.1.moe.router"):
        np.testing.assert_array_equal(fast[name], ref[name])
        assert fast[name].shape == z["input_ids"].shape + (2,)
    assert sorted(model.run(ids=z["input_ids"])) == ["hidden", "logits"]    # untouched


def test_an_unknown_tap_is_a_user_error(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[1, 2]]))
    proc = run(ROOT / "examples" / "gpt2.arch", "-w", FIX / "gpt2", "-i", tmp_path / "ids.npy",
               "--tap", "layers.0.mpl")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--tap layers.0.mpl: the model has no value of that name" in proc.stderr
    assert "did you mean `layers.0.mlp`?" in proc.stderr


def test_taps_with_packed_weights(arch_file):
    """A tapped model compiles its own graph: the packed-weights load keeps the untapped
    model's optimised graph, which has no tap outputs."""
    model = archc.load(arch_file("""
        model m(x: float[B, T, 32]) {
            repeat 2 as layers {
                x = x + FFN(RMSNorm(x) as norm, 64) as ffn
            }
            return y = x
        }
        """), weights_dtype="bf16", seed=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 32)).astype(np.float32)
    fast = model.run(x=x, taps=["layers.0.ffn"])
    ref = model.run(x=x, taps=["layers.0.ffn"], executor="reference")
    assert sorted(fast) == ["layers.0.ffn", "y"]
    np.testing.assert_allclose(fast["layers.0.ffn"], ref["layers.0.ffn"], atol=1e-4)
