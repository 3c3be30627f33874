"""The machine: what it is (CPU, ISA, cores, NumPy's BLAS kernel), its limits measured on
the spot (large-array read bandwidth and sgemm rate), and whether it is quiet now.

    python benchmarks/machine.py --threads 2          # limits: prints one JSON line
    python benchmarks/machine.py --describe           # the CPU, its ISA, the BLAS, busy processes

Decoding one token reads every weight once, so read bandwidth bounds decode tokens/s;
prefill is matrix products, so the sgemm rate bounds prefill tokens/s. Each figure is the
best of a few repeats (a limit is what the machine can do, not what it did on average).

Thread counts are fixed through the environment before NumPy/Numba load, so run this as
its own process (`limits(threads)` does that for you).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def user_env(base: dict | None = None) -> dict:
    """The environment as a user's process has it: Python's bytecode cache on. A sandbox
    may set PYTHONDONTWRITEBYTECODE (this one does); then every process of an editable
    checkout compiles archc's ~90 modules from source again, 0.16 s here, which an installed
    package (its .pyc written at install) or a plain checkout never pays."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def thread_env(threads: int, base: dict | None = None) -> dict:
    env = user_env(base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_with_threads(threads: int) -> None:
    """Restart this script with every thread variable set to `threads` unless they already
    are: thread pools are sized when NumPy and Numba load, so it must happen before."""
    if any(os.environ.get(v) != str(threads) for v in THREAD_VARS):
        os.execve(sys.executable, [sys.executable] + sys.argv, thread_env(threads))


def read_bandwidth(mb: int = 1024, repeats: int = 5) -> float:
    """Bytes/s reading a float32 array of `mb` MB with every Numba thread."""
    import numpy as np
    from numba import njit, prange

    # fastmath lets LLVM vectorise the sum; a slice per block keeps the inner loop simple
    # enough to vectorise (a min() in the bound does not) and each thread on one run
    @njit(parallel=True, fastmath=True, cache=False)
    def block_sums(x, out):
        nb = out.shape[0]
        step = x.shape[0] // nb
        for b in prange(nb):
            blk = x[b * step:(b + 1) * step]
            s = np.float32(0.0)
            for i in range(blk.shape[0]):
                s += blk[i]
            out[b] = s

    x = np.ones(mb * (1 << 20) // 4, np.float32)      # touched, so pages are resident
    out = np.empty(256, np.float32)
    block_sums(x[:4096], out)                          # compile (size: a multiple of 256)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        block_sums(x, out)
        best = min(best, time.perf_counter() - t)
    if abs(float(out.sum()) - x.shape[0]) > 1e-3 * x.shape[0]:
        raise RuntimeError("bandwidth kernel summed wrongly")
    return x.nbytes / best


def sgemm_rate(n: int = 3072, repeats: int = 3) -> float:
    """FLOP/s of NumPy's float32 matmul (n x n) @ (n x n)."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a[:256, :256], b[:256, :256])            # BLAS threads up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def limits(threads: int, mb: int = 1024, n: int = 3072) -> dict:
    """Measure in a fresh process with `threads` threads; {"bandwidth": B/s, "sgemm": FLOP/s}."""
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--mb", str(mb),
                          "--n", str(n)], env=thread_env(threads), capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"machine.py failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- what the machine is ---------------------------------------------------------------------

# (label, /proc/cpuinfo flag): the vector units the kernels of archc and its peers can use
ISA_FLAGS = (("AVX2", "avx2"), ("FMA", "fma"), ("AVX-VNNI", "avx_vnni"),
             ("AVX-512", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
             ("AVX-512 BF16", "avx512_bf16"), ("AMX-BF16", "amx_bf16"),
             ("AMX-INT8", "amx_int8"))

# lscpu's model name says "AMD EPYC" in a KVM guest; (vendor, family, first model, last model)
# -> core, for the machines this project meets (a guess from the CPUID numbers, labelled so)
CORES = (("AuthenticAMD", 25, 0x00, 0x0F, "Zen 3"), ("AuthenticAMD", 25, 0x10, 0x1F, "Zen 4"),
         ("AuthenticAMD", 25, 0x20, 0x5F, "Zen 3"), ("AuthenticAMD", 25, 0x60, 0xAF, "Zen 4"),
         ("AuthenticAMD", 26, 0x00, 0xFF, "Zen 5"), ("AuthenticAMD", 23, 0x30, 0x3F, "Zen 2"),
         ("AuthenticAMD", 23, 0x60, 0x7F, "Zen 2"),
         ("GenuineIntel", 6, 0x8F, 0x8F, "Sapphire Rapids"),
         ("GenuineIntel", 6, 0xCF, 0xCF, "Emerald Rapids"),
         ("GenuineIntel", 6, 0xAD, 0xAE, "Granite Rapids"),
         ("GenuineIntel", 6, 0x6A, 0x6C, "Ice Lake"), ("GenuineIntel", 6, 0x55, 0x55, "Skylake/Cascade Lake"))


def cpu_info(text: str | None = None) -> dict:
    """Model name, vendor, family/model, core guess, ISA and core count of this machine, from
    /proc/cpuinfo (or `text`, its contents). Fields it cannot find stay absent."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    first = {}
    for line in text.split("\n\n", 1)[0].splitlines():        # the first processor's block
        key, _, val = line.partition(":")
        first[key.strip()] = val.strip()
    info = {"model": first.get("model name") or platform.processor() or "?",
            "cores": os.cpu_count()}
    flags = set(first.get("flags", "").split())
    if flags:
        info["isa"] = [label for label, flag in ISA_FLAGS if flag in flags]
    vendor = first.get("vendor_id")
    try:
        family, model = int(first["cpu family"]), int(first["model"])
    except (KeyError, ValueError):
        return info
    info.update(vendor=vendor, family=family, model_number=model)
    for v, f, lo, hi, core in CORES:
        if v == vendor and f == family and lo <= model <= hi:
            info["core"] = core
    return info


def blas_info() -> list[dict]:
    """NumPy's BLAS libraries as threadpoolctl sees them (internal_api: openblas / mkl / blis,
    architecture: the kernel set OpenBLAS picked for this CPU); [] without threadpoolctl."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl looks for)
    try:
        import threadpoolctl
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpoolctl.threadpool_info()
            if lib.get("user_api") == "blas"]


def describe(cpu: dict | None = None, blas: list[dict] | None = None) -> str:
    """One paragraph: the CPU, its ISA (what it has and which of AVX-512 / AMX / bf16 it
    lacks), cores, NumPy's BLAS and its kernel, and OpenBLAS variables that override it."""
    cpu = cpu_info() if cpu is None else cpu
    blas = blas_info() if blas is None else blas
    name = cpu["model"]
    if "family" in cpu:
        name += f" (family {cpu['family']}, model {cpu['model_number']}"
        name += f": {cpu['core']})" if "core" in cpu else ")"
    parts = [f"{name}, {cpu['cores']} cores"]
    if "isa" in cpu:
        have = cpu["isa"]
        lacks = [x for x in ("AVX-512", "AVX-512 BF16", "AMX-BF16") if x not in have]
        parts.append("ISA " + (", ".join(have) or "none of AVX2/AVX-512/AMX") +
                     (f" (no {', '.join(lacks)})" if lacks else ""))
    if blas:
        parts.append("NumPy BLAS " + "; ".join(
            f"{b['internal_api']} {b['version']} (kernel {b['architecture'] or '?'}, "
            f"{b['threading_layer']})" for b in blas))
    else:
        parts.append("NumPy BLAS unknown (threadpoolctl not installed)")
    forced = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if v in os.environ]
    if forced:
        parts.append("set here: " + " ".join(forced))
    return "; ".join(parts)


# ---- is it quiet? ------------------------------------------------------------------------------

def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, user + system clock ticks so far), every process we can read."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:                      # gone, or not ours to read
            continue
        # the name is in parentheses and may hold spaces; the fields after it are numbered
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(d.name)] = (name, int(rest[11]) + int(rest[12]))
    return out


def busy_processes(exclude: set[int] = frozenset(), interval: float = 0.5,
                   threshold: float = 0.1) -> list[tuple[int, str, float]]:
    """Processes (pid, command line, cores' worth of CPU) that used more than `threshold` of
    a core over `interval` seconds, busiest first, leaving out `exclude` and this process."""
    if not Path("/proc/self/stat").exists():
        return []
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks()
    time.sleep(interval)
    after = _cpu_ticks()
    skip = set(exclude) | {os.getpid()}
    busy = []
    for pid, (name, ticks) in after.items():
        if pid in skip or pid not in before:
            continue
        share = (ticks - before[pid][1]) / hz / interval
        if share > threshold:
            busy.append((pid, _command(pid, name), share))
    return sorted(busy, key=lambda b: -b[2])


def _command(pid: int, name: str, width: int = 48) -> str:
    """The command line of `pid`, shortened (its name if that cannot be read)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (OSError, UnicodeDecodeError):
        cmd = ""
    cmd = " ".join(Path(w).name if w.startswith("/") else w for w in cmd.split()) or name
    return cmd if len(cmd) <= width else cmd[:width - 1] + "…"


def quiet_check(exclude: set[int] = frozenset(), interval: float = 0.5) -> dict:
    """Load average and the other busy processes now. `quiet` is true when no other process
    used more than a tenth of a core over `interval` (the 1-minute load average lags and
    counts the benchmark's own workers, so it is reported, not judged)."""
    busy = busy_processes(exclude, interval)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"load": load, "busy": busy, "quiet": not busy}


def quiet_line(q: dict) -> str:
    busy = ", ".join(f"`{cmd}` {share:.0%}" for _, cmd, share in q["busy"][:6])
    return (f"load average {q['load'][0]:.2f}; " +
            ("quiet: no other busy process" if q["quiet"] else f"NOT quiet: {busy}"))


def start_load() -> subprocess.Popen:
    """The fixed competing load of a contended run: one CPU-bound process (a Python busy
    loop, no memory traffic to speak of). The caller kills it."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--describe", action="store_true",
                    help="print the CPU, ISA, BLAS and the busy processes, then exit")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--mb", type=int, default=1024, help="array size for the bandwidth test")
    ap.add_argument("--n", type=int, default=3072, help="matrix size for the sgemm test")
    args = ap.parse_args()
    if args.describe:
        print(describe())
        print(quiet_line(quiet_check()))
        return
    if os.environ.get("NUMBA_NUM_THREADS") != str(args.threads):
        print(json.dumps(limits(args.threads, args.mb, args.n)))
        return
    res = {"threads": args.threads, "bandwidth": read_bandwidth(args.mb),
           "sgemm": sgemm_rate(args.n)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
