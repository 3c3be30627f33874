"""Autoregressive generation: a prefill fills the KV cache, then one cached step per token.

    ids = generate(ex, prompt_ids, max_new_tokens=32)                 # greedy
    ids = generate(ex, prompt_ids, 32, temperature=0.8, top_k=40, top_p=0.95, seed=0)

The model needs an input of token ids (B, T) feeding an embedding and an output of logits
(B, T, vocab) (named `logits`, or its only output). A batch holds prompts of equal length;
other int/bool inputs of the same length are padding masks and get ones (every token real).

Decoder-only: the prompt is the start of the decoded sequence. Encoder-decoder (a second
token input with its own length, e.g. T5's `ids` beside `decoder_ids`): the prompt is the
encoder's input, the encoder runs once (runtime/seq2seq.py), and decoding starts from the
decoder start token (`decoder_start=`, else the config constant `decoder_start`).

Each step reads only the new token: its keys/values are appended to the cache, earlier ones
are read from it (no recomputation of the prompt); position biases (T5 buckets, ALiBi) are
rebuilt per step from positions (runtime/steps/position_bias.py). Models whose attention cannot be
cached fall back to recomputing the whole sequence per token, with a warning;
`use_cache=False` asks for that explicitly (the oracle the cached path is tested against).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..dsl.dims import Dim
from ..dsl.errors import ArchError
from ..dsl.literals import MAX_INT
from .kv_cache import Session, caveats

DECODER_START = ("decoder_start", "decoder_start_token_id", "decoder_start_token")


@dataclass
class GenerateResult:
    ids: np.ndarray                    # (B, n_new) generated tokens
    logits: list[np.ndarray] = field(default_factory=list)   # per step (B, vocab), if kept
    seconds: float = 0.0               # decode loop time: prompt and compilation excluded
    prefill_seconds: float = 0.0       # encoder (if any) + prompt, compilation excluded
    compile_seconds: float = 0.0       # building and compiling (or loading) the programs
    prompt_tokens: int = 0             # B * prompt length
    cached: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: every token but each row's first (made by the prompt pass)."""
        n = self.ids.shape[0] * max(self.ids.shape[1] - 1, 0)
        return n / self.seconds if self.seconds > 0 else float("nan")

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 \
            else float("nan")

    def summary(self, load_seconds: float | None = None, build_seconds: float = 0.0) -> str:
        """One line of figures, each phase apart: loading (if given), compiling (the
        executor's build, if given, and the programs'), the prompt, and decoding."""
        n = self.ids.size
        decode = f"{self.tokens_per_second:.1f} tokens/s" if self.ids.shape[1] > 1 else "-"
        load = "" if load_seconds is None else f"load {load_seconds:.2f} s; "
        return (f"{n} token{'s' if n != 1 else ''}: {load}compile "
                f"{build_seconds + self.compile_seconds:.2f} s; prompt {self.prompt_tokens} "
                f"tokens in {self.prefill_seconds * 1e3:.0f} ms "
                f"({self.prompt_tokens_per_second:.1f} tokens/s); decode {decode}"
                + ("" if self.cached else ", no KV cache"))


@dataclass
class TokenIO:
    """Which inputs and output generation uses."""
    tokens: str                        # token ids of the decoded sequence
    logits: str
    vocab: int                         # logits' last dim
    rows: int                          # rows of the embedding `tokens` reads
    length: str                        # size name of the decoded sequence's length
    batch: str | None                  # size name of the batch (None: a fixed number)
    ones: tuple[str, ...] = ()         # padding masks of the decoded sequence
    encoder: str | None = None         # encoder-decoder: the encoder's token ids
    encoder_rows: int = 0
    encoder_length: str | None = None
    encoder_ones: tuple[str, ...] = ()


def _symbol(d) -> str | None:
    """The name of a plain size symbol (`T`), else None."""
    if isinstance(d, Dim) and len(d.terms) == 1 and d.terms[0][1] == 1 \
            and len(d.terms[0][0]) == 1:
        return d.terms[0][0][0]
    return None


def _embedding_rows(graph, nid: str) -> int | None:
    for user, pos in graph.users(nid):
        node = graph.node(user)
        if node.op == "embedding" and pos == 0:
            rows = graph.node(graph.args(user)[1]).shape[0]
            return rows if isinstance(rows, int) else None
    return None


def _token_input(graph, nodes):
    ints = [n for n in nodes if n.dtype == "int64"]
    embedded = [n for n in ints if _embedding_rows(graph, n.id) is not None]
    if len(embedded) == 1:
        return embedded[0]
    return ints[0] if len(ints) == 1 else None


def token_io(graph) -> TokenIO:
    """Find the token-id input(s), the logits output and the masks; ArchError otherwise."""
    ins = [graph.node(n) for n in graph.inputs]
    desc = ", ".join(f"{n.attrs['name']}: {n.type_str}" for n in ins) or "no inputs"
    outs = graph.outputs
    name = "logits" if "logits" in outs else (next(iter(outs)) if len(outs) == 1 else None)
    if name is None:
        raise ArchError(f"generate needs an output named `logits`; the model returns "
                        f"{', '.join(outs)}", hint="return logits = ... from the model")
    lg = graph.node(outs[name])
    if lg.dtype not in ("float32", "float64") or lg.shape is None or len(lg.shape) != 3 \
            or not isinstance(lg.shape[-1], int) or _symbol(lg.shape[1]) is None:
        raise ArchError(f"generate needs logits of shape (B, T, vocab); output `{name}` is "
                        f"{lg.type_str}", lg.span,
                        "return the LM head's output, e.g. logits = h @ transpose(wte)")
    length = _symbol(lg.shape[1])
    seq = [n for n in ins if n.shape is not None and len(n.shape) == 2
           and _symbol(n.shape[1]) == length]
    tok = _token_input(graph, seq)
    if tok is None:
        raise ArchError(f"generate needs a model with an input of token ids int[B, {length}] "
                        f"(the length of its logits); this one takes {desc}")

    def masks(nodes, what):
        for n in nodes:
            if n.dtype not in ("int64", "bool"):
                raise ArchError(f"generate cannot fill input `{n.attrs['name']}` "
                                f"({n.type_str}): only token ids and padding masks are given "
                                f"while {what}", n.span)
        return tuple(n.attrs["name"] for n in nodes)

    io = TokenIO(tok.attrs["name"], name, lg.shape[-1],
                 _embedding_rows(graph, tok.id) or lg.shape[-1], length,
                 _symbol(tok.shape[0]), masks([n for n in seq if n is not tok], "decoding"))
    rest = [n for n in ins if n not in seq]
    if rest:
        enc = _token_input(graph, [n for n in rest if n.shape is not None
                                   and len(n.shape) == 2])
        if enc is None:
            raise ArchError(f"generate needs the inputs besides the decoded tokens to be an "
                            f"encoder's token ids and masks; this model takes {desc}")
        io.encoder = enc.attrs["name"]
        io.encoder_rows = _embedding_rows(graph, enc.id) or lg.shape[-1]
        io.encoder_length = _symbol(enc.shape[1])
        others = [n for n in rest if n is not enc]
        for n in others:
            if len(n.shape) != 2 or n.shape[1] != enc.shape[1]:
                raise ArchError(f"generate cannot fill input `{n.attrs['name']}` "
                                f"({n.type_str}): it is neither the encoder's ids "
                                f"{enc.type_str} nor a mask of their length", n.span)
        io.encoder_ones = masks(others, "encoding")
    return io


class StopStrings:
    """Rows are done when their generated text contains one of `strings` (decoded by
    `decode(ids) -> str`, a tokenizer's): `generate(..., stop=StopStrings(...))`."""

    def __init__(self, strings: Sequence[str], decode: Callable[[list[int]], str]):
        self.strings = [s for s in strings if s]
        if len(self.strings) != len(strings):
            raise ArchError("a stop string must not be empty")
        self.decode = decode
        self.ids: list[list[int]] = []
        # tokens enough to hold the longest stop string, each at least a byte's worth
        self.window = 4 * max((len(s.encode()) for s in self.strings), default=0) + 8

    def __call__(self, step: int, toks: np.ndarray) -> np.ndarray:
        if step == 0:
            self.ids = [[] for _ in toks]
        done = np.zeros(len(toks), bool)
        for b, t in enumerate(toks):
            self.ids[b].append(int(t))
            text = self.decode(self.ids[b][-self.window:])
            done[b] = any(s in text for s in self.strings)
        return done


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


# ---- the two ways to get the next logits -------------------------------------------------

class _Cached:
    """Feed only new tokens; the session's cache holds the rest."""

    def __init__(self, session: Session, io: TokenIO, profile):
        self.session, self.io, self.profile = session, io, profile

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        B, T = ids.shape
        io = self.io
        inputs = {io.tokens: ids, **{m: np.ones((B, T), np.int64) for m in io.ones}}
        sizes = {io.length: T, **({io.batch: B} if io.batch else {})}
        out = self.session.forward(inputs, sizes, self.profile, last_of=io.logits)
        return np.array(out[io.logits][:, -1, :])

    def prepare(self, B: int, T: int = 1) -> None:
        """Build and compile the pass of T tokens now (a prompt, or the one-token step),
        so the timed pass builds nothing."""
        io, sess = self.io, self.session
        sizes = {io.length: T, **({io.batch: B} if io.batch else {})}
        sess.program(sizes, last_of=io.logits).compile(self.profile)


class _Recompute:
    """Run the whole model over the whole sequence for every token."""

    def __init__(self, ex, io: TokenIO, fixed: dict[str, np.ndarray], profile):
        # only the last position's logits are read: the ops after the last attention run
        # on that position alone
        self.ex = ex.last_position(io.logits, 1)
        self.io, self.fixed, self.profile = io, fixed, profile
        self.seq = None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        self.seq = ids if self.seq is None else np.concatenate([self.seq, ids], axis=1)
        B, T = self.seq.shape
        io = self.io
        inputs = {io.tokens: self.seq, **{m: np.ones((B, T), np.int64) for m in io.ones},
                  **self.fixed}
        return self.ex.run(inputs, profile=self.profile)[io.logits][:, -1, :]


def _check_ids(ids: np.ndarray, rows: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= rows):
        bad = ids[(ids < 0) | (ids >= rows)]
        raise ArchError(f"{what} has token id {int(bad.flat[0])}, outside the model's "
                        f"vocabulary (0..{rows - 1}); {bad.size} id{'s' if bad.size > 1 else ''}"
                        " out of range",
                        hint="a tokenizer with a larger vocabulary than the model's?")


def prompt_ids(prompt) -> np.ndarray:
    """The prompt as token ids (B, T) int64: a (T,) array is one row; anything else (a
    0-d array, floats, T = 0) is an error."""
    prompt = np.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None, :]
    if prompt.ndim != 2 or prompt.dtype.kind not in "iu" or prompt.shape[1] == 0:
        raise ArchError(f"the prompt must be token ids of shape (B, T) with T >= 1, got "
                        f"{prompt.dtype}{list(prompt.shape)}")
    return prompt.astype(np.int64)


def check_options(max_new_tokens, temperature, top_k, top_p, seed, eos, max_seq,
                  decoder_start) -> None:
    """The numbers of a generate call, as the CLI's argument types check them: whole
    numbers in range, finite floats (a NaN temperature would sample from NaNs). Each
    sampling setting has a value that turns it off, as in transformers: temperature 0
    (greedy), top_k 0, top_p 1."""
    def whole(name, v, low, none_ok=True):
        if v is None and none_ok:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not \
                low <= v <= MAX_INT:
            raise ArchError(f"{name} must be a whole number from {low} to 2**63-1, got {v!r}")
    whole("max_new_tokens", max_new_tokens, 0, none_ok=False)
    whole("top_k", top_k, 0)
    whole("seed", seed, 0)
    whole("max_seq", max_seq, 1)
    whole("decoder_start", decoder_start, 0)
    for e in ([] if eos is None else np.ravel(np.asarray(eos, dtype=object)).tolist()):
        whole("eos", e, 0)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ArchError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ArchError(f"top_p must be a number in (0, 1], got {top_p!r}")


def generate(ex, prompt: np.ndarray, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos: int | Sequence[int] | None = None, max_seq: int | None = None,
             use_cache: bool = True,
             keep_logits: bool = False, on_token: Callable[[int, np.ndarray], None] | None = None,
             profile=None, decoder_start: int | None = None,
             stop: Callable[[int, np.ndarray], np.ndarray] | None = None) -> GenerateResult:
    """Generate up to `max_new_tokens` after `prompt` (B, T) with executor `ex` (for an
    encoder-decoder, `prompt` is the encoder's input). `eos`: a token id, or several (a
    sequence stops at the first of them it produces; later positions repeat that id).
    `stop(step, tokens) -> rows done` ends rows too (e.g. StopStrings)."""
    check_options(max_new_tokens, temperature, top_k, top_p, seed, eos, max_seq,
                  decoder_start)
    stops = None if eos is None else np.asarray([eos] if np.ndim(eos) == 0 else list(eos),
                                                np.int64)
    io = token_io(ex.graph)
    prompt = prompt_ids(prompt)
    B, T0 = prompt.shape
    context, context_from = _context(ex)
    if context is not None and T0 > context:
        raise ArchError(f"the prompt has {T0} tokens but the model's context is {context} "
                        f"({context_from})", hint="shorten the prompt")
    _check_ids(prompt, io.encoder_rows if io.encoder else io.rows, "the prompt")
    fixed: dict[str, np.ndarray] = {}
    if io.encoder is None:
        start = prompt
    else:
        if decoder_start is None:
            decoder_start = _decoder_start(ex.graph)
        if decoder_start is None:
            raise ArchError("this encoder-decoder model declares no decoder start token",
                            hint="give --decoder-start ID (0 for T5), or declare "
                                 "`decoder_start = ID` in the model's config")
        start = np.full((B, 1), int(decoder_start), np.int64)
        _check_ids(start, io.rows, "the decoder start")
        fixed = {io.encoder: prompt, **{m: np.ones((B, T0), np.int64) for m in io.encoder_ones}}
    rng = np.random.default_rng(seed)
    res = GenerateResult(np.zeros((B, 0), np.int64), cached=use_cache)
    if max_new_tokens <= 0:
        return res
    # positions the decoded sequence takes: the start and every new token but the last
    need = start.shape[1] + max_new_tokens - 1
    limit = max_seq or context or need
    limit_from = f"--max-seq {max_seq}" if max_seq else context_from

    t0, clock0 = time.perf_counter(), _compile_clock()
    step = None
    if use_cache:
        try:
            step = _cached_decoder(ex, io, B, T0, limit, fixed, profile)
        except ArchError as e:
            res.warnings.append(f"decoding without a KV cache: {e.message}")
            res.cached = False
        if step is not None and not step.session.bounded and need > limit:
            raise ArchError(f"{start.shape[1]} start token{'s' if start.shape[1] > 1 else ''}"
                            f" + {max_new_tokens} new need {need} positions but the KV cache "
                            f"holds {limit} ({limit_from})",
                            hint="ask for fewer --max-new-tokens, " + (
                                "or a larger --max-seq" if not context else
                                f"or a larger --max-seq, up to the model's context {context}"
                                if limit < context else
                                f"or a model with a longer context: --max-seq can not go "
                                f"past its {context} ({context_from})"))
    if step is None:
        step = _Recompute(ex, io, fixed, profile)
    else:
        res.warnings.extend(caveats(step.session.ex))

    new = np.zeros((B, max_new_tokens), np.int64)
    done = np.zeros(B, bool)
    ending = stops is not None or stop is not None
    built = _compile_clock() - clock0           # an encoder's kernels, compiled as it ran
    if isinstance(step, _Cached):
        # the prompt's pass and the one-token step built and compiled now: the prompt's
        # time is its own, and nothing compiles once tokens are streaming out
        tb = time.perf_counter()
        step.prepare(B, start.shape[1])
        if max_new_tokens > 1:
            step.prepare(B)
        built += time.perf_counter() - tb
    res.prompt_tokens = B * T0
    clock1 = _compile_clock()
    last = step(start)
    res.compile_seconds = built + _compile_clock() - clock1
    res.prefill_seconds = time.perf_counter() - t0 - res.compile_seconds
    t0 = time.perf_counter()
    n = 0
    for n in range(1, max_new_tokens + 1):
        tok = sample(last, rng, temperature, top_k, top_p)
        if ending:
            tok = np.where(done, new[:, max(n - 2, 0)], tok)    # a finished row repeats its stop
            now = np.isin(tok, stops) if stops is not None else np.zeros(B, bool)
            if stop is not None:
                now |= np.asarray(stop(n - 1, tok), bool)
            done |= now
        new[:, n - 1] = tok
        if keep_logits:
            res.logits.append(last)
        if on_token is not None:
            on_token(n - 1, tok)
        if n == max_new_tokens or (ending and done.all()):
            break
        if n == 1:
            # tokens/s counts decode steps: not the prompt, not compilation
            t0, clock0 = time.perf_counter(), _compile_clock()
        last = step(tok[:, None].copy())
    res.seconds = time.perf_counter() - t0
    if n > 1:
        late = _compile_clock() - clock0        # a program the decode loop had to compile
        res.seconds -= late
        res.compile_seconds += late
    res.ids = new[:, :n]
    return res


def _compile_clock() -> float:
    from .executor import Program
    return Program.compile_clock


def _cached_decoder(ex, io: TokenIO, B: int, T0: int, limit: int, fixed, profile) -> _Cached:
    """A session over the decoder: `ex` itself, or (encoder-decoder) the decoder part after
    running the encoder once."""
    if io.encoder is None:
        return _Cached(session_for(ex, B, max(limit, 1), length=io.length, ones=io.ones),
                       io, profile)
    from .seq2seq import for_executor
    if io.encoder_length is None or io.encoder_length == io.length:
        raise ArchError("the encoder's and the decoder's lengths need their own size names "
                        "(e.g. ids: int[B, T], decoder_ids: int[B, S])")
    s2s = for_executor(ex, [io.encoder, *io.encoder_ones], io.batch)
    dims = {io.encoder_length: T0, **({io.batch: B} if io.batch else {})}
    dec = s2s.decoder(dims)
    session = session_for(dec, B, max(limit, 1), length=io.length, dims=dims, ones=io.ones)
    s2s.encode(fixed, dims, profile)
    return _Cached(session, io, profile)


# sessions kept per executor: each holds a KV arena (GPT-2 small, 1024 positions: 72 MiB)
SESSIONS_KEPT = 2


def session_for(ex, batch: int, max_seq: int, *, length: str = "T",
                dims: dict[str, int] | None = None, ones: tuple[str, ...] = ()) -> Session:
    """The executor's session for these sizes, reset to an empty cache: made (with its
    arena, and its programs on first use) by the first generation of these sizes, reused
    by the next ones. The executor fixes the threads and dtypes; the key is the rest."""
    kept = ex.__dict__.setdefault("_sessions", {})
    key = (batch, max_seq, length, tuple(sorted((dims or {}).items())), tuple(ones))
    sess = kept.pop(key, None)
    if sess is None:
        while len(kept) >= SESSIONS_KEPT:
            _forget(ex, kept.pop(next(iter(kept))))
        sess = Session(ex, batch, max_seq, length=length, dims=dims, ones=ones)
    else:
        sess.reset()        # positions and key slots: nothing of the last generation
    kept[key] = sess        # most recently used last
    return sess


def _forget(ex, sess: Session) -> None:
    """Drop an evicted session's programs (the executors key them by the session)."""
    for e in ex.variants():
        for k in [k for k in e._programs if k[1] == id(sess)]:
            del e._programs[k]


def _context(ex) -> tuple[int | None, str]:
    return ex.toolchain.context_length(ex.graph)


def _decoder_start(graph) -> int | None:
    cfg = graph.meta.get("config", {})
    for name in DECODER_START:
        v = cfg.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None
