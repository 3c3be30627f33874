"""Autoregressive generation: a prefill fills the KV cache, then one cached step per token.

    ids = generate(ex, prompt_ids, max_new_tokens=32)                 # greedy
    ids = generate(ex, prompt_ids, 32, temperature=0.8, top_k=40, top_p=0.95, seed=0)

The model needs one int input (B, T) of token ids and an output of logits (B, T, vocab)
(named `logits`, or its only output). A batch holds prompts of equal length. Each step
reads only the new token: its keys/values are appended to the cache, earlier ones are read
from it (no recomputation of the prompt). Models whose attention cannot be cached (no
`cache`, a mask or position-dependent bias) fall back to recomputing the whole sequence per
token, with a warning; `use_cache=False` asks for that explicitly (the oracle the cached
path is tested against).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..dsl.errors import ArchError
from .kv_cache import Session


@dataclass
class GenerateResult:
    ids: np.ndarray                    # (B, n_new) generated tokens
    logits: list[np.ndarray] = field(default_factory=list)   # per step (B, vocab), if kept
    seconds: float = 0.0               # decode loop time, prefill excluded
    prefill_seconds: float = 0.0
    cached: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        n = self.ids.shape[0] * max(self.ids.shape[1] - 1, 0)
        return n / self.seconds if self.seconds > 0 else float("nan")


def token_io(graph) -> tuple[str, str]:
    """(name of the token-id input, name of the logits output)."""
    ins = [graph.node(n) for n in graph.inputs]
    ids = [n for n in ins if n.dtype == "int64" and len(n.shape) == 2]
    if len(ins) != 1 or len(ids) != 1:
        desc = ", ".join(f"{n.attrs['name']}: {n.type_str}" for n in ins)
        raise ArchError(f"generate needs a model with one input of token ids int[B, T]; this "
                        f"one takes {desc}")
    outs = graph.outputs
    name = "logits" if "logits" in outs else (next(iter(outs)) if len(outs) == 1 else None)
    if name is None:
        raise ArchError(f"generate needs an output named `logits`; the model returns "
                        f"{', '.join(outs)}", hint="return logits = ... from the model")
    return ids[0].attrs["name"], name


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Next token per row of logits (B, vocab): argmax when temperature is 0."""
    if not temperature or temperature <= 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / temperature
    out = np.empty(z.shape[0], np.int64)
    for b, row in enumerate(z):
        if top_k is not None and 0 < top_k < row.size:
            kth = np.partition(row, -top_k)[-top_k]
            row = np.where(row >= kth, row, -np.inf)
        p = np.exp(row - row.max())
        p /= p.sum()
        if top_p is not None and 0 < top_p < 1:
            order = np.argsort(-p, kind="stable")
            cum = np.cumsum(p[order])
            # keep the smallest prefix whose mass reaches top_p (at least one token)
            cut = int(np.searchsorted(cum, top_p)) + 1
            keep = np.zeros_like(p, dtype=bool)
            keep[order[:cut]] = True
            p = np.where(keep, p, 0.0)
            p /= p.sum()
        out[b] = rng.choice(p.size, p=p)
    return out


def generate(ex, prompt: np.ndarray, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos: int | None = None, max_seq: int | None = None, use_cache: bool = True,
             keep_logits: bool = False, on_token: Callable[[int, np.ndarray], None] | None = None,
             profile=None) -> GenerateResult:
    """Generate up to `max_new_tokens` after `prompt` (B, T) with executor `ex`."""
    ids_name, logits_name = token_io(ex.graph)
    prompt = np.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None, :]
    if prompt.ndim != 2 or prompt.dtype.kind not in "iu" or prompt.shape[1] == 0:
        raise ArchError(f"the prompt must be token ids of shape (B, T) with T >= 1, got "
                        f"{prompt.dtype}{list(prompt.shape)}")
    prompt = prompt.astype(np.int64)
    B, T0 = prompt.shape
    rng = np.random.default_rng(seed)
    res = GenerateResult(np.zeros((B, 0), np.int64), cached=use_cache)
    if max_new_tokens <= 0:
        return res
    limit = max_seq or _context(ex.graph) or (T0 + max_new_tokens)

    session = None
    if use_cache:
        try:
            session = Session(ex, B, max(limit, 1))
        except ArchError as e:
            res.warnings.append(f"decoding without a KV cache: {e.message}")
            res.cached = False

    new = np.zeros((B, max_new_tokens), np.int64)
    done = np.zeros(B, bool)
    t0 = time.perf_counter()
    if session is not None:
        logits = session.forward({ids_name: prompt}, {"B": B, "T": T0}, profile)[logits_name]
    else:
        logits = ex.run({ids_name: prompt}, profile=profile)[logits_name]
    last = np.array(logits[:, -1, :])
    res.prefill_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    step_ids = np.zeros((B, 1), np.int64)
    for n in range(1, max_new_tokens + 1):
        tok = sample(last, rng, temperature, top_k, top_p)
        if eos is not None:
            tok = np.where(done, eos, tok)
            done |= tok == eos
        new[:, n - 1] = tok
        if keep_logits:
            res.logits.append(last)
        if on_token is not None:
            on_token(n - 1, tok)
        if n == max_new_tokens or (eos is not None and done.all()):
            break
        if n == 1:
            t0 = time.perf_counter()     # tokens/s counts decode steps, not the prefill
        step_ids[:, 0] = tok
        if session is not None:
            out = session.forward({ids_name: step_ids}, {"B": B, "T": 1}, profile)
            last = np.array(out[logits_name][:, -1, :])
        else:
            seq = np.concatenate([prompt, new[:, :n]], axis=1)
            last = ex.run({ids_name: seq}, profile=profile)[logits_name][:, -1, :]
    res.seconds = time.perf_counter() - t0
    res.ids = new[:, :n]
    return res


def _context(graph) -> int | None:
    try:
        from ..compiler.passes.plan_kv_cache import context_length
        n, _ = context_length(graph)
        return n
    except ImportError:
        return None
