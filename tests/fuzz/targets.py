"""One fuzz target per kind of input archc reads: `.arch` text, `.npy` arrays, a safetensors
file's header, a checkpoint folder's config.json and its index. A target makes one case
from a seeded generator, gives it to archc, and returns: archc may succeed or raise
ArchError; any other exception is a bug (a crash the user would see as "internal error").

    case = TARGETS["index"](random.Random(7), workdir)    # writes the case, returns its path

Shared by the bounded test (test_fuzz.py, run in CI) and the long run (fuzz_arch.py).
The checkpoint targets start from a valid checkpoint of TINY, a model that uses what a
`weights` section can say (config keys with null=, prefix, require, split with heads,
transpose, skip), so mutations land on every reader before they can be refused.
"""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Callable

import numpy as np

import arch_mutations as m
from archc.dsl.errors import ArchError

TINY = """\
config {
    d = 4
    n_layer = 2
    heads = 2
    scale = 1.0
}
model tiny(x: float[T, d]) {
    param emb: float[d, d]
    repeat n_layer as layers {
        param q: float[d, d]
        param k: float[d, d]
        param b: float[d]
        x = relu(x @ q + b) @ k * scale
    }
    return y = x @ emb
}
weights hf {
    config d = "hidden_size"
    config n_layer = "num_layers"
    config scale = "scale", null=1.0
    prefix "model."
    require "kind" in ["tiny", "small"]
    "model.emb.weight" -> transpose(emb)
    "model.h.{i}.qk" -> split(transpose(layers.{i}.q), transpose(layers.{i}.k), axis=0,
                             heads=heads)
    "model.h.{i}.b" -> layers.{i}.b
    "model.h.{i}.extra" -> skip
}
"""
CONFIG = {"hidden_size": 4, "num_layers": 2, "scale": None, "kind": "tiny"}
DTYPES = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "I64", "I8", "U8", "BOOL",
          "F4", "Q8", "", 3, None]
ODD = [None, True, -1, 0, 2 ** 63, 10 ** 400, 1e308, float("nan"), "", "x" * 300, [],
       {}, [1, [2, [3]]], {"a": {"b": {}}}, "../../etc/passwd", "a/b", "\u0000"]


def tensors(rng: random.Random) -> dict[str, np.ndarray]:
    """A valid checkpoint of TINY (with a tensor the mapping skips)."""
    g = np.random.default_rng(rng.randrange(2 ** 32))
    out = {"model.emb.weight": g.standard_normal((4, 4)).astype(np.float32)}
    for i in range(2):
        out[f"model.h.{i}.qk"] = g.standard_normal((8, 4)).astype(np.float32)
        out[f"model.h.{i}.b"] = g.standard_normal(4).astype(np.float32)
        out[f"model.h.{i}.extra"] = np.zeros(3, np.float16)
    return out


def safetensors_bytes(ts: dict[str, np.ndarray], header_edit=None) -> bytes:
    """The file for these tensors, its header (a dict) passed through `header_edit`."""
    names = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
    header, data, at = {}, [], 0
    for name, arr in ts.items():
        raw = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [at, at + len(raw)]}
        data.append(raw)
        at += len(raw)
    header["__metadata__"] = {"format": "pt"}
    if header_edit is not None:
        header = header_edit(header)
    text = _dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(text)) + text + b"".join(data)


def _dumps(obj) -> str:
    try:
        return json.dumps(obj)
    except (ValueError, RecursionError):
        return "{}"


def mutate_json(obj, rng: random.Random, edits: int | None = None):
    """Replace, delete, wrap or nest random parts of a JSON value."""
    for _ in range(edits or rng.randint(1, 4)):
        obj = _edit(obj, rng, 0)
    return obj


def _edit(node, rng: random.Random, depth: int):
    if isinstance(node, dict) and node and rng.random() < 0.7 and depth < 6:
        key = rng.choice(sorted(node, key=str))
        roll = rng.random()
        if roll < 0.15:
            return {k: v for k, v in node.items() if k != key}
        if roll < 0.25:
            return {**node, rng.choice(["__metadata__", "", "x" * 200, key + "_"]):
                    rng.choice(ODD)}
        return {**node, key: _edit(node[key], rng, depth + 1)}
    if isinstance(node, list) and node and rng.random() < 0.7 and depth < 6:
        i = rng.randrange(len(node))
        out = list(node)
        out[i] = _edit(node[i], rng, depth + 1)
        if rng.random() < 0.2:
            out.append(rng.choice(ODD))
        return out
    roll = rng.random()
    if roll < 0.1:
        deep = rng.choice([50, 65, 200, 10_000])
        return json.loads("[" * deep + "]" * deep) if deep < 500 else {"deep": "[" * deep}
    if roll < 0.2 and isinstance(node, int) and not isinstance(node, bool):
        return rng.choice([node + 1, -node, node * 1000, 2 ** 64, -(2 ** 63)])
    return rng.choice(ODD + [node, str(node)])


def corrupt_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(b)) if b else 0
        roll = rng.random()
        if roll < 0.4 and b:
            b[k] = rng.randrange(256)
        elif roll < 0.6 and b:
            del b[k]
        elif roll < 0.8:
            del b[k:]
        else:
            b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(b)


# ---- the oracle ----------------------------------------------------------------------------

def load_tiny(work: Path, weights: Path) -> None:
    """Load TINY with these weights: success or ArchError, nothing else."""
    import archc
    model = work / "tiny.arch"
    if not model.exists():
        model.write_text(TINY)
    try:
        archc.load(model, weights=weights, max_memory="256M")
    except ArchError as e:
        e.render()


# ---- the targets ---------------------------------------------------------------------------

def target_arch(rng: random.Random, work: Path) -> Path:
    source = rng.choice(m.EXAMPLES)
    case = work / "case.arch"
    steps = [(rng.choice(m.OPS), rng.randrange(10_000), rng.randrange(10_000),
              rng.choice(m.VOCAB), bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))))
             for _ in range(rng.randint(1, 4))]
    case.write_bytes(m.mutate(source.read_text(), steps))
    m.check_arch(case, source)
    return case


def target_npy(rng: random.Random, work: Path) -> Path:
    g = np.random.default_rng(rng.randrange(2 ** 32))
    case = work / "case.npy"
    np.save(case, m.random_array(g))
    if rng.random() < 0.6:
        case.write_bytes(m.corrupt(case.read_bytes(), g))
    m.check_npy(case)
    return case


def target_safetensors(rng: random.Random, work: Path) -> Path:
    case = work / "case.safetensors"
    ts = tensors(rng)
    if rng.random() < 0.75:
        data = safetensors_bytes(ts, lambda h: mutate_json(h, rng))
    else:
        data = corrupt_bytes(safetensors_bytes(ts), rng)
    case.write_bytes(data)
    load_tiny(work, case)
    return case


def _folder(rng: random.Random, work: Path) -> Path:
    folder = work / "ckpt"
    folder.mkdir(exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    return folder


def target_config(rng: random.Random, work: Path) -> Path:
    folder = _folder(rng, work)
    (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors(rng)))
    text = _dumps(mutate_json(dict(CONFIG), rng)) if rng.random() < 0.8 else \
        corrupt_bytes(json.dumps(CONFIG).encode(), rng).decode("latin-1")
    (folder / "config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    load_tiny(work, folder)
    return folder / "config.json"


def target_index(rng: random.Random, work: Path) -> Path:
    folder = _folder(rng, work)
    ts = tensors(rng)
    names = sorted(ts)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, held in shards.items():
        (folder / shard).write_bytes(safetensors_bytes({n: ts[n] for n in held}))
    index = {"metadata": {"total_size": 1234},
             "weight_map": {n: s for s, held in shards.items() for n in held}}
    (folder / "config.json").write_text(json.dumps(CONFIG))
    text = _dumps(mutate_json(index, rng)) if rng.random() < 0.8 else \
        corrupt_bytes(json.dumps(index).encode(), rng).decode("latin-1")
    (folder / "model.safetensors.index.json").write_text(text, encoding="utf-8",
                                                         errors="surrogatepass")
    load_tiny(work, folder)
    return folder / "model.safetensors.index.json"


TARGETS: dict[str, Callable[[random.Random, Path], Path]] = {
    "arch": target_arch, "npy": target_npy, "safetensors": target_safetensors,
    "config": target_config, "index": target_index,
}
