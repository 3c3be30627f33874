"""The contenders of benchmarks/lm.py, each in its own worker process.

    python benchmarks/contenders.py make-hf gpt2 DIR [--tiny]        # random HF checkpoint
    python benchmarks/contenders.py make ort|llama.cpp-f32|... DIR   # a peer's files from it
    python benchmarks/contenders.py worker KIND --family gpt2 --weights DIR
    python benchmarks/contenders.py ttft archc --family gpt2 --weights DIR --prompt 128 --new 8
    python benchmarks/contenders.py fetch-converter                  # llama.cpp's converter

KIND is archc or a peer: hf-eager, hf-sdpa (Hugging Face transformers on PyTorch eager),
ort (ONNX Runtime on a torch.onnx export, benchmarks/peer_ort.py), ort-archc (ONNX
Runtime on archc's own export), llama.cpp-f32, llama.cpp-q8_0 (llama-cpp-python on GGUF
files from llama.cpp's converter, benchmarks/peer_llamacpp.py), archc-int8 and archc-bf16
(archc itself with `--weights-dtype int8|bf16`: 8-bit weights beside llama.cpp's q8_0).
Each peer is optional: `missing(kind)` says what it lacks, and lm.py skips it with a note.

A worker loads one model once and then answers JSON commands, one per line on stdin, with
one JSON line on stdout. The driver alternates the workers, so each measurement of one
contender sits between measurements of the others (drift hits them alike), and no
contender's thread pool or heap can slow another's. `ttft` is one fresh process from
start to first token and on to the end of a generation: time to first token, and the
peak resident memory next to what archc's plans predict.

Every contender runs the same weights: Hugging Face makes a checkpoint from a fixed seed,
archc maps its names through the model's `weights hf` section, and the ONNX and GGUF files
are made from it. Token ids come from a seeded NumPy generator, so every contender sees
the same prompts.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# Hugging Face configs: the model sizes, and tiny ones for a smoke check
FAMILIES = {
    "gpt2": {
        "arch": "examples/gpt2.arch",
        "hf_class": "GPT2LMHeadModel",
        "full": dict(n_layer=12, n_embd=768, n_head=12, n_inner=3072, vocab_size=50257,
                     n_positions=1024),
        "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=512,
                     n_positions=256),
        # archc config names, for runs without PyTorch (random weights from archc's seed)
        "archc_full": {},
        "archc_tiny": dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab=512, n_ctx=256),
        "common": dict(activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                       attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True),
    },
    "llama": {
        "arch": "examples/llama.arch",
        "hf_class": "LlamaForCausalLM",
        "full": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                     num_key_value_heads=4, intermediate_size=2048, vocab_size=32000,
                     max_position_embeddings=1024),
        "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=176, vocab_size=512,
                     max_position_embeddings=256),
        "archc_full": dict(n_layer=12, d_model=768, n_head=12, n_kv_head=4, d_ff=2048,
                           vocab=32000, eps=1e-6),
        "archc_tiny": dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=176, vocab=512,
                           eps=1e-6),
        "common": dict(rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False, hidden_act="silu"),
    },
}


# The peers: the modules each needs, and the folder of files it runs on (made by `make` from
# the Hugging Face checkpoint, inside it). torch is needed to make the checkpoint at all.
HF_NEEDS = ("torch", "transformers")
PEERS = {
    "hf-eager": {"needs": HF_NEEDS},
    "hf-sdpa": {"needs": HF_NEEDS},
    "ort": {"needs": HF_NEEDS + ("onnx", "onnxscript", "onnxruntime"), "files": "onnx"},
    "ort-archc": {"needs": HF_NEEDS + ("onnx", "onnxruntime"), "files": "onnx-archc"},
    "llama.cpp-f32": {"needs": HF_NEEDS + ("llama_cpp",), "files": "gguf"},
    "llama.cpp-q8_0": {"needs": HF_NEEDS + ("llama_cpp",), "files": "gguf"},
    # archc with packed weights (runtime/packed.py): needs nothing archc does not
    "archc-int8": {"needs": ()},
    "archc-bf16": {"needs": ()},
}
# what to install for a missing module (torch first: `pip install torch==2.13.0`)
PIP_NAMES = {"llama_cpp": "llama-cpp-python", "onnxruntime": "onnxruntime", "onnx": "onnx",
             "onnxscript": "onnxscript", "torch": "torch==2.13.0",
             "transformers": "transformers"}


def missing(kind: str) -> str | None:
    """Why peer `kind` cannot run here (a note for the tables), or None if it can."""
    if kind not in PEERS:
        return f"unknown contender {kind!r} (one of {', '.join(PEERS)})"
    lacks = [m for m in PEERS[kind]["needs"] if importlib.util.find_spec(m) is None]
    if lacks:
        return (f"{kind} skipped: {', '.join(lacks)} not installed "
                f"(pip install {' '.join(PIP_NAMES[m] for m in lacks)})")
    if kind.startswith("llama.cpp"):
        from peer_llamacpp import converter_dir
        if converter_dir() is None:
            return (f"{kind} skipped: llama.cpp's convert_hf_to_gguf.py not found (run "
                    "`python benchmarks/contenders.py fetch-converter`, or set "
                    "LLAMA_CPP_CONVERTER to a llama.cpp source tree)")
    if kind == "ort-archc":
        from peer_ort import archc_export_missing
        why = archc_export_missing()
        if why:
            return f"{kind} skipped: {why}"
    return None


def make_files(kind: str, weights: str, family: str) -> None:
    """The files peer `kind` runs on, made from the checkpoint in `weights` (kept there)."""
    folder = Path(weights) / PEERS[kind].get("files", "")
    if kind == "ort":
        from peer_ort import DECODE, export_hf
        if not (folder / DECODE).is_file():
            export_hf(weights, str(folder))
    elif kind == "ort-archc":
        from peer_ort import ARCHC_DECODE, export_archc
        if not (folder / ARCHC_DECODE).is_file():
            export_archc(str(ROOT / FAMILIES[family]["arch"]), weights, str(folder))
    elif kind.startswith("llama.cpp-"):
        from peer_llamacpp import converter_dir, convert
        outtype = kind.split("-", 1)[1]
        path = folder / f"model-{outtype}.gguf"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            convert(weights, str(path), outtype, converter_dir())


def prompt_ids(vocab: int, T: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(1, T), dtype=np.int64)


def peak_rss() -> dict:
    """Resident memory now and at its peak (bytes), from /proc/self/status."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    except OSError:
        import resource
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


# ---- making the shared checkpoint ------------------------------------------------------------

def make_hf(family: str, out: str, tiny: bool, seed: int = 0) -> None:
    """A Hugging Face model with random weights from `seed`, saved as config.json +
    model.safetensors (what archc's --weights DIR reads)."""
    import torch
    import transformers
    spec = FAMILIES[family]
    cls = getattr(transformers, spec["hf_class"])
    config = cls.config_class(**spec["common"], **spec["tiny" if tiny else "full"])
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(out, safe_serialization=True)


# ---- the contenders --------------------------------------------------------------------------

class Archc:
    """archc through its Python API: model.compiled(threads) (the Numba executor) for
    forward passes, model.generate for decoding."""

    name = "archc"

    def __init__(self, family: str, weights: str | None, threads: int, config: dict | None,
                 weights_dtype: str = "float32"):
        import archc
        arch = ROOT / FAMILIES[family]["arch"]
        if weights_dtype != "float32":
            self.name = f"archc-{weights_dtype}"
        self.model = archc.load(arch, weights=weights, config=config,
                                weights_dtype=weights_dtype)
        for w in self.model.warnings:
            print(f"archc warning: {w}", file=sys.stderr)
        self.threads = threads
        self.ex = self.model.compiled(threads)
        g = self.model.graph
        self.vocab = int(g.node(g.outputs["logits"]).shape[-1])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self.ex.run({"ids": ids})["logits"]

    def _program(self, T: int):
        prog = self.ex.program({"B": 1, "T": T})
        prog.compile()
        return prog

    def prefill(self, ids: np.ndarray) -> float:
        """Seconds of one forward pass over the prompt (logits for every position)."""
        prog = self._program(ids.shape[1])
        t = time.perf_counter()
        prog.execute({"ids": ids})
        return time.perf_counter() - t

    def prompt(self, ids: np.ndarray) -> float:
        """Seconds of a prompt pass as generate runs it: K/V into a cache, logits of the
        last position only."""
        from archc.runtime.kv_cache import Session
        T = ids.shape[1]
        sessions = self.__dict__.setdefault("_sessions", {})
        sess = sessions.get(T) or sessions.setdefault(T, Session(self.ex, 1, T))
        sess.reset()
        t = time.perf_counter()
        sess.forward({"ids": ids}, {"B": 1, "T": T}, last_of="logits")
        return time.perf_counter() - t

    def decode(self, ids: np.ndarray, new: int, on_first=None) -> tuple[float, int, list]:
        """(seconds of the decode steps, steps, tokens): greedy, KV cache, `new` tokens of
        which the first comes from the prefill."""
        hook = None if on_first is None else (lambda i, tok: on_first() if i == 0 else None)
        res = self.model.generate(ids, new, threads=self.threads, on_token=hook)
        if not res.cached:
            raise RuntimeError("archc decoded without a KV cache: " + "; ".join(res.warnings))
        return res.seconds, res.ids.shape[1] - 1, res.ids[0].tolist()

    def plan(self, prompt: int, new: int) -> dict:
        """What archc's plans say the process needs: weights as loaded, weight layouts
        folded at build time, the KV cache of one generation, every program's arena."""
        from archc.runtime.kv_cache import Session
        g = self.model.graph
        # weights count once per buffer: parameters may be views of the executor's layouts
        # (output-major matrices, concatenated QKV / gate-up, a tied head viewing wte)
        seen: dict[int, int] = {}
        params = _unique_bytes(self.model.params.values(), seen)
        layouts = _unique_bytes(list(self.ex.weights.values()) +
                                list(self.ex.folded_values.values()), seen)
        # programs of the executor and of its prompt-pass variant (Executor.last_position)
        progs = [p for e in self.ex.variants() for p in e._programs.values()]
        out = {"params": params, "layouts": layouts,
               "arenas": sum(p.arena_bytes for p in progs), "programs": len(progs)}
        try:
            # sized as model.generate sizes it: the model's context length if it has one
            from archc.runtime import generate as gen
            ctx = getattr(gen, "_context", lambda ex: None)(self.ex)
            ctx = ctx[0] if isinstance(ctx, tuple) else ctx      # (length, where from)
            limit = ctx or prompt + new
            out["kv_cache"] = Session(self.ex, 1, limit).nbytes
            out["kv_positions"] = limit
        except Exception as e:  # noqa: BLE001  (a model without a cache still benchmarks)
            out["kv_cache"] = 0
            out["kv_note"] = str(e)
        out["total"] = sum(out[k] for k in ("params", "layouts", "arenas", "kv_cache"))
        out["weight_read_bytes"] = weight_read_bytes(g)
        return out


def _unique_bytes(arrays, seen: dict[int, int]) -> int:
    """Bytes of the buffers behind `arrays` not already in `seen` (which it extends)."""
    added = 0
    for a in arrays:
        if not isinstance(a, np.ndarray):
            continue
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) not in seen:
            seen[id(base)] = base.nbytes
            added += base.nbytes
    return added


def weight_read_bytes(g) -> int:
    """Bytes of parameters a decode step reads whole: every parameter except tables only
    gathered by an embedding lookup (one row per token)."""
    total = 0
    for node in g.params():
        users = [g.node(u).op for u, _ in g.users(node.id)]
        if users and all(op == "embedding" for op in users):
            continue
        total += int(np.prod([int(d) for d in node.shape])) * np.dtype(node.dtype).itemsize
    return total


def flops_per_token(g, T: int) -> float:
    """archc's FLOP count of one forward pass over T tokens (batch 1), per token."""
    from archc.compiler.dump import layer_groups, totals
    from archc.dsl.dims import evaluate
    return evaluate(totals(g, layer_groups(g))["flops"], {"B": 1, "T": T}) / T


def hf_cache_arg(model) -> str:
    """The keyword a Hugging Face model takes its KV cache by: `cache` from transformers
    5.25 on (`past_key_values` is deprecated there, to go in 5.40), `past_key_values` before."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters \
        else "past_key_values"


def hf_cache_out(out):
    """The KV cache a Hugging Face forward returned (field `cache`, or `past_key_values`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class HF:
    """Hugging Face transformers on PyTorch eager (attention: "eager" or "sdpa")."""

    def __init__(self, family: str, weights: str, threads: int, attn: str):
        import torch
        import transformers
        torch.set_num_threads(threads)
        self.torch = torch
        self.name = f"hf-{attn}"
        cls = getattr(transformers, FAMILIES[family]["hf_class"])
        self.model = cls.from_pretrained(weights, attn_implementation=attn,
                                         dtype=torch.float32).eval()
        self.vocab = self.model.config.vocab_size

    def logits(self, ids: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(input_ids=self.torch.from_numpy(ids),
                              use_cache=False).logits.numpy()

    def prefill(self, ids: np.ndarray) -> float:
        x = self.torch.from_numpy(ids)
        with self.torch.inference_mode():
            t = time.perf_counter()
            self.model(input_ids=x, use_cache=False)
            return time.perf_counter() - t

    def prompt(self, ids: np.ndarray) -> float:
        x = self.torch.from_numpy(ids)
        with self.torch.inference_mode():
            t = time.perf_counter()
            self.model(input_ids=x, use_cache=True, logits_to_keep=1)
            return time.perf_counter() - t

    def decode(self, ids: np.ndarray, new: int, on_first=None) -> tuple[float, int, list]:
        """A greedy loop over the KV cache (leaner than `generate`, so the peer is not
        charged for generate's logits processors); timed like archc: the decode steps
        after the prefill's token, argmax included. The prompt pass computes the last
        position's logits only, as `generate` does (and archc's generate)."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids), use_cache=True,
                             logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            if on_first is not None:
                on_first()
            toks = [int(tok)]
            pkv = hf_cache_out(out)
            arg = hf_cache_arg(self.model)
            t = time.perf_counter()
            for _ in range(new - 1):
                out = self.model(input_ids=tok, use_cache=True, **{arg: pkv})
                pkv = hf_cache_out(out)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                toks.append(int(tok))
            return time.perf_counter() - t, new - 1, toks

    def plan(self, prompt: int, new: int) -> dict:
        return {}


def make(kind: str, family: str, weights: str | None, threads: int, config: dict | None,
         max_tokens: int = 1024):
    """Contender `kind` loaded, ready to answer; `max_tokens` bounds a prompt plus what is
    decoded after it (llama.cpp sizes its context by it)."""
    if kind == "archc":
        return Archc(family, weights, threads, config)
    if kind.startswith("archc-"):
        return Archc(family, weights, threads, config, weights_dtype=kind[len("archc-"):])
    if kind.startswith("hf-"):
        return HF(family, weights, threads, kind[3:])
    if kind in ("ort", "ort-archc"):
        import peer_ort
        folder = Path(weights) / PEERS[kind]["files"]
        full, step = (peer_ort.PREFILL, peer_ort.DECODE) if kind == "ort" else \
            (peer_ort.ARCHC_FULL, peer_ort.ARCHC_DECODE)
        return peer_ort.ORT(str(folder / full), str(folder / step), threads, kind)
    if kind.startswith("llama.cpp-"):
        from peer_llamacpp import LlamaCpp
        outtype = kind.split("-", 1)[1]
        path = Path(weights) / PEERS[kind]["files"] / f"model-{outtype}.gguf"
        return LlamaCpp(str(path), threads, max_tokens, kind, fp32=outtype == "f32")
    raise SystemExit(f"unknown contender {kind}")


def import_runtime(kind: str) -> None:
    """Import what contender `kind` runs on (a fresh process's import cost)."""
    if kind.startswith("archc"):
        import archc
        archc.Model.compiled, archc.Model.generate  # noqa: B018  (the API the run uses)
        from archc.runtime import executor, generate  # noqa: F401  (the runtime's imports)
    elif kind.startswith("hf-"):
        import torch  # noqa: F401
        import transformers  # noqa: F401
    elif kind.startswith("ort"):
        import onnxruntime  # noqa: F401
    elif kind.startswith("llama.cpp"):
        import llama_cpp  # noqa: F401


# ---- worker: JSON commands in, JSON results out ---------------------------------------------

def serve(c) -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "logits":
            ids = prompt_ids(c.vocab, cmd["T"], cmd["seed"])
            np.save(cmd["out"], c.logits(ids))
            res = {}
        elif op in ("prefill", "prompt"):
            ids = prompt_ids(c.vocab, cmd["T"], cmd["seed"])
            run = c.prefill if op == "prefill" else c.prompt
            for _ in range(cmd.get("warmup", 0)):       # untimed: wakes the cores up
                run(ids)
            res = {"seconds": run(ids)}
        elif op == "decode":
            s, steps, toks = c.decode(prompt_ids(c.vocab, cmd["prompt"], cmd["seed"]),
                                      cmd["new"])
            res = {"seconds": s, "steps": steps, "tokens": toks}
        elif op == "stats":
            res = {"rss": peak_rss(), "plan": c.plan(cmd["prompt"], cmd["new"])}
            if isinstance(c, Archc):
                res["flops_per_token"] = {str(T): flops_per_token(c.model.graph, T)
                                          for T in cmd.get("T", [])}
        else:
            res = {"error": f"unknown op {op}"}
        print(json.dumps(res), flush=True)


def ttft(args, t_start: float) -> dict:
    """One fresh process: imports, load, prefill to the first token, decode, memory."""
    rss0 = peak_rss()
    out: dict = {"t_start": t_start}
    config = json.loads(args.config) if args.config else None
    import_runtime(args.kind)
    out["imported"] = time.time()
    out["rss_after_imports"] = peak_rss()["VmRSS"] if "VmRSS" in rss0 else None
    c = make(args.kind, args.family, args.weights, args.threads, config,
             args.prompt + args.new)
    out["loaded"] = time.time()
    ids = prompt_ids(c.vocab, args.prompt, args.seed)
    first = {}
    s, steps, toks = c.decode(ids, args.new, on_first=lambda: first.setdefault("t", time.time()))
    out["first_token"] = first["t"]
    out["done"] = time.time()
    out["decode_seconds"], out["steps"] = s, steps
    out["rss"] = peak_rss()
    out["plan"] = c.plan(args.prompt, args.new)
    return out


def main() -> None:
    t_start = time.time()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-hf")
    mk.add_argument("family", choices=FAMILIES)
    mk.add_argument("out")
    mk.add_argument("--tiny", action="store_true")
    mk.add_argument("--seed", type=int, default=0)
    mf = sub.add_parser("make", help="the files a peer runs on, from a checkpoint made by make-hf")
    mf.add_argument("kind", choices=[k for k in PEERS if "files" in PEERS[k]])
    mf.add_argument("weights")
    mf.add_argument("--family", choices=FAMILIES, default="gpt2")
    sub.add_parser("fetch-converter", help="llama.cpp's convert_hf_to_gguf.py, matching the "
                   "installed llama-cpp-python, into the cache (pip download of its sdist)")
    for name in ("worker", "ttft"):
        p = sub.add_parser(name)
        p.add_argument("kind")
        p.add_argument("--family", choices=FAMILIES, required=True)
        p.add_argument("--weights")
        p.add_argument("--config", help="JSON config overrides (archc without --weights)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--prompt", type=int, default=128)
        p.add_argument("--new", type=int, default=8)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--max-tokens", type=int, default=1024,
                       help="longest prompt plus decode a worker will see")
    args = ap.parse_args()
    if args.cmd == "make-hf":
        make_hf(args.family, args.out, args.tiny, args.seed)
    elif args.cmd == "make":
        make_files(args.kind, args.weights, args.family)
    elif args.cmd == "fetch-converter":
        from peer_llamacpp import fetch_converter
        print(fetch_converter())
    elif args.cmd == "worker":
        config = json.loads(args.config) if args.config else None
        c = make(args.kind, args.family, args.weights, args.threads, config, args.max_tokens)
        print(json.dumps({"ready": c.name, "vocab": c.vocab}), flush=True)
        serve(c)
    else:
        print(json.dumps(ttft(args, t_start)), flush=True)


if __name__ == "__main__":
    main()
