"""`archc run --input-dir ... --ray`: the batch job as a Ray Data pipeline, on a local Ray of
two CPUs started once for the module. The same outputs as the in-process job, bit for bit;
a bad item reported and the rest written; a worker that dies mid-shard retried by Ray with
no output lost or written twice. Skipped where Ray (the `ray` extra) is not installed."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import archc  # noqa: E402
from archc.batch import Job, Worker, run_dir, shards  # noqa: E402
from archc.batch_ray import run_on_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "minilm_embed.arch"
BERT = ROOT / "tests" / "fixtures" / "hf" / "bert"
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park"]   # the tokenizer's
BATCH = 2           # small calls, so that 20 items make two shards, one per worker
BAD = ["junk.npy", "oov.npz"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the workers inherit this process's environment: its kernel cache, ARCHC_TUNE=0
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory, bert_tokenizer):
    """Inputs (text, .npz and two bad ones) and their outputs from the in-process job."""
    root = tmp_path_factory.mktemp("batch")
    bert_tokenizer(root / "tok.json")
    d = root / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        n = int(rng.integers(1, 8))
        (d / f"t{i}.txt").write_text(" ".join(rng.choice(WORDS, n)) + "\n")
        ids = rng.integers(4, 128, size=(int(rng.integers(1, 3)), int(rng.integers(2, 9))))
        np.savez(d / f"n{i}.npz", ids=ids, mask=np.ones_like(ids), types=np.zeros_like(ids))
    (d / "junk.npy").write_bytes(b"not an array")
    oov = np.array([[5, 500, 7]])
    np.savez(d / "oov.npz", ids=oov, mask=np.ones_like(oov), types=np.zeros_like(oov))
    local = run_dir(MODEL, d, root / "local", weights=BERT, tokenizer=root / "tok.json",
                    batch_size=BATCH, threads=1)
    assert (local.written, len(local.failed)) == (18, 2)
    return root, local


def same_files(a: Path, b: Path) -> None:
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for name in os.listdir(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ray_writes_the_local_outputs_bit_for_bit_and_reports_bad_items(job):
    root, local = job
    summary = run_dir(MODEL, root / "in", root / "ray", weights=BERT,
                      tokenizer=root / "tok.json", batch_size=BATCH, threads=1, ray=True,
                      workers=2)
    assert (summary.items, summary.written) == (20, 18)
    assert sorted(summary.failed) == sorted(local.failed)
    assert sorted(Path(p).name for p, _ in summary.failed) == BAD
    same_files(root / "local", root / "ray")


def test_a_worker_that_dies_mid_shard_is_retried_with_nothing_lost_or_doubled(job):
    root, _ = job
    died = root / "died"

    class DiesOnce(Worker):
        """Exits the worker process right after the first output it writes (once in all:
        the marker file says it happened)."""

        def write(self, path, *args):
            result = super().write(path, *args)
            if not died.exists():
                died.write_text(f"{os.getpid()} {path}")
                os._exit(1)
            return result

    out = root / "retried"
    out.mkdir()
    paths = sorted(str(p) for p in (root / "in").iterdir())
    # the model through the object store, this time (loaded once, here)
    model = archc.load(MODEL, weights=BERT)
    job_ = Job(model="", output_dir=str(out), tokenizer=str(root / "tok.json"),
               batch_size=BATCH, threads=1)
    rows = list(run_on_ray(job_, shards(paths, BATCH), DiesOnce, None, 2, model=model))
    assert died.exists()                      # the fault happened, in a worker
    pid, first = died.read_text().split()
    assert int(pid) != os.getpid() and Path(first).parent == root / "in"
    assert sorted(r["path"] for r in rows) == paths       # each item once, none missing
    assert sorted(Path(r["path"]).name for r in rows if not r["ok"]) == BAD
    same_files(root / "local", out)           # nothing lost, nothing twice, no temp files
