"""archc against its peers on GPT-2 small and a LLaMA-style model, side by side in one run.

    python benchmarks/lm.py                      # full size, 1 and 2 threads (~45 min)
    python benchmarks/lm.py --tiny               # tiny models, a smoke check (~5 min)
    python benchmarks/lm.py --contended          # every contender beside one busy process
    python benchmarks/lm.py --write              # also append the tables to RESULTS.md

The contenders, each optional (skipped with a note where its packages are missing):
- archc (the compiled executor, fp32);
- hf-eager, hf-sdpa: Hugging Face transformers on PyTorch eager (attention "eager" / "sdpa");
- ort: ONNX Runtime, fp32, on a torch.onnx export of the same checkpoint (a prefill graph
  and a decode graph with past K/V, every graph optimisation on; benchmarks/peer_ort.py);
- ort-archc: ONNX Runtime on archc's own export (`archc export`);
- llama.cpp-f32, llama.cpp-q8_0: llama-cpp-python on GGUF files made from the same
  checkpoint by llama.cpp's own converter (benchmarks/peer_llamacpp.py);
- archc-int8, archc-bf16 (not in the default set: `--peers ...,archc-int8`): archc with
  `--weights-dtype int8|bf16`, weight-only packed weights beside llama.cpp's q8_0.
Install them with `pip install torch==2.13.0` first (the CPU build; never let pip choose a
torch), then `pip install -e '.[bench]'` (builds llama.cpp from source: a while on 2
cores), then `python benchmarks/contenders.py fetch-converter` (llama.cpp's converter,
from the sdist of the installed llama-cpp-python).

Per model and thread count it measures, alternating the contenders within one run:
prefill tokens/s (one forward pass over a prompt, logits at every position; each turn
runs one untimed pass first), the same for a prompt pass as generation runs it (K/V into
the cache, logits of the last position only: Hugging Face's logits_to_keep=1), decode
tokens/s (greedy, KV cache, after a prompt), time to first token of a fresh process with
a warm kernel cache and the one-time compile cost with a cold one, and peak resident
memory next to archc's plans. Ratios are archc/peer per round, median (min-max over the
rounds). It also measures the machine's read bandwidth and sgemm rate and shows which
share of the decode bound (weight bytes / bandwidth) and the prefill bound (FLOPs per
token / sgemm rate) each contender reaches, and prints what the machine is (CPU, ISA,
cores, NumPy's BLAS kernel: benchmarks/machine.py).

Every contender runs the very same weights: Hugging Face makes the model from a fixed seed
and saves it; archc loads that folder through the model's `weights hf` mapping; the ONNX
and GGUF files are made from it. Logits of one prompt are checked first, each contender
against HF eager: archc and the fp32 peers must agree to a tolerance (a peer that does
not is dropped from the timing with a note; archc stops the run), q8_0 is reported (max
abs diff, top-1 agreement). Without PyTorch only archc runs (random weights), and the
tables say so. Every contender runs in its own worker process (benchmarks/contenders.py)
with the same thread count.

The machine should be quiet: at the start of each round the driver prints the load
average and every other process busy on a core, and each table says which rounds were
not quiet. `--contended` runs one CPU-bound process (a Python busy loop) beside every
contender's rounds and time to first token; benchmarks/contended.py compares archc's own
thread settings (default, 1, every core) under the same load.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from contenders import FAMILIES, PEERS, missing  # noqa: E402
from machine import (describe, limits, quiet_check, quiet_line, start_load,  # noqa: E402
                     thread_env)

TITLES = {"gpt2": "GPT-2 small", "llama": "LLaMA-style"}
# max |logits - HF eager's| each contender must stay within before it is timed (on one
# prompt of --prompt tokens; logits of the random models have std ~0.55, max ~3, and a
# wrong mapping is off by that much); None: reported only (8-bit weights are not meant to
# match). ggml computes GPT-2's GELU through an fp16 table: llama.cpp-f32 is ~1.5e-3 off
# at full size (the LLaMA-style model 3e-6)
LOGIT_TOL = {"archc": 1e-4, "hf-sdpa": 1e-4, "ort": 1e-4, "ort-archc": 1e-4,
             "llama.cpp-f32": 5e-3, "llama.cpp-q8_0": None, "archc-int8": None,
             "archc-bf16": None}
# short names for --peers
PEER_ALIASES = {"eager": "hf-eager", "sdpa": "hf-sdpa"}
DEFAULT_PEERS = "eager,sdpa,ort,ort-archc,llama.cpp-f32,llama.cpp-q8_0"
# seconds between one contender's turn and the next: the previous worker's thread pools
# (OpenMP, OpenBLAS) spin for a while after their last call and would take a core from the
# next contender's first measurement
SETTLE = 0.3
# untimed passes at the start of each prefill turn: after the pause above, the cores run at
# about half speed for the first 20-30 ms (measured: archc's first GPT-2 layers took twice
# as long after 0.3 s idle, 239 vs 221 ms a pass), so a turn's first pass measures the
# machine waking up, not the contender
PREFILL_WARMUP = 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def choose_peers(spec: str) -> tuple[list[str], list[str]]:
    """(peers that can run here, notes on those that cannot) from --peers."""
    if spec == "none":
        return [], []
    peers, notes = [], []
    for name in spec.split(","):
        kind = PEER_ALIASES.get(name.strip(), name.strip())
        why = missing(kind)
        if why:
            notes.append(why)
        elif kind not in peers:
            peers.append(kind)
    return peers, notes


def worker_env(threads: int, extra: dict | None = None) -> dict:
    env = thread_env(threads)
    env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


# ---- workers ----------------------------------------------------------------------------------

class Worker:
    """One contender in its own process, answering one JSON command per line."""

    def __init__(self, kind: str, family: str, weights: str | None, config: dict | None,
                 threads: int, logdir: Path, max_tokens: int):
        self.kind = kind
        self.errfile = open(logdir / f"{family}-{kind}-{threads}.log", "w+")
        cmd = [sys.executable, str(HERE / "contenders.py"), "worker", kind, "--family", family,
               "--threads", str(threads), "--max-tokens", str(max_tokens)]
        if weights:
            cmd += ["--weights", weights]
        if config:
            cmd += ["--config", json.dumps(config)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errfile, text=True, env=worker_env(threads),
                                     cwd=ROOT)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.errfile.seek(0)
            raise RuntimeError(f"{self.kind} worker died:\n{self.errfile.read()[-3000:]}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.errfile.close()


def ttft_run(kind: str, family: str, weights, config, threads: int, prompt: int, new: int,
             cache_dir: str | None = None) -> dict:
    """A fresh process from start to first token (and on to the end of a generation)."""
    cmd = [sys.executable, str(HERE / "contenders.py"), "ttft", kind, "--family", family,
           "--threads", str(threads), "--prompt", str(prompt), "--new", str(new)]
    if weights:
        cmd += ["--weights", weights]
    if config:
        cmd += ["--config", json.dumps(config)]
    extra = {"ARCHC_CACHE_DIR": cache_dir, "NUMBA_CACHE_DIR": str(Path(cache_dir) / "numba")} \
        if cache_dir else {}
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(threads, extra),
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"ttft {kind} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["ttft"] = res["first_token"] - t0
    res["wall"] = res["done"] - t0
    return res


# ---- statistics and tables ----------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}") -> str:
    if not xs:
        return "—"
    s = fmt.format(med(xs))
    if len(xs) > 1:
        s += f" ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
    return s


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b and a == a and b == b else "—"


def ratio_spread(a: list[float], b: list[float]) -> str:
    """a/b round by round (the rounds alternate the contenders, so a round's two figures
    saw the same machine): median (min–max)."""
    rs = [x / y for x, y in zip(a, b) if x and y]
    if not rs:
        return "—"
    s = f"{med(rs):.2f}×"
    return s + f" ({min(rs):.2f}–{max(rs):.2f})" if len(rs) > 1 else s


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def mb(n) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.{0 if n >= 100 * size else 1}f} {unit}"
    return f"{n} B"


# ---- one model at one thread count ---------------------------------------------------------------

def bench_model(family: str, threads: int, args, weights, config, peers, limit: dict,
                logdir: Path) -> str:
    title = f"{TITLES[family]}{' (tiny)' if args.tiny else ''}, {threads} thread" \
            f"{'s' if threads > 1 else ''}" + (", beside one busy process" if args.contended else "")
    log(f"== {title}: starting workers {', '.join(['archc'] + peers)}")
    max_tokens = max(max(args.prefill), args.prompt + args.new)
    workers: dict[str, Worker] = {}
    load = None
    quiet: list[dict] = []
    try:
        workers["archc"] = Worker("archc", family, weights, config, threads, logdir, max_tokens)
        for p in peers:
            workers[p] = Worker(p, family, weights, None, threads, logdir, max_tokens)
        notes, dropped = check_logits(workers, logdir, args.prompt)
        for n in dropped:
            workers.pop(n).close()
        peers = [p for p in peers if p in workers]

        Ts = args.prefill
        measures = [("prefill", T) for T in Ts] + [("prompt", T) for T in Ts] + \
            [("decode", args.prompt)]
        log("   warm-up (compiles archc's kernels, builds programs)")
        for name, w in workers.items():
            for T in Ts:
                w.ask(op="prefill", T=T, seed=0)
                w.ask(op="prompt", T=T, seed=0)
            w.ask(op="decode", prompt=args.prompt, new=min(args.new, 4), seed=0)
        if args.contended:
            load = start_load()
            log(f"   competing load running (pid {load.pid})")
        ours = {w.proc.pid for w in workers.values()} | ({load.pid} if load else set())
        times: dict = {(m, n): [] for m in measures for n in workers}
        tokens: dict = {}
        names = list(workers)
        for r in range(args.repeats):
            quiet.append(quiet_check(exclude=ours))
            log(f"   round {r + 1}/{args.repeats}: {quiet_line(quiet[-1])}")
            for m in measures:
                order = names[r % len(names):] + names[:r % len(names)]
                for n in order:
                    w = workers[n]
                    time.sleep(SETTLE)
                    if m[0] in ("prefill", "prompt"):
                        res = w.ask(op=m[0], T=m[1], seed=100 + r, warmup=PREFILL_WARMUP)
                        times[m, n].append(m[1] / res["seconds"])
                    else:
                        res = w.ask(op="decode", prompt=m[1], new=args.new, seed=100 + r)
                        times[m, n].append(res["steps"] / res["seconds"])
                        tokens.setdefault(n, res["tokens"])
        stats = {n: w.ask(op="stats", prompt=args.prompt, new=args.new, T=Ts)
                 for n, w in workers.items()}
        for w in workers.values():
            w.close()

        notes += check_tokens(tokens)
        ttft = {}
        if not args.skip_ttft:
            log("   time to first token: fresh processes (warm cache), then archc with a cold one")
            for n in workers:
                runs = [ttft_run(n, family, weights, config if n.startswith("archc") else None, threads,
                                 args.prompt, args.ttft_new) for _ in range(args.ttft_repeats)]
                ttft[n] = runs
            with tempfile.TemporaryDirectory(prefix="archc-cold-") as cold:
                ttft["archc-cold"] = [ttft_run("archc", family, weights, config, threads,
                                               args.prompt, args.ttft_new, cache_dir=cold)]
    finally:
        if load is not None:
            load.kill()
            load.wait()
        for w in workers.values():
            w.close()
    notes.append(quiet_summary(quiet, args.contended))
    return report(title, family, threads, args, workers, peers, measures, times, stats, ttft,
                  limit, notes)


def check_logits(workers: dict, logdir: Path, T: int) -> tuple[list[str], list[str]]:
    """Logits of one prompt from every contender against HF eager's (or the first peer's):
    (notes, peers to drop). archc outside its tolerance stops the run: a wrong model is
    not timed. A peer outside its tolerance is dropped with a note."""
    outs = {}
    for n, w in workers.items():
        path = logdir / f"logits-{n}.npy"
        w.ask(op="logits", T=T, seed=7, out=str(path))
        outs[n] = np.load(path)
    if len(outs) == 1:
        return ["no peer: logits not cross-checked"], []
    notes, dropped = compare_logits(outs, T)
    bad = [n for n in dropped if n == "archc"]
    if bad:
        raise SystemExit(f"archc's logits differ from the reference's on the same weights: "
                         f"not timing a wrong model ({notes[0]}). Check the weights mapping "
                         f"of the example and the compiled kernels (workers' logs in {logdir}).")
    return notes, dropped


def reference(names: list[str]) -> str:
    """Whom the others are checked against: HF eager if it runs, else the first full-precision
    peer, else archc itself (quantised contenders are never the reference)."""
    if "hf-eager" in names:
        return "hf-eager"
    exact = [n for n in names if n != "archc" and LOGIT_TOL.get(n, 1e-4) is not None]
    return exact[0] if exact else "archc"


def compare_logits(outs: dict[str, np.ndarray], T: int) -> tuple[list[str], list[str]]:
    """Each contender's logits (1, T, V) against the reference's (hf-eager if present, else
    the first after archc): a note per contender with the max abs diff and, where the
    argmax differs, the share of positions whose top-1 token agrees; and the contenders
    outside their LOGIT_TOL."""
    names = list(outs)
    ref = reference(names)
    want = outs[ref].astype(np.float64)
    top = want.argmax(-1)
    notes, dropped = [], []
    for n in names:
        if n == ref:
            continue
        got = outs[n].astype(np.float64)
        if got.shape != want.shape:
            notes.append(f"**{n} dropped**: logits of shape {got.shape}, {ref}'s {want.shape}")
            dropped.append(n)
            continue
        d = float(np.max(np.abs(got - want)))
        agree = float(np.mean(got.argmax(-1) == top))
        tol = LOGIT_TOL.get(n, 1e-4)
        line = f"logits (T={T}): max |{n} − {ref}| = {d:.1e}"
        if agree < 1:
            line += f", top-1 agrees at {agree:.0%} of positions"
        if tol is None:
            line += " (quantised weights: reported, not checked)"
        elif not d <= tol:
            line = f"**{n} dropped**: " + line + f" > {tol:g}, not timing a wrong model"
            dropped.append(n)
        notes.append(line)
    return notes, dropped


def check_tokens(tokens: dict[str, list]) -> list[str]:
    """Greedy tokens of the first round, each contender against HF eager's (or the first
    peer's): where each leaves the reference. Quantised weights may leave it early."""
    names = list(tokens)
    if len(names) < 2:
        return []
    ref = reference(names)
    want = tokens[ref]
    same, notes = [], []
    for n in names:
        if n == ref:
            continue
        got = tokens[n]
        at = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), len(got))
        if at == len(got):
            same.append(n)
            continue
        what = "quantised weights" if LOGIT_TOL.get(n, 1e-4) is None else \
            "decode speed of a wrong result"
        line = (f"decode mismatch: {n}'s greedy tokens leave {ref}'s at token {at} of "
                f"{len(got)} ({n} {got[at:at + 4]}, {ref} {want[at:at + 4]}; {what})")
        notes.append(line if "quantised" in what else f"**{line}**")
    if same:
        notes.insert(0, f"greedy decode: the {len(want)} tokens of {', '.join(same)} equal "
                        f"{ref}'s")
    return notes


def quiet_summary(quiet: list[dict], contended: bool) -> str:
    """One line: which rounds had other busy processes (the competing load not counted)."""
    loads = ", ".join(f"{q['load'][0]:.1f}" for q in quiet)
    noisy = [(i + 1, q) for i, q in enumerate(quiet) if not q["quiet"]]
    load = " (besides the competing load)" if contended else ""
    if not noisy:
        return f"quiet machine: no other busy process at the start of any round{load}; " \
               f"load average by round {loads}"
    which = "; ".join(f"round {i}: " + ", ".join(f"`{cmd}` {share:.0%}"
                                                for _, cmd, share in q["busy"][:3])
                      for i, q in noisy)
    return f"**not quiet**{load}: {which}; load average by round {loads}"


def report(title, family, threads, args, workers, peers, measures, times, stats, ttft, limit,
           notes) -> str:
    names = list(workers)
    head = ["", *names] + [f"archc/{p}" for p in peers]
    rows = []
    labels = {m: {"prefill": f"prefill T={m[1]} (tok/s)",
                  "prompt": f"prompt T={m[1]} to first token (tok/s)",
                  "decode": f"decode {args.new} after {m[1]} (tok/s)"}[m[0]] for m in measures}
    for m in measures:
        row = [labels[m]] + [spread(times[m, n]) for n in names]
        row += [ratio_spread(times[m, "archc"], times[m, p]) for p in peers]
        rows.append(row)
    if ttft:
        row = ["time to first token, fresh process (s)"]
        row += [spread([r["ttft"] for r in ttft[n]], "{:.2f}") for n in names]
        row += [ratio(med([r["ttft"] for r in ttft[p]]), med([r["ttft"] for r in ttft["archc"]]))
                for p in peers]
        rows.append(row)
        cold = ttft["archc-cold"][0]["ttft"] - med([r["ttft"] for r in ttft["archc"]])
        rows.append(["compile, cold kernel cache (s)", f"{cold:.1f}"] + ["—"] * (len(head) - 2))
        rows.append(["peak RSS, fresh process"] +
                    [mb(med([r["rss"]["VmHWM"] for r in ttft[n]])) for n in names] +
                    [ratio(med([r["rss"]["VmHWM"] for r in ttft[p]]),
                           med([r["rss"]["VmHWM"] for r in ttft["archc"]])) for p in peers])
    out = [f"### {title}", "", table(head, rows), ""]
    out.append("Ratios: archc/peer for speeds, round by round, median (min–max over the "
               f"{args.repeats} rounds)" +
               ("; peer/archc for time and memory (above 1: archc ahead). Time to first "
                f"token: a {args.prompt}-token prompt, from process start (imports, weights, "
                "kernels from the cache, prefill)." if ttft else "."))
    out.append("")

    # what bounds archc here
    st = stats["archc"]
    plan = st["plan"]
    bw, sg = limit["bandwidth"], limit["sgemm"]
    decode_bound = bw / plan["weight_read_bytes"]
    dec = med(times[measures[-1], "archc"])
    lines = [f"- decode bound: {mb(plan['weight_read_bytes'])} of fp32 weights per token "
             f"at {bw / 1e9:.1f} GB/s ({threads} thr.) = {decode_bound:.0f} tok/s; archc reaches "
             f"{dec / decode_bound:.0%}" + "".join(
                 f", {p} {med(times[measures[-1], p]) / decode_bound:.0%}" for p in peers)]
    for m in (m for m in measures if m[0] == "prefill"):
        fpt = st["flops_per_token"][str(m[1])]
        bound = sg / fpt
        lines.append(f"- prefill bound at T={m[1]}: {fpt / 1e6:.3g} MFLOP per token at "
                     f"{sg / 1e9:.0f} GFLOP/s ({threads} thr.) = {bound:.0f} tok/s; archc reaches "
                     f"{med(times[m, 'archc']) / bound:.0%}" + "".join(
                         f", {p} {med(times[m, p]) / bound:.0%}" for p in peers))
    if ttft:
        r = ttft["archc"][0]
        p = r["plan"]
        base = r.get("rss_after_imports") or 0
        peak = med([x["rss"]["VmHWM"] for x in ttft["archc"]])
        lines.append(
            f"- memory plan ({args.prompt}+{args.ttft_new} tokens): parameters "
            f"{mb(p['params'])} + weight layouts not shared with them {mb(p['layouts'])} "
            f"+ KV cache {mb(p['kv_cache'])} ({p.get('kv_positions', '?')} positions) "
            f"+ activation arenas {mb(p['arenas'])} "
            f"({p['programs']} programs) = {mb(p['total'])}; peak RSS {mb(peak)}, of which "
            f"{mb(base)} is the interpreter and imports: (peak − imports) / plan = "
            f"{(peak - base) / p['total']:.2f}")
        if p.get("kv_note"):
            lines.append(f"- KV cache not sized: {p['kv_note']}")
    out += lines + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


# ---- the files the peers run on -----------------------------------------------------------------

def prepare_peers(family: str, weights: str, peers: list[str], threads: int) -> tuple[list, list]:
    """Make each peer's files (ONNX export, GGUF conversion) from the checkpoint in `weights`:
    (the peers ready, notes on those whose files could not be made)."""
    ready, notes = [], []
    for p in peers:
        if "files" not in PEERS[p]:
            ready.append(p)
            continue
        log(f"   {p}: making its files from the checkpoint")
        t = time.time()
        out = subprocess.run([sys.executable, str(HERE / "contenders.py"), "make", p, weights,
                              "--family", family], capture_output=True, text=True,
                             env=worker_env(threads), cwd=ROOT)
        if out.returncode == 0:
            ready.append(p)
            log(f"   {p}: ready ({time.time() - t:.0f} s)")
        else:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
            notes.append(f"{p} skipped for {TITLES[family]}: making its files failed: {tail[0]}")
            log(notes[-1])
    return ready, notes


# ---- main ----------------------------------------------------------------------------------

def versions() -> str:
    vers = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for mod in ("numba", "torch", "transformers", "onnxruntime", "llama_cpp"):
        if importlib.util.find_spec(mod) is None:
            continue
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001  (a broken install is reported, not fatal)
            vers.append(f"{mod} (fails to import)")
    return ", ".join(vers)


def write_results(args, header: list[str], sections: list[str], original: str | None,
                  done: bool) -> None:
    """With --write: RESULTS.md as it was at the start plus this run's section (header and
    tables), replaced atomically, so a run cut short leaves the tables it has."""
    if not args.write:
        return
    path = Path(args.out)
    title = f"## Run of {header[0]}" + ("" if done else " (in progress)")
    body = "\n".join([title, ""] + header[1:] + [""] + sections)
    text = (original.rstrip() + "\n\n" if original else "# Benchmark results\n\n") + body
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if done:
        log(f"appended this run to {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and lengths: smoke check")
    ap.add_argument("--models", default="gpt2,llama", help="comma-separated: gpt2,llama")
    ap.add_argument("--threads", default="1,2", help="thread counts to run, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prefill", default=None, help="prompt lengths (default 128,512)")
    ap.add_argument("--prompt", type=int, default=None, help="decode prompt (default 128)")
    ap.add_argument("--new", type=int, default=None, help="tokens to decode (default 128)")
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help=f"contenders beside archc, comma-separated (default {DEFAULT_PEERS}; "
                         "eager/sdpa are hf-eager/hf-sdpa); 'none' for archc alone")
    ap.add_argument("--contended", action="store_true",
                    help="run one CPU-bound process beside every contender's rounds")
    ap.add_argument("--ttft-repeats", type=int, default=3)
    ap.add_argument("--skip-ttft", action="store_true")
    ap.add_argument("--skip-startup", action="store_true",
                    help="do not run benchmarks/startup.py (archc run of the FFN example)")
    ap.add_argument("--write", action="store_true", help="append this run's tables to --out")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"),
                    help="where --write appends them (default benchmarks/RESULTS.md)")
    args = ap.parse_args()
    args.prefill = [int(x) for x in (args.prefill or ("32,64" if args.tiny else "128,512"))
                    .split(",")]
    args.prompt = args.prompt or (32 if args.tiny else 128)
    args.new = args.new or (16 if args.tiny else 128)
    args.ttft_new = min(args.new, 16)
    threads = [int(t) for t in args.threads.split(",")]
    families = args.models.split(",")

    peers, skipped = choose_peers(args.peers)
    started = datetime.datetime.now().astimezone()
    original = Path(args.out).read_text() if args.write and Path(args.out).exists() else None
    quiet0 = quiet_check()
    cmd = "python benchmarks/" + " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    header = [f"`{cmd}`, {started:%Y-%m-%d %H:%M %Z}",
              f"Machine: {describe()}", f"Versions: {versions()}",
              f"At the start: {quiet_line(quiet0)}" +
              (" (the competing load of --contended starts with the rounds)"
               if args.contended else ""),
              "Contenders: " + ", ".join(["archc"] + peers) +
              "".join(f"; {n}" for n in skipped)]
    for line in header[1:]:
        print(line, flush=True)
    sections = []
    tmp = Path(tempfile.mkdtemp(prefix="archc-bench-"))
    try:
        weights, configs, peers_of = {}, {}, {}
        for f in families:
            if peers:
                log(f"making a random {f} checkpoint with Hugging Face (seed 0)")
                d = tmp / f
                subprocess.run([sys.executable, str(HERE / "contenders.py"), "make-hf", f,
                                str(d)] + (["--tiny"] if args.tiny else []), check=True,
                               env=worker_env(max(threads)), cwd=ROOT,
                               stderr=subprocess.DEVNULL)
                weights[f], configs[f] = str(d), None
                peers_of[f], notes = prepare_peers(f, str(d), peers, max(threads))
                header[-1] += "".join(f"; {n}" for n in notes)
            else:
                weights[f], peers_of[f] = None, []
                configs[f] = FAMILIES[f]["archc_tiny" if args.tiny else "archc_full"] or None
        if not peers:
            sections.append("No peer (PyTorch/transformers not installed, or --peers none): "
                            "archc runs alone on random weights from its own seed.\n")
        lim_rows = []
        limit_by_threads = {}
        for n in threads:
            log(f"machine limits with {n} thread(s)")
            lim = limit_by_threads[n] = limits(n, mb=256 if args.tiny else 1024,
                                               n=1024 if args.tiny else 3072)
            lim_rows.append([str(n), f"{lim['bandwidth'] / 1e9:.1f} GB/s",
                             f"{lim['sgemm'] / 1e9:.0f} GFLOP/s"])
        sections.append("### Machine limits, measured on the spot\n\n" +
                        table(["threads", "read bandwidth", "sgemm (NumPy, float32)"],
                              lim_rows) + "\n")
        print(sections[-1], flush=True)
        for n in threads:
            for f in families:
                load = os.getloadavg()[0]
                try:
                    sections.append(bench_model(f, n, args, weights[f], configs[f], peers_of[f],
                                                limit_by_threads[n], tmp))
                except RuntimeError as e:     # a worker died: report it, run the rest
                    sections.append(f"### {TITLES[f]}, {n} thread(s): failed\n\n```\n{e}\n```\n")
                sections[-1] += (f"- load average (1 min) {load:.2f} at the start of this table, "
                                 f"{os.getloadavg()[0]:.2f} at its end\n")
                print(sections[-1], flush=True)
                write_results(args, header, sections, original, done=False)
        if not args.skip_startup:
            log("start-up: benchmarks/startup.py")
            out = subprocess.run([sys.executable, str(HERE / "startup.py")], cwd=ROOT,
                                 capture_output=True, text=True)
            sections.append("### Start-up: a warm `archc run` of the FFN example\n\n```\n" +
                            (out.stdout or out.stderr[-2000:]).strip() + "\n```\n")
            print(sections[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(args, header, sections, original, done=True)
    print(f"{header[0]}; load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
