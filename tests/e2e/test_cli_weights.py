"""`check`, `dump` and `stats` with --weights: the sizes come from the checkpoint's
config.json (as `run` takes them), and `check` matches its tensors from the headers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
EX = ROOT / "examples"


def archc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def checkpoint_params(family: str) -> int:
    return sum(t.size for t in load_file(FIX / family / "model.safetensors").values())


def test_check_takes_the_sizes_and_matches_the_tensors():
    proc = archc("check", EX / "bert.arch", "--weights", FIX / "bert")
    assert proc.returncode == 0, proc.stderr
    assert f"{checkpoint_params('bert'):,} parameters" in proc.stdout    # not BERT-base's
    assert proc.stdout.rstrip().endswith(f"weights {FIX / 'bert'} fill 39 of 39 parameters")


def test_check_reports_a_checkpoint_that_does_not_fit():
    proc = archc("check", EX / "llama.arch", "-w", FIX / "llama", "--set", "d_ff=100")
    assert proc.returncode == 2
    assert "do not match the model" in proc.stderr
    assert ("mis-shaped: model.layers.0.mlp.up_proj.weight is [96, 64] in the file, "
            "transpose(layers.0.mlp.up.weight) needs [100, 64]") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dump_and_stats_show_the_checkpoints_size():
    n = checkpoint_params("llama")
    proc = archc("dump", EX / "llama.arch", "-w", FIX / "llama")
    assert proc.returncode == 0, proc.stderr
    assert f"parameters: {n:,}" in proc.stdout
    proc = archc("stats", EX / "gpt2.arch", "-w", FIX / "gpt2", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == "archc.stats/1" and doc["model"] == "gpt2"
    assert doc["total"]["params"] == checkpoint_params("gpt2") \
        == sum(r["params"] for r in doc["layers"])
    assert doc["seq"] == doc["max_seq"] == 64          # the checkpoint's n_positions, not 1024
    assert doc["total"]["kv_bytes"] > 0 and doc["total"]["flops_per_token"] > 0


def test_stats_json_agrees_with_the_text_table():
    text = archc("stats", EX / "gpt2.arch", "-w", FIX / "gpt2").stdout
    doc = json.loads(archc("stats", EX / "gpt2.arch", "-w", FIX / "gpt2", "-f", "json").stdout)
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split()[1] == f"{doc['total']['params']:,}"
    assert [r["name"] for r in doc["layers"]] == [
        line.split()[0] for line in text.splitlines()[2:2 + len(doc["layers"])]]
    weights = next(line for line in text.splitlines() if line.startswith("weights:"))
    assert doc["weights"] and all(f"{dtype} {w['values']:,} values" in weights
                                  for dtype, w in doc["weights"].items())


def test_dump_output_may_not_overwrite_the_checkpoint(tmp_path):
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes((FIX / "gpt2" / "model.safetensors").read_bytes())
    before = ckpt.read_bytes()
    proc = archc("dump", EX / "gpt2.arch", "-w", ckpt, "--set", "n_layer=2", "--set",
                 "d_model=64", "-o", ckpt)
    assert proc.returncode == 2 and ckpt.read_bytes() == before
    assert np.frombuffer(before[:8], "<u8")[0] > 0
