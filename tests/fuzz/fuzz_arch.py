"""Long-running fuzzer (not collected by pytest): mutate examples/*.arch and .npy inputs for
a while and report every case where archc raised something other than ArchError.

    python tests/fuzz/fuzz_arch.py --seconds 300 [--seed 1] [--save failures/]

Prints how many cases it tried, and one line per distinct failure (exception type and the
innermost archc frame), with the first input that caused it saved under --save.
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

import arch_mutations as m

SIGNATURE_ROOTS = ("dsl", "compiler", "runtime", "archc")


class TooSlow(Exception):
    """A case ran past --case-seconds: a hang or a blow-up is a bug too."""


def _alarm(signum, frame):
    raise TooSlow("case took too long")


def signature(exc: BaseException) -> str:
    """Exception type + the innermost frame inside archc's own source: one line per bug."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if any(f"/{r}/" in f.filename for r in SIGNATURE_ROOTS)]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def random_steps(rng: random.Random) -> list:
    return [(rng.choice(m.OPS), rng.randrange(10_000), rng.randrange(10_000),
             rng.choice(m.VOCAB), bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))))
            for _ in range(rng.randint(1, 5))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=None, help="folder for failing inputs")
    ap.add_argument("--case-seconds", type=float, default=20,
                    help="a case slower than this is reported as a failure (default 20)")
    ap.add_argument("--run", type=float, default=0.3,
                    help="share of mutated models also run on random inputs (default 0.3)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    failures: dict[str, Path | str] = {}
    tried = {"arch": 0, "npy": 0}
    end = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        while time.monotonic() < end:
            kind = "npy" if rng.random() < 0.2 else "arch"
            if kind == "arch":
                source = rng.choice(m.EXAMPLES)
                case = work / "case.arch"
                case.write_bytes(m.mutate(source.read_text(), random_steps(rng)))
                def run(case=case, source=source):
                    m.check_arch(case, source)
                    if args.run and rng.random() < args.run:
                        m.check_run_random(case, work, nrng)
            else:
                case = work / "case.npy"
                np.save(case, m.random_array(nrng))
                if rng.random() < 0.5:
                    case.write_bytes(m.corrupt(case.read_bytes(), nrng))
                run = lambda: m.check_npy(case)   # noqa: E731
            tried[kind] += 1
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, args.case_seconds)
            try:
                run()
                signal.setitimer(signal.ITIMER_REAL, 0)
            except (Exception, RecursionError) as e:   # noqa: BLE001 - that is the point
                signal.setitimer(signal.ITIMER_REAL, 0)
                sig = signature(e)
                if sig not in failures:
                    kept: Path | str = "(not saved)"
                    if args.save:
                        args.save.mkdir(parents=True, exist_ok=True)
                        kept = args.save / f"failure{len(failures)}{case.suffix}"
                        kept.write_bytes(case.read_bytes())
                    failures[sig] = kept
                    first = str(e).splitlines()[0][:100] if str(e) else ""
                    print(f"FAIL {sig}: {first}  -> {kept}", flush=True)
    total = sum(tried.values())
    print(f"tried {total} cases ({tried['arch']} .arch mutations, {tried['npy']} .npy inputs) "
          f"in {args.seconds:.0f}s; {len(failures)} distinct failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
