"""Long-running fuzzer (not collected by pytest): the targets of targets.py (.arch sources,
.npy inputs, safetensors headers, config.json files, checkpoint indexes) for a while, and
every case where archc raised something other than ArchError, or ran too long.

    python tests/fuzz/fuzz_arch.py --seconds 600 --seed 1 [--target index] [--save failures/]

Prints how many cases each target tried, and one line per distinct failure (exception type
and the innermost archc frame), with the first input that caused it saved under --save.
Exit status 1 when there was any failure. CI runs the same targets, briefly, as
tests/fuzz/test_fuzz.py.
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

import arch_mutations as m
import targets as t

SIGNATURE_ROOTS = ("dsl", "compiler", "runtime", "archc")
# how often each target runs: .arch text has the most ways to go wrong
WEIGHT = {"arch": 5, "npy": 1, "safetensors": 2, "config": 2, "index": 2}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", choices=[*t.TARGETS, "all"], default="all")
    ap.add_argument("--save", type=Path, default=None, help="folder for failing inputs")
    ap.add_argument("--case-seconds", type=float, default=20,
                    help="a case slower than this is reported as a failure (default 20)")
    ap.add_argument("--run", type=float, default=0.3,
                    help="share of mutated models that check also run on random inputs")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    kinds = list(t.TARGETS) if args.target == "all" else [args.target]
    failures: dict[str, Path | str] = {}
    tried: Counter = Counter()
    end = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        while time.monotonic() < end:
            kind = rng.choices(kinds, [WEIGHT[k] for k in kinds])[0]
            work = root / kind
            work.mkdir(exist_ok=True)
            case_rng = random.Random(rng.randrange(2 ** 63))
            tried[kind] += 1
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, args.case_seconds)
            try:
                case = t.TARGETS[kind](case_rng, work)
                if kind == "arch" and args.run and rng.random() < args.run:
                    m.check_run_random(case, work, nrng)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except (Exception, RecursionError) as e:   # noqa: BLE001 - that is the point
                signal.setitimer(signal.ITIMER_REAL, 0)
                sig = f"{kind}: {signature(e)}"
                if sig not in failures:
                    kept: Path | str = "(not saved)"
                    if args.save:
                        args.save.mkdir(parents=True, exist_ok=True)
                        kept = args.save / f"failure{len(failures)}-{kind}"
                        shutil.copytree(work, kept, dirs_exist_ok=True)
                    failures[sig] = kept
                    first = str(e).splitlines()[0][:100] if str(e) else ""
                    print(f"FAIL {sig}: {first}  -> {kept}", flush=True)
    counts = ", ".join(f"{tried[k]} {k}" for k in kinds)
    print(f"tried {sum(tried.values())} cases ({counts}) in {args.seconds:.0f}s; "
          f"{len(failures)} distinct failures (exceptions other than ArchError)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
