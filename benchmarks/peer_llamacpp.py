"""llama.cpp (through llama-cpp-python, CPU) as a contender of benchmarks/lm.py, on GGUF files
converted from the very Hugging Face checkpoint archc and PyTorch run.

    python benchmarks/contenders.py fetch-converter           # once: llama.cpp's converter
    python benchmarks/contenders.py make-gguf DIR --outtype f32|q8_0

The converter is llama.cpp's own convert_hf_to_gguf.py (with its `conversion` package and
the gguf-py it ships), taken from the llama-cpp-python source distribution of the version
installed, so the files match the library that reads them. `fetch-converter` gets that
sdist with pip and keeps the three pieces in the cache folder (see `converter_dir`); or
point LLAMA_CPP_CONVERTER at a llama.cpp source tree.

Two shims, both outside the weights: the benchmark's checkpoints have no tokenizer (they
are random weights; every contender is fed token ids), so the vocabulary written is a
placeholder of the model's size (SentencePiece-style: <unk> <s> </s>, the 256 byte
tokens, then t259, t260, ...); and Hugging Face transformers 5 saves GPT-2 configs without
`n_ctx`, which the converter reads, so it is taken from `n_positions`. Tensors go through
the converter untouched: its names, layouts and its Q8_0 quantisation (blocks of 32
along the input dimension, one fp16 scale each; tensors whose rows do not split into
blocks stay unquantised).

The contender runs llama.cpp's C API as llama-cpp-python exposes it: one llama_batch per
pass (every position's logits for a prefill, the last one's for a prompt pass), greedy
decoding one token per llama_decode. The f32 file runs fp32 throughout, as archc does:
the K/V cache in fp32 and flash attention off (llama.cpp's CPU flash attention computes in
fp16: 1e-3 off HF's logits at full size, 3e-6 without it on the LLaMA-style model; GPT-2
stays ~1.5e-3 off either way, its GELU being an fp16 table in ggml). The q8_0 file runs as
llama.cpp runs by default on a CPU: flash attention on, the K/V cache in fp16.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

OUTTYPES = ("f32", "q8_0")
PIECES = ("convert_hf_to_gguf.py", "conversion", "gguf-py")


# ---- the converter -----------------------------------------------------------------------------

def installed_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("llama_cpp_python")
    except Exception:  # noqa: BLE001  (not installed, or metadata unreadable)
        return None


def converter_dir() -> Path | None:
    """A folder holding convert_hf_to_gguf.py: $LLAMA_CPP_CONVERTER, else what
    `fetch-converter` left in the cache for the installed version; None if neither."""
    env = os.environ.get("LLAMA_CPP_CONVERTER")
    cands = [Path(env)] if env else []
    ver = installed_version()
    if ver:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cands.append(cache / "archc-bench" / f"llama.cpp-{ver}")
    for c in cands:
        c = c.parent if c.name == PIECES[0] else c
        if (c / PIECES[0]).is_file():
            return c
    return None


def fetch_converter() -> Path:
    """Download the sdist of the installed llama-cpp-python with pip and keep llama.cpp's
    converter from it (vendor/llama.cpp: the script, conversion/, gguf-py/) in the cache."""
    ver = installed_version()
    if ver is None:
        raise SystemExit("llama-cpp-python is not installed: nothing to match the converter to")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archc-bench"
    dest = cache / f"llama.cpp-{ver}"
    if (dest / PIECES[0]).is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "-d", tmp, f"llama-cpp-python=={ver}"], check=True)
        sdist = next(Path(tmp).glob("*.tar.gz"))
        part = Path(tmp) / "part"
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                rel = m.name.split("/vendor/llama.cpp/", 1)
                if len(rel) == 2 and rel[1].split("/", 1)[0] in PIECES:
                    m.name = rel[1]
                    members.append(m)
            tar.extractall(part, members=members, filter="data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
    return dest


def convert(weights: str, out: str, outtype: str, converter: Path) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py on `weights` (in this process: it patches the
    converter's classes, so call it from a process of its own)."""
    sys.path[:0] = [str(converter), str(converter / "gguf-py")]
    import conversion
    import gguf

    def placeholder_vocab(self) -> None:
        n = self.hparams["vocab_size"]
        kind = gguf.TokenType
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        types = [kind.UNKNOWN, kind.CONTROL, kind.CONTROL] + [kind.BYTE] * 256
        if n < len(tokens):
            raise SystemExit(f"vocabulary of {n} tokens: the placeholder needs {len(tokens)}")
        tokens += [f"t{i}" for i in range(len(tokens), n)]
        types += [kind.NORMAL] * (n - len(types))
        w = self.gguf_writer
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * n)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)

    load = conversion.ModelBase.load_hparams

    def load_hparams(dir_model, is_mistral_format):
        h = load(dir_model, is_mistral_format)
        if "n_positions" in h:
            h.setdefault("n_ctx", h["n_positions"])
        return h

    conversion.ModelBase.load_hparams = staticmethod(load_hparams)
    for arch in ("GPT2LMHeadModel", "LlamaForCausalLM"):
        conversion.get_model_class(arch).set_vocab = placeholder_vocab
    script = str(converter / PIECES[0])
    sys.argv = [script, weights, "--outtype", outtype, "--outfile", out]
    runpy.run_path(script, run_name="__main__")


# ---- the contender -----------------------------------------------------------------------------

class LlamaCpp:
    """llama.cpp on one GGUF file, batch 1, `threads` threads for prompt and decode alike."""

    def __init__(self, path: str, threads: int, n_ctx: int, name: str, fp32: bool):
        import llama_cpp
        self.lib = llama_cpp
        self.name = name
        # fp32 throughout, or llama.cpp's defaults (see the module docstring)
        attention = {"flash_attn": False, "type_k": llama_cpp.GGML_TYPE_F32,
                     "type_v": llama_cpp.GGML_TYPE_F32} if fp32 else {"flash_attn": True}
        # one batch holds a whole prompt: n_batch = n_ubatch = n_ctx
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                   n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False, **attention)
        self.ctx = self.llm.ctx
        self.vocab = int(self.llm.n_vocab())
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)

    def _fill(self, ids, start: int, every: bool) -> None:
        """The batch: `ids` at positions start, start + 1, ...; logits for every position
        or the last one."""
        b = self.batch
        b.n_tokens = len(ids)
        for i, tok in enumerate(ids):
            b.token[i] = int(tok)
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = every
        b.logits[len(ids) - 1] = True

    def _decode(self) -> None:
        rc = self.lib.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _rows(self, n: int) -> np.ndarray:
        """The logits of the last pass's n output positions, (n, V), a view."""
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(n, self.vocab))

    def _clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        self._clear()
        self._fill(ids[0], 0, True)
        self._decode()
        return self._rows(ids.shape[1]).copy()[None]

    def _pass(self, ids: np.ndarray, every: bool) -> float:
        """Seconds of one pass over a prompt into an empty cache (the batch filled untimed)."""
        self._clear()
        self._fill(ids[0], 0, every)
        t = time.perf_counter()
        self._decode()
        return time.perf_counter() - t

    def prefill(self, ids: np.ndarray) -> float:
        return self._pass(ids, every=True)

    def prompt(self, ids: np.ndarray) -> float:
        return self._pass(ids, every=False)

    def decode(self, ids: np.ndarray, new: int, on_first=None) -> tuple[float, int, list]:
        """Greedy: the prompt pass's token, then `new` - 1 timed steps (argmax included)."""
        self._clear()
        self._fill(ids[0], 0, False)
        self._decode()
        tok = int(self._rows(1)[0].argmax())
        if on_first is not None:
            on_first()
        toks = [tok]
        b = self.batch
        self._fill([tok], ids.shape[1], False)
        t = time.perf_counter()
        for i in range(new - 1):
            b.token[0] = tok
            b.pos[0] = ids.shape[1] + i
            self._decode()
            tok = int(self._rows(1)[0].argmax())
            toks.append(tok)
        return time.perf_counter() - t, new - 1, toks

    def plan(self, prompt: int, new: int) -> dict:
        return {}
