"""Safetensors read by archc itself: every dtype (bf16 and fp8 decoded to the float32 of
their values, without NumPy knowing them), headers checked before a tensor is read, and a
bf16 checkpoint computing exactly as the fp32 one holding the same values."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import archc
from archc.dsl.errors import ArchError
from archc.runtime.checkpoint import read_checkpoint
from archc.runtime.safetensors import SafetensorsFiles, decode

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"


def write(path: Path, tensors: dict[str, tuple[str, np.ndarray]], header_extra=None) -> None:
    """A .safetensors file from (dtype name, raw array) pairs, written by hand."""
    header, blobs, off = {}, [], 0
    for name, (dtype, raw) in tensors.items():
        b = np.ascontiguousarray(raw).tobytes()
        header[name] = {"dtype": dtype, "shape": list(raw.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits, rounding to nearest even (what torch does)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def test_each_dtype_decodes_to_its_values(tmp_path):
    x = np.array([[0.0, -1.5, 3.140625], [1e-3, 65504.0, -2.0]], np.float32)
    write(tmp_path / "w.safetensors", {
        "f32": ("F32", x), "f16": ("F16", x.astype(np.float16)), "bf16": ("BF16", to_bf16(x)),
        "i64": ("I64", np.arange(4)), "b": ("BOOL", np.array([True, False])),
        "e4m3": ("F8_E4M3", np.array([0x00, 0x38, 0xB8, 0x7E, 0x01, 0x7F], np.uint8)),
        "e5m2": ("F8_E5M2", np.array([0x3C, 0x7C, 0xFC, 0x01], np.uint8))})
    t = SafetensorsFiles([tmp_path / "w.safetensors"])
    np.testing.assert_array_equal(t["f32"], x)
    np.testing.assert_array_equal(t["f16"], x.astype(np.float16))
    bf = t["bf16"]
    assert bf.dtype == np.float32
    np.testing.assert_allclose(bf, x, rtol=2 ** -8)
    np.testing.assert_array_equal(bf[0], [0.0, -1.5, 3.140625])      # exact in bf16
    np.testing.assert_array_equal(t["i64"], np.arange(4))
    np.testing.assert_array_equal(t["b"], [True, False])
    e4 = t["e4m3"]
    np.testing.assert_array_equal(e4[:5], [0.0, 1.0, -1.0, 448.0, 2.0 ** -9])
    assert np.isnan(e4[5])
    np.testing.assert_array_equal(t["e5m2"][:3], [1.0, np.inf, -np.inf])
    assert t["e5m2"][3] == 2.0 ** -16
    assert t.dtype_of("bf16") == "BF16" and t.reads == 8


def test_reads_what_safetensors_writes(tmp_path):
    arrs = {"a": np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32),
            "b": np.arange(6, dtype=np.int32).reshape(2, 3)}
    save_file(arrs, str(tmp_path / "w.safetensors"))
    t = SafetensorsFiles([tmp_path / "w.safetensors"])
    for k, v in load_file(str(tmp_path / "w.safetensors")).items():
        np.testing.assert_array_equal(t[k], v)


@pytest.mark.parametrize("entry, message", [
    ({"dtype": "Q4_K", "shape": [1], "data_offsets": [0, 4]}, "cannot read"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "needs 8 bytes"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "outside the"),
    ({"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}, "not a list of sizes"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "are not \\[begin, end\\]"),
])
def test_bad_headers_are_clear_errors(tmp_path, entry, message):
    h = json.dumps({"t": entry}).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 4)
    with pytest.raises(ArchError, match=message):
        SafetensorsFiles([tmp_path / "w.safetensors"])


def test_overlapping_tensors_and_deep_headers_are_refused(tmp_path):
    h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 12)
    with pytest.raises(ArchError, match="overlap"):
        SafetensorsFiles([tmp_path / "w.safetensors"])
    deep = b"[" * 100_000 + b"]" * 100_000
    (tmp_path / "d.safetensors").write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(ArchError, match="nested more than"):
        SafetensorsFiles([tmp_path / "d.safetensors"])


@pytest.mark.parametrize("name, text, message", [
    ("config.json", "[" * 100_000 + "]" * 100_000, "nested more than"),
    ("model.safetensors.index.json", '{"weight_map": ["a"]}', "must map tensor names"),
    ("model.safetensors.index.json", '{"weight_map": {"a": 3}}', "must map tensor names"),
    ("model.safetensors.index.json", '{"metadata": {}}', "must map tensor names"),
    ("config.json", "{not json", "not valid JSON"),
])
def test_checkpoint_json_is_bounded_and_checked(tmp_path, name, text, message):
    save_file({"a": np.ones(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / name).write_text(text)
    with pytest.raises(ArchError, match=message):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_bf16_checkpoint_computes_as_the_fp32_of_its_values(tmp_path, family):
    src = FIX / family
    tensors = load_file(str(src / "model.safetensors"))
    bf16 = {k: to_bf16(v) if v.dtype == np.float32 else v for k, v in tensors.items()}
    for d in ("bf16", "f32", "f16"):
        shutil.copytree(src, tmp_path / d)
    write(tmp_path / "bf16" / "model.safetensors",
          {k: ("BF16" if v.dtype == np.uint16 else "I64", v) for k, v in bf16.items()})
    save_file({k: decode(v, "BF16") if v.dtype == np.uint16 else v for k, v in bf16.items()},
              str(tmp_path / "f32" / "model.safetensors"))
    save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v
               for k, v in tensors.items()}, str(tmp_path / "f16" / "model.safetensors"))
    io = np.load(src / "io.npz")
    ids = io["input_ids"]
    outs = {}
    for d in ("bf16", "f32", "f16"):
        m = archc.load(ROOT / "examples" / f"{family}.arch", weights=tmp_path / d)
        assert [w for w in m.warnings if "loses precision" in w] == [] or d == "f16"
        outs[d] = m.run(ids=ids, executor="reference")["logits"]
    np.testing.assert_array_equal(outs["bf16"], outs["f32"])
    # fp16 weights run too, as close as fp16's 11 bits allow
    assert np.abs(outs["f16"] - io["logits"]).max() < 5e-3 * np.abs(io["logits"]).max()


@pytest.mark.parametrize("dtype, storage", [
    ("I8", np.int8), ("I16", np.int16), ("I32", np.int32), ("I64", np.int64),
    ("U8", np.uint8), ("U16", np.uint16), ("U32", np.uint32), ("U64", np.uint64)])
def test_integer_dtypes_keep_their_values_and_type(tmp_path, dtype, storage):
    info = np.iinfo(storage)
    x = np.array([[info.min, 0], [1, info.max]], storage)
    write(tmp_path / "w.safetensors", {"t": (dtype, x)})
    got = SafetensorsFiles([tmp_path / "w.safetensors"])["t"]
    assert got.dtype == storage
    np.testing.assert_array_equal(got, x)


def test_bool_bytes_other_than_one_are_true(tmp_path):
    write(tmp_path / "w.safetensors", {"b": ("BOOL", np.array([0, 1, 2, 255], np.uint8))})
    got = SafetensorsFiles([tmp_path / "w.safetensors"])["b"]
    assert got.dtype == np.bool_ and got.tolist() == [False, True, True, True]


def test_every_fp8_code_decodes_like_the_formats_define(tmp_path):
    codes = np.arange(256, dtype=np.uint8)
    e4, e5 = decode(codes, "F8_E4M3"), decode(codes, "F8_E5M2")
    # E4M3 "fn": only S.1111.111 is NaN, 448 the largest; E5M2 has +-inf and 6 NaNs a sign
    assert np.isnan(e4).sum() == 2 and np.nanmax(e4) == 448 and not np.isinf(e4).any()
    assert np.isinf(e5).sum() == 2 and np.isnan(e5).sum() == 6 and \
        np.nanmax(e5[np.isfinite(e5)]) == 57344
    # E5M2 is the top byte of an fp16
    f16 = (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(e5, f16)


def _file(tmp_path) -> bytes:
    write(tmp_path / "w.safetensors", {"a": ("F32", np.ones(4, np.float32)),
                                       "b": ("F32", np.ones(2, np.float32))})
    return (tmp_path / "w.safetensors").read_bytes()


@pytest.mark.parametrize("cut, message", [
    (lambda n: 5, "only 5 bytes"),
    (lambda n: 8 + n - 1, "truncated \\(its header claims"),
    (lambda n: 8 + n + 20, "corrupted or truncated: tensor b's bytes 16..24 are outside "
                           "the 20 bytes of data"),
])
def test_a_truncated_file_is_a_clear_error(tmp_path, cut, message):
    data = _file(tmp_path)
    n = int.from_bytes(data[:8], "little")
    (tmp_path / "w.safetensors").write_bytes(data[:cut(n)])
    with pytest.raises(ArchError, match=message):
        SafetensorsFiles([tmp_path / "w.safetensors"])


def test_a_file_truncated_after_its_header_was_read(tmp_path):
    data = _file(tmp_path)
    t = SafetensorsFiles([tmp_path / "w.safetensors"])
    (tmp_path / "w.safetensors").write_bytes(data[:-4])
    with pytest.raises(ArchError, match="truncated \\(tensor at byte"):
        t["b"]


@pytest.mark.parametrize("dtype", [["F32"], None, 32, "f32", "F4"])
def test_a_dtype_archc_cannot_read_is_named(tmp_path, dtype):
    h = json.dumps({"t": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 4)
    with pytest.raises(ArchError, match="tensor t has dtype .* which archc cannot read") as e:
        SafetensorsFiles([tmp_path / "w.safetensors"])
    assert "BF16" in e.value.hint
