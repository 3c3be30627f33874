"""`archc import`: a .arch from a checkpoint folder's config.json and tensor names, for every
family archc supports; the file runs on the checkpoint and matches transformers."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import archc
from archc.dsl.errors import ArchError
from archc.importer import FAMILIES, import_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
INPUTS = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "types",
          "decoder_input_ids": "decoder_ids", "global_attention_mask": "global_mask"}
OUTPUTS = {"hidden": "last_hidden_state", "logits": "logits", "pooled": "pooler_output",
           "encoder": "encoder_last_hidden_state"}


def matches(arch: Path, ckpt: Path, io) -> int:
    """Run the imported file on the checkpoint; every output transformers gave agrees."""
    model = archc.load(arch, weights=ckpt)
    inputs = {INPUTS[k]: io[k] for k in INPUTS if k in io and INPUTS[k] in model.inputs}
    if "decoder_mask" in model.inputs:
        inputs["decoder_mask"] = np.ones_like(inputs["decoder_ids"])
    out = model.run(inputs, executor="reference")
    compared = 0
    for ours, theirs in OUTPUTS.items():
        if theirs in io and ours in out:
            np.testing.assert_allclose(out[ours], io[theirs], atol=1e-4, err_msg=ours)
            compared += 1
    return compared


FIXTURES = ["gpt2", "bert", "t5", "t5_gated", "llama", "mistral", "qwen2", "gpt_neox",
            "falcon", "longformer", "switch", "mixtral", "llama_tied", "mistral_nowindow"]


@pytest.mark.parametrize("family", FIXTURES)
def test_every_family_imports_and_matches_transformers(family, tmp_path):
    text = import_checkpoint(FIX / family)
    assert text.startswith(f"# Imported by `archc import` from {family}, a Hugging Face ")
    (tmp_path / "m.arch").write_text(text)
    assert matches(tmp_path / "m.arch", FIX / family, np.load(FIX / family / "io.npz")) >= 2


def test_the_config_block_is_the_checkpoints(tmp_path):
    text = import_checkpoint(FIX / "mistral")
    assert re.search(r"\n    n_layer = 2 +# config.json num_hidden_layers\n", text)
    assert re.search(r"\n    window = 4 +# config.json sliding_window\n", text)
    assert "Defaults are" not in text
    # Mistral v0.2: sliding_window null turns the window off (not the .arch default)
    assert re.search(r"\n    window = none +# config.json sliding_window\n",
                     import_checkpoint(FIX / "mistral_nowindow"))
    assert re.search(r"\n    tied = true +# config.json tie_word_embeddings\n",
                     import_checkpoint(FIX / "qwen2"))


def copy_checkpoint(tmp_path, family, config=None, rename=None) -> Path:
    d = tmp_path / f"{family}-variant"
    d.mkdir()
    cfg = json.loads((FIX / family / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    tensors = load_file(FIX / family / "model.safetensors")
    save_file({(rename(k) if rename else k): v for k, v in tensors.items()},
              d / "model.safetensors")
    return d


def test_a_task_head_model_gets_skips_for_its_head(tmp_path):
    # BertForMaskedLM's checkpoint: `bert.` before every name, and a head archc's bert lacks
    d = copy_checkpoint(tmp_path, "bert", rename=lambda k: f"bert.{k}")
    tensors = load_file(d / "model.safetensors")
    tensors["cls.predictions.bias"] = np.zeros(128, np.float32)
    tensors["cls.predictions.transform.dense.weight"] = np.zeros((64, 64), np.float32)
    save_file(tensors, d / "model.safetensors")
    text = import_checkpoint(d)
    assert ('    "cls.predictions.bias" -> skip\n'
            '    "cls.predictions.transform.dense.weight" -> skip\n}') in text
    (tmp_path / "m.arch").write_text(text)
    assert matches(tmp_path / "m.arch", d, np.load(FIX / "bert" / "io.npz")) == 2  # + pooled


def test_a_flag_the_architecture_cannot_honour_is_named(tmp_path):
    d = copy_checkpoint(tmp_path, "falcon", config={"new_decoder_architecture": True})
    with pytest.raises(ArchError) as e:
        import_checkpoint(d)
    assert "new_decoder_architecture" in e.value.message


def test_an_unknown_model_type_lists_the_known_ones(tmp_path):
    d = copy_checkpoint(tmp_path, "gpt2", config={"model_type": "gpt_bigcode"})
    with pytest.raises(ArchError) as e:
        import_checkpoint(d)
    assert e.value.message == ("config.json's model_type is 'gpt_bigcode', which "
                               "`archc import` does not know")
    assert e.value.hint == "known: " + ", ".join(sorted(FAMILIES))
    assert {"gpt2", "bert", "t5", "llama", "mistral", "mixtral", "qwen2", "falcon", "gpt_neox",
            "longformer", "switch_transformers"} <= set(FAMILIES)


def test_the_command_line(tmp_path):
    out = tmp_path / "llama.arch"
    proc = subprocess.run([sys.executable, "-m", "archc", "import", str(FIX / "llama"), "-o",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == import_checkpoint(FIX / "llama")
    io = np.load(FIX / "llama" / "io.npz")
    np.save(tmp_path / "ids.npy", io["input_ids"])
    proc = subprocess.run([sys.executable, "-m", "archc", "run", str(out), "-w",
                           str(FIX / "llama"), "-i", str(tmp_path / "ids.npy"), "-o",
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"], io["logits"],
                               atol=1e-4)
    bad = subprocess.run([sys.executable, "-m", "archc", "import", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
