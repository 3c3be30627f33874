"""Mutations of valid .arch files and .npy inputs, and the oracle: archc either succeeds or
raises ArchError; any other exception is a bug. Shared by the bounded hypothesis test
(test_fuzz.py) and the long-running script (fuzz_arch.py)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from archc.cli import main
from archc.dsl.errors import ArchError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.arch"))
FFN = ROOT / "examples" / "ffn.arch"

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z_0-9]*'
                   r'|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\*\*|//|->|\s+|.', re.S)
# what a replacement or insertion draws from: structure, operators, and hostile numbers
VOCAB = ["model", "block", "layer", "repeat", "param", "return", "config", "include", "as",
         "weights", "{", "}", "(", ")", "[", "]", ",", ":", "=", "+", "-", "*", "/", "//", "**",
         "@", "->", "float", "int", "bool", "float64", "true", "none", "x", "T", "d_model",
         "relu", "softmax", "Linear", "LayerNorm", "Attention", "layers.0.w", '"a.arch"',
         "0", "1", "-1", "2.5", "1e400", "10**100", "2**62", "99999999999999999999999",
         "1000000000", "0.0", "1e-30", "\n", ";", "'", "$", "\t", "\u00e9", "\x00", "\ufeff",
         # escapes, long literals and names, weights templates (the grammar layer's checks)
         '"\\x41"', '"\\u12"', '"\\N{DASH}"', '"a\\u0000.arch"', '"\\ud800"', '"\\""',
         '"' + "s" * 5000 + '"', "9" * 400, "1." + "9" * 400, "n" * 300, '"h.{i}.{i}.w"',
         '"h.{i.w"', '"{}"', "1e999", '"a\x00b"']
HUGE = ["10**100", "99999999999999999999999", "1000000000", "2**63", "1e400", "0", "-1",
        "1e-300", "65536"]
OPS = ("delete", "duplicate", "swap", "replace", "insert", "huge", "bytes", "truncate")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def mutate(text: str, steps) -> bytes:
    """Apply steps [(op, i, j, word, raw bytes)] to the token list; returns file bytes."""
    toks = tokens(text)
    raw_insert: list[tuple[int, bytes]] = []
    for op, i, j, word, raw in steps:
        solid = [k for k, t in enumerate(toks) if not t.isspace()] or [0]
        a, b = solid[i % len(solid)], solid[j % len(solid)]
        if op == "delete" and toks:
            del toks[a]
        elif op == "duplicate" and toks:
            toks.insert(a, toks[a])
        elif op == "swap" and toks:
            toks[a], toks[b] = toks[b], toks[a]
        elif op == "replace" and toks:
            toks[a] = word
        elif op == "insert":
            toks.insert(a, f" {word} ")
        elif op == "huge":
            nums = [k for k, t in enumerate(toks) if t[:1].isdigit()]
            if nums:
                toks[nums[i % len(nums)]] = HUGE[j % len(HUGE)]
        elif op == "bytes":
            raw_insert.append((a, raw))
        elif op == "truncate" and toks:
            del toks[a:]
    out = [t.encode("utf-8", "surrogatepass") for t in toks]
    for pos, raw in sorted(raw_insert, reverse=True):
        out.insert(min(pos, len(out)), raw)
    return b"".join(out)


def quietly(argv: list[str]) -> int | None:
    """Run the CLI with --debug so a non-ArchError propagates; None means an ArchError."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return main(argv + ["--debug"])
        except ArchError as e:
            text = e.render()        # rendering must not fail either
            assert "(already reported)" not in text, text   # a follow-on error leaked
            return None


def check_arch(path: Path, source: Path) -> None:
    """The oracle for a mutated model: `check` (and `run` for the FFN, which has an input)."""
    code = quietly(["check", str(path)])
    assert code in (0, None)
    if source == FFN and code == 0:
        assert quietly(["run", str(path), "--input", str(ROOT / "examples" / "ffn_input.npy"),
                        "--max-memory", "256M"]) in (0, None)
        assert quietly(["dump", "-O", str(path), "-o", str(path.with_suffix(".txt"))]) \
            in (0, None)


def check_run_random(path: Path, work: Path, rng: np.random.Generator) -> None:
    """Run a model that checks, on random inputs (every symbolic size 3, ids in 0..3)."""
    from archc.dsl.dims import evaluate
    from archc.dsl.lower import lower
    try:
        g = lower(path)
    except ArchError:
        return
    argv = ["run", str(path), "--max-memory", "256M"]
    for nid in g.inputs:
        node = g.node(nid)
        syms = {s: 3 for d in node.shape if not isinstance(d, int) for s in d.symbols()}
        shape = tuple(evaluate(d, syms) for d in node.shape)
        if node.dtype.startswith("float"):
            arr = rng.standard_normal(shape).astype(node.dtype)
        else:
            arr = rng.integers(0, 4, size=shape).astype(node.dtype)
        f = work / f"in_{node.attrs['name']}.npy"
        np.save(f, arr)
        argv += ["--input", f"{node.attrs['name']}={f}"]
    assert quietly(argv) in (0, None)


def check_npy(path: Path) -> None:
    """The oracle for a random or corrupted input to the FFN example."""
    assert quietly(["run", str(FFN), "--input", str(path), "--max-memory", "256M"]) in (0, None)


def random_array(rng: np.random.Generator) -> np.ndarray:
    dtype = rng.choice(["float32", "float64", "int64", "int8", "uint8", "bool", "complex64",
                        "float16", "U2"])
    shape = tuple(int(s) for s in rng.integers(0, 6, size=rng.integers(0, 4)))
    if rng.random() < 0.5:
        shape = (int(rng.integers(0, 6)), 4)
    if dtype == "U2":
        return np.full(shape, "ab")
    arr = (rng.standard_normal(shape) * 10 ** rng.integers(0, 40)).astype(np.float64)
    if arr.size and rng.random() < 0.3:
        arr.flat[int(rng.integers(arr.size))] = rng.choice([np.nan, np.inf, -np.inf])
    with np.errstate(all="ignore"):
        return arr.astype(dtype)


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip, drop or truncate bytes of a valid .npy file (its header included)."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(b))) if b else 0
        choice = rng.integers(3)
        if choice == 0 and b:
            b[k] = int(rng.integers(256))
        elif choice == 1 and b:
            del b[k]
        else:
            del b[k:]
    return bytes(b)
