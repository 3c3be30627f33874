"""archc vs PyTorch eager on GPT-2 small and a LLaMA-style model, side by side.

    python benchmarks/lm.py                      # full size, 1 and 2 threads (~30 min)
    python benchmarks/lm.py --tiny               # tiny models, a smoke check (~2 min)
    python benchmarks/lm.py --write              # also write benchmarks/RESULTS.md

Per model and thread count it measures, alternating the contenders within one run:
prefill tokens/s (one forward pass over a prompt, logits at every position; each turn
runs one untimed pass first), the same for a prompt pass as generation runs it (K/V into
the cache, logits of the last position only: Hugging Face's logits_to_keep=1), decode
tokens/s (greedy, KV cache, after a prompt), time to first token of a fresh process with
a warm kernel cache and the one-time compile cost with a cold one, and peak resident
memory next to archc's plans. It also measures the machine's read bandwidth and sgemm
rate and shows which share of the decode bound (weight bytes / bandwidth) and the prefill
bound (FLOPs per token / sgemm rate) archc reaches.

The peer is Hugging Face transformers on PyTorch eager ("eager" attention, and "sdpa"),
with the very same weights: Hugging Face makes the model from a fixed seed and saves it;
archc loads that folder through the model's `weights hf` mapping. Logits must agree to
1e-4 before anything is timed. Without PyTorch only archc runs (random weights), and the
tables say so. Every contender runs in its own worker process (benchmarks/contenders.py)
with the same thread count; medians of the repeats, min-max in brackets.
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

from contenders import FAMILIES  # noqa: E402
from machine import limits, thread_env  # noqa: E402

TITLES = {"gpt2": "GPT-2 small", "llama": "LLaMA-style"}
LOGIT_TOL = 1e-4
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


def have_torch() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


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
                 threads: int, logdir: Path):
        self.kind = kind
        self.errfile = open(logdir / f"{family}-{kind}-{threads}.log", "w+")
        cmd = [sys.executable, str(HERE / "contenders.py"), "worker", kind, "--family", family,
               "--threads", str(threads)]
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
            f"{'s' if threads > 1 else ''}"
    log(f"== {title}: starting workers {', '.join(['archc'] + peers)}")
    workers: dict[str, Worker] = {}
    try:
        workers["archc"] = Worker("archc", family, weights, config, threads, logdir)
        for p in peers:
            workers[p] = Worker(p, family, weights, None, threads, logdir)
        notes = check_logits(workers, logdir, args.prompt)

        Ts = args.prefill
        measures = [("prefill", T) for T in Ts] + [("prompt", T) for T in Ts] + \
            [("decode", args.prompt)]
        log("   warm-up (compiles archc's kernels, builds programs)")
        for name, w in workers.items():
            for T in Ts:
                w.ask(op="prefill", T=T, seed=0)
                w.ask(op="prompt", T=T, seed=0)
            w.ask(op="decode", prompt=args.prompt, new=min(args.new, 4), seed=0)
        times: dict = {(m, n): [] for m in measures for n in workers}
        tokens: dict = {}
        names = list(workers)
        for r in range(args.repeats):
            log(f"   round {r + 1}/{args.repeats}")
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
    finally:
        for w in workers.values():
            w.close()

    # decoding must agree too: greedy tokens of the first round against the first peer
    if peers:
        a, b = tokens["archc"], tokens[peers[0]]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        if same < len(a):
            notes.append(f"**decode mismatch**: archc's greedy tokens leave {peers[0]}'s at "
                         f"token {same} of {len(a)} (archc {a[same:same + 4]}, "
                         f"{peers[0]} {b[same:same + 4]}); decode speed of a wrong result")
        else:
            notes.append(f"greedy decode: archc's {len(a)} tokens equal {peers[0]}'s")

    ttft = {}
    if not args.skip_ttft:
        log("   time to first token: fresh processes (warm cache), then archc with a cold one")
        for n in workers:
            runs = [ttft_run(n, family, weights, config if n == "archc" else None, threads,
                             args.prompt, args.ttft_new) for _ in range(args.ttft_repeats)]
            ttft[n] = runs
        with tempfile.TemporaryDirectory(prefix="archc-cold-") as cold:
            ttft["archc-cold"] = [ttft_run("archc", family, weights, config, threads,
                                           args.prompt, args.ttft_new, cache_dir=cold)]
    return report(title, family, threads, args, workers, peers, measures, times, stats, ttft,
                  limit, notes)


def check_logits(workers: dict, logdir: Path, T: int) -> list[str]:
    """Logits of one prompt from every contender; archc must match the first peer."""
    outs = {}
    for n, w in workers.items():
        path = logdir / f"logits-{n}.npy"
        w.ask(op="logits", T=T, seed=7, out=str(path))
        outs[n] = np.load(path)
    notes = []
    names = list(outs)
    if len(names) == 1:
        return ["no peer: logits not cross-checked"]
    ref = names[1]
    for n in names:
        if n == ref:
            continue
        d = float(np.max(np.abs(outs[n].astype(np.float64) - outs[ref])))
        notes.append(f"logits (T={T}): max |{n} − {ref}| = {d:.1e}")
        if n == "archc" and not d <= LOGIT_TOL:
            raise SystemExit(f"archc's logits differ from {ref}'s by {d:.3g} (> {LOGIT_TOL}) "
                             "on the same weights: not timing a wrong model. Check the "
                             "weights mapping of the example and the compiled kernels "
                             f"(workers' logs in {logdir}).")
    return notes


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
        row += [ratio(med(times[m, "archc"]), med(times[m, p])) for p in peers]
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
    if ttft:
        out.append(f"Ratios are archc/peer for speeds and peer/archc for time and memory "
                   f"(above 1: archc ahead). Time to first token: a {args.prompt}-token prompt, "
                   "from process start (imports, weights, kernels from the cache, prefill).")
        out.append("")

    # what bounds archc here
    st = stats["archc"]
    plan = st["plan"]
    bw, sg = limit["bandwidth"], limit["sgemm"]
    decode_bound = bw / plan["weight_read_bytes"]
    dec = med(times[measures[-1], "archc"])
    lines = [f"- decode bound: {mb(plan['weight_read_bytes'])} of weights per token "
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


# ---- main ----------------------------------------------------------------------------------

def describe_machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True,
                                   text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    vers = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for mod in ("numba", "torch", "transformers"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return f"{model}, {os.cpu_count()} cores; {', '.join(vers)}"


def write_results(args, sections: list[str], started, load0, done: bool) -> str:
    """The header (command, machine, date, load) and the tables; to RESULTS.md with --write."""
    cmd = "python benchmarks/" + " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    header = [f"Command: `{cmd}`", f"Machine: {describe_machine()}",
              f"Date: {started:%Y-%m-%d %H:%M %Z}; load average {load0[0]:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} {'at the end' if done else 'so far (run in progress)'}",
              ""]
    if args.write:
        path = Path(args.out)
        path.write_text("# Benchmark results\n\nWritten by `benchmarks/lm.py --write`; see that "
                        "script's docstring for what each figure is.\n\n" +
                        "\n".join(header + sections))
        if done:
            log(f"wrote {path}")
    return "\n".join(header[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and lengths: smoke check")
    ap.add_argument("--models", default="gpt2,llama", help="comma-separated: gpt2,llama")
    ap.add_argument("--threads", default="1,2", help="thread counts to run, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prefill", default=None, help="prompt lengths (default 128,512)")
    ap.add_argument("--prompt", type=int, default=None, help="decode prompt (default 128)")
    ap.add_argument("--new", type=int, default=None, help="tokens to decode (default 128)")
    ap.add_argument("--peers", default="eager,sdpa",
                    help="Hugging Face attention implementations to run; 'none' for none")
    ap.add_argument("--ttft-repeats", type=int, default=3)
    ap.add_argument("--skip-ttft", action="store_true")
    ap.add_argument("--skip-startup", action="store_true",
                    help="do not run benchmarks/startup.py (archc run of the FFN example)")
    ap.add_argument("--write", action="store_true", help="write the tables to --out")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"),
                    help="where --write puts them (default benchmarks/RESULTS.md; it is "
                         "replaced whole, so point a trial run elsewhere)")
    args = ap.parse_args()
    args.prefill = [int(x) for x in (args.prefill or ("32,64" if args.tiny else "128,512"))
                    .split(",")]
    args.prompt = args.prompt or (32 if args.tiny else 128)
    args.new = args.new or (16 if args.tiny else 128)
    args.ttft_new = min(args.new, 16)
    threads = [int(t) for t in args.threads.split(",")]
    families = args.models.split(",")

    torch_ok = have_torch()
    peers = [] if not torch_ok or args.peers == "none" else \
        [f"hf-{p}" for p in args.peers.split(",")]
    started = datetime.datetime.now().astimezone()
    load0 = os.getloadavg()
    sections = []
    tmp = Path(tempfile.mkdtemp(prefix="archc-bench-"))
    try:
        weights, configs = {}, {}
        for f in families:
            if peers:
                log(f"making a random {f} checkpoint with Hugging Face (seed 0)")
                d = tmp / f
                subprocess.run([sys.executable, str(HERE / "contenders.py"), "make-hf", f,
                                str(d)] + (["--tiny"] if args.tiny else []), check=True,
                               env=worker_env(max(threads)), cwd=ROOT,
                               stderr=subprocess.DEVNULL)
                weights[f], configs[f] = str(d), None
            else:
                weights[f] = None
                configs[f] = FAMILIES[f]["archc_tiny" if args.tiny else "archc_full"] or None
        if not peers:
            sections.append("PyTorch/transformers not installed (or --peers none): the peer "
                            "was skipped; archc runs on random weights from its own seed.\n")
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
                    sections.append(bench_model(f, n, args, weights[f], configs[f], peers,
                                                limit_by_threads[n], tmp))
                except RuntimeError as e:     # a worker died: report it, run the rest
                    sections.append(f"### {TITLES[f]}, {n} thread(s): failed\n\n```\n{e}\n```\n")
                sections[-1] += (f"- load average (1 min) {load:.2f} at the start of this table, "
                                 f"{os.getloadavg()[0]:.2f} at its end\n")
                print(sections[-1], flush=True)
                if args.write:         # a long run that is cut short still leaves its tables
                    write_results(args, sections, started, load0, done=False)
        if not args.skip_startup:
            log("start-up: benchmarks/startup.py")
            out = subprocess.run([sys.executable, str(HERE / "startup.py")], cwd=ROOT,
                                 capture_output=True, text=True)
            sections.append("### Start-up: a warm `archc run` of the FFN example\n\n```\n" +
                            (out.stdout or out.stderr[-2000:]).strip() + "\n```\n")
            print(sections[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_results(args, sections, started, load0, done=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
