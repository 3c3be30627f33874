"""Start-up cost: a warm `archc run examples/ffn.arch` in a fresh process, and where it goes.

    python benchmarks/startup.py            # median of 5 runs, then an import breakdown

Run it with the interpreter of the environment to measure: `.venv/bin/python
benchmarks/startup.py` times that environment's `archc`. An environment with SciPy
installed pays 0.1-0.25 s more (Numba imports scipy.linalg when it is there).

The target is <= 1.5 s wall with the kernel cache warm. The breakdown: the bare interpreter
(`python -c pass`), each big import measured by `python -X importtime` on the same command
(the time spent in each package's own modules, whoever imported them), and the rest:
archc itself (parse, lower, load kernels from the cache, run, print). `--profile` adds a
cProfile of one run.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import user_env  # noqa: E402

BIG = ("numpy", "numba", "lark", "networkx", "safetensors", "scipy", "llvmlite")
# Numba's array-math module imports scipy.linalg whenever SciPy is installed (a BLAS check),
# with numpy.f2py and charset_normalizer behind it; archc itself does not need SciPy
SCIPY_NOTE = " (installed here, not an archc dependency)"


def archc_command() -> list[str]:
    exe = Path(sys.executable).parent / "archc"
    if not exe.exists():
        found = shutil.which("archc")
        exe = Path(found) if found else None
    base = [str(exe)] if exe else [sys.executable, "-m", "archc"]
    return base + ["run", "examples/ffn.arch", "--input", "examples/ffn_input.npy"]


def wall(cmd: list[str], env=None) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=user_env() if env is None else env)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return dt


def import_times(cmd: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds spent importing each top-level package, its own modules only (self time
    from `python -X importtime`), whoever imported it; and, per package, the module outside
    it that imported most of it (its entry point)."""
    if cmd[0] != sys.executable:                  # the console script: run its module instead
        cmd = [sys.executable, "-m", "archc"] + cmd[1:]
    out = subprocess.run([sys.executable, "-X", "importtime"] + cmd[1:], cwd=ROOT,
                         capture_output=True, text=True, env=user_env())
    rows = []                                     # (depth, name, self s, cumulative s)
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cum, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((depth, name.strip(), int(own) / 1e6, int(cum) / 1e6))
    # the listing is post-order: a module's imports are printed before it, one level deeper
    parent: dict[int, int] = {}
    pending: dict[int, list[int]] = {}
    for i, (depth, *_rest) in enumerate(rows):
        for child in pending.pop(depth + 1, []):
            parent[child] = i
        pending.setdefault(depth, []).append(i)
    by_pkg: dict[str, float] = {}
    entry: dict[str, tuple[float, str]] = {}
    for i, (_, name, own, cum) in enumerate(rows):
        top = name.split(".")[0]
        by_pkg[top] = by_pkg.get(top, 0.0) + own
        via = rows[parent[i]][1] if i in parent else "(top level: a script or a function)"
        if via.split(".")[0] != top and cum > entry.get(top, (-1.0, ""))[0]:
            entry[top] = (cum, via)
    return by_pkg, {k: v for k, (_, v) in entry.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true",
                    help="also print the top of a cProfile of one run (cumulative time)")
    args = ap.parse_args()
    cmd = archc_command()
    env = user_env()
    wall(cmd, env)                                   # warms the kernel and bytecode caches
    runs = [wall(cmd, env) for _ in range(args.repeats)]
    bare = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(args.repeats))
    total = statistics.median(runs)
    print(f"$ {' '.join(cmd)}")
    print(f"wall, warm cache: {total:.2f} s median of {len(runs)} "
          f"({min(runs):.2f}–{max(runs):.2f}); target <= 1.5 s "
          f"{'met' if total <= 1.5 else 'NOT met'}")
    by_pkg, via = import_times(cmd)
    all_imports = sum(by_pkg.values())
    shown = [p for p in by_pkg if p in BIG or p == "archc" or by_pkg[p] >= 0.05]
    print(f"\n{'part':<34} {'seconds':>8}  imported by")
    print(f"{'python -c pass':<34} {bare:>8.3f}")
    for top in sorted(shown, key=lambda p: -by_pkg[p]):
        if by_pkg[top] < 0.0005:
            continue                                 # tried, not installed
        note = SCIPY_NOTE if top == "scipy" else ""
        print(f"{'import ' + top:<34} {by_pkg[top]:>8.3f}  {via.get(top, '')}{note}")
    rest = sum(s for p, s in by_pkg.items() if p not in shown)
    print(f"{'other imports (stdlib, small)':<34} {rest:>8.3f}")
    print(f"{'all imports (-X importtime)':<34} {all_imports:>8.3f}")
    print(f"{'archc work (wall - python - imports)':<34} {total - bare - all_imports:>8.3f}")
    print("\n(each package's own modules, whoever imported them; -X importtime itself slows "
          "imports a little, so the parts can add up to more than the wall time)")
    if args.profile:
        prof = [sys.executable, "-m", "cProfile", "-s", "cumtime", "-m", "archc"] + cmd[-4:]
        out = subprocess.run(prof, cwd=ROOT, capture_output=True, text=True,
                             env=user_env()).stdout
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print("\n" + "\n".join(line[:140] for line in lines[start:start + 40]))


if __name__ == "__main__":
    main()
