"""Reading .safetensors checkpoints ourselves: the header checked before any tensor is
read, one tensor read at a time, and every dtype Hugging Face writes, whether or not NumPy
knows it (bf16 is most of today's checkpoints; NumPy has no bfloat16).

    file = u64 little-endian N | N bytes of JSON header | data
    header = {name: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
              "__metadata__": {str: str}}

bf16 and fp8 tensors are decoded to the float32 of their values (exactly: every bf16 and
fp8 value is a float32 value), so a bf16 checkpoint computes as the fp32 of its weights.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dsl.errors import ArchError
from ..dsl.files import bounded_json, open_regular

MAX_HEADER = 100_000_000
# safetensors dtype -> (NumPy storage dtype, decoder to the computed dtype or None)
STORAGE = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "F8_E4M3": "u1",
           "F8_E5M2": "u1", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


@dataclass(frozen=True)
class Entry:
    dtype: str                 # the file's dtype name ("BF16")
    shape: tuple[int, ...]
    begin: int                 # byte offsets from the start of the file
    end: int


def _fp8_table(exp_bits: int, man_bits: int, finite_only: bool) -> np.ndarray:
    """float32 value of each of the 256 fp8 codes (E4M3 "fn": no infinities, one NaN
    pattern per sign; E5M2: IEEE-style infinities and NaNs)."""
    bias = (1 << (exp_bits - 1)) - 1
    out = np.empty(256, np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> man_bits) & ((1 << exp_bits) - 1)
        m = code & ((1 << man_bits) - 1)
        top = (1 << exp_bits) - 1
        if finite_only and e == top and m == (1 << man_bits) - 1:
            v = math.nan
        elif not finite_only and e == top:
            v = math.inf if m == 0 else math.nan
        elif e == 0:
            v = m / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
        out[code] = sign * v
    return out


_FP8 = {"F8_E4M3": lambda: _fp8_table(4, 3, True), "F8_E5M2": lambda: _fp8_table(5, 2, False)}


def decode(raw: np.ndarray, dtype: str) -> np.ndarray:
    """The tensor's values from its stored bits: bf16 and fp8 as float32, others as they
    are."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in _FP8:
        return _FP8[dtype]()[raw]
    if dtype == "BOOL":
        return raw.view(np.uint8) != 0     # a byte other than 0/1 is still a plain bool
    return raw


def read_header(path: Path) -> dict[str, Entry]:
    """The tensors a file holds, every entry checked against the file's size: a known
    dtype, a shape of whole numbers, and offsets inside the data, of the shape's size, not
    overlapping another tensor."""
    bad = f"weights {path} is not a safetensors file"
    hint = "save weights with safetensors.numpy.save_file or save_pretrained(" \
           "safe_serialization=True)"
    with open_regular(path, "weights") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArchError(f"{bad} (only {len(head)} bytes)", hint=hint)
        n = int.from_bytes(head, "little")
        size = f.seek(0, 2)
        if n > size - 8 or n > MAX_HEADER:
            raise ArchError(f"{bad}, or it is truncated (its header claims {n} bytes)",
                            hint=hint)
        f.seek(8)
        text = f.read(n)
    header = bounded_json(text, f"weights {path}'s header")
    if not isinstance(header, dict):
        raise ArchError(f"{bad}: its header is not a JSON object", hint=hint)
    data = size - 8 - n
    entries: dict[str, Entry] = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, e, data, 8 + n)
    spans = sorted((e.begin, e.end, k) for k, e in entries.items() if e.end > e.begin)
    for (b0, e0, k0), (b1, _, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ArchError(f"weights {path} is corrupted: tensors {k0} and {k1} overlap")
    return entries


def _entry(path: Path, name: str, e, data: int, base: int) -> Entry:
    where = f"weights {path}: tensor {name}"
    if not isinstance(e, dict):
        raise ArchError(f"{where}: its header entry is not an object")
    dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in STORAGE:
        raise ArchError(f"{where} has dtype {dtype!r}, which archc cannot read",
                        hint="readable: " + ", ".join(STORAGE))
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise ArchError(f"{where}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offs, list) and len(offs) == 2 and
            all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
        raise ArchError(f"{where}: data_offsets {offs!r} are not [begin, end]")
    begin, end = offs
    if not 0 <= begin <= end <= data:
        raise ArchError(f"weights {path} is corrupted or truncated: tensor {name}'s bytes "
                        f"{begin}..{end} are outside the {data:,} bytes of data")
    need = math.prod(shape) * np.dtype(STORAGE[dtype]).itemsize
    if end - begin != need:
        raise ArchError(f"{where}: shape {shape} of {dtype} needs {need:,} bytes, the "
                        f"header gives it {end - begin:,}")
    return Entry(dtype, tuple(shape), base + begin, base + end)


def read_tensor(path: Path, e: Entry) -> np.ndarray:
    """One tensor, freshly read from the file and decoded (bf16/fp8 -> float32)."""
    storage = np.dtype(STORAGE[e.dtype])
    count = (e.end - e.begin) // storage.itemsize
    try:
        with open_regular(path, "weights") as f:
            f.seek(e.begin)
            raw = np.fromfile(f, storage, count) if count else np.empty(0, storage)
    except OSError as err:
        raise ArchError(f"cannot read weights {path}: {err.strerror or err}") from None
    if raw.size != count:
        raise ArchError(f"weights {path} is truncated (tensor at byte {e.begin})")
    return decode(raw, e.dtype).reshape(e.shape)


class SafetensorsFiles(Mapping):
    """The tensors of one or more .safetensors files, read one at a time when looked up:
    each lookup returns a fresh array that nothing here keeps, so a loader converting
    tensor by tensor holds at most one raw checkpoint tensor beside the parameters it has
    made, never the whole file. Iteration and `in` read only headers."""

    def __init__(self, paths) -> None:
        self.where: dict[str, Path] = {}           # tensor name -> file (last file wins)
        self.entries: dict[str, Entry] = {}
        self.reads = 0                             # tensors read so far (tests count them)
        for p in paths:
            for name, e in read_header(Path(p)).items():
                self.where[name] = Path(p)
                self.entries[name] = e

    def __getitem__(self, name: str) -> np.ndarray:
        arr = read_tensor(self.where[name], self.entries[name])
        self.reads += 1
        return arr

    def dtype_of(self, name: str) -> str:
        """The file's dtype name of a tensor ("BF16"), without reading it."""
        return self.entries[name].dtype

    def __iter__(self):
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, name) -> bool:
        return name in self.where
