"""`alod run` one step after another against `--jobs N` (steps side by side), in one process run.

    python benchmarks/main_jobs.py [--jobs 2] [--repeats 1] [--train 200 --val 60 --cycles 2 ...]

Each configuration runs the same `alod run` command line (tiny detector from its
starting weights, `--pretrain-epochs 0`, the samplers given) as a user would, in a
fresh SQLite store so nothing is reused; runs alternate (1, N, 1, N, ...) so drift on a
shared machine hits both. Prints wall seconds, the speed-up, and the final val mAP50 per
sampler (jobs train with fewer torch threads each, so the floats differ a little).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from alod.params import argparse_kwargs

REPO = Path(__file__).resolve().parents[1]


def run_main(root: Path, data: Path, jobs: int, args) -> tuple[float, dict[str, float]]:
    """Wall seconds and the printed final mAP50 per sampler of one `alod run`."""
    folder = Path(tempfile.mkdtemp(prefix=f"jobs{jobs}-", dir=root))
    cmd = [sys.executable, "-m", "entrypoints.cli", "run", "--data", str(data), "--arch", "tiny",
           "--samplers", args.samplers, "--seeds", args.seeds, "--pretrain-epochs", "0", "--epochs", "1",
           "--min-iterations", str(args.min_iterations), "--roi-samples", str(args.roi_samples),
           "--batch-size", "4", "--lr", "0.04", "--cycles", str(args.cycles), "--per-cycle", str(args.per_cycle),
           "--batches", str(args.cycles), "--batch-images", str(args.train // args.cycles), "--workers", "0",
           "--jobs", str(jobs), "--experiment-name", "alod-jobs-benchmark", "--work-dir", str(folder / "work")]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"alod run --jobs {jobs} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    main_run = re.findall(r"main run ([0-9a-f]+)", proc.stdout)[-1]
    # main logs each sampler's final mAP50 (mean over seeds) on its own run: `final_mAP50.<sampler>`
    metrics = MlflowClient(tracking_uri=uri).get_run(main_run).data.metrics
    return seconds, {key.split(".", 1)[1]: value for key, value in metrics.items() if key.startswith("final_mAP50.")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the side-by-side configuration")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--samplers", default="random,entropy")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--per-cycle", type=int, default=20)
    parser.add_argument("--min-iterations", type=int, default=100)
    parser.add_argument("--roi-samples", **argparse_kwargs("roi_samples", default=32))
    args = parser.parse_args(argv)
    from alod.data.synthetic import write_dataset

    with tempfile.TemporaryDirectory(prefix="alod-jobs-") as tmp:
        root = Path(tmp)
        write_dataset(root / "data", train=args.train, val=args.val, seed=0)
        results: dict[int, list[tuple[float, dict]]] = {1: [], args.jobs: []}
        for _ in range(args.repeats):
            for jobs in (1, args.jobs):
                results[jobs].append(run_main(root, root / "data", jobs, args))
                print(f"jobs {jobs}: {results[jobs][-1][0]:.0f} s", flush=True)
    base = statistics.median(s for s, _ in results[1])
    print(f"\n`alod run` ({args.samplers} x seeds {args.seeds}, {args.cycles} cycles of {args.per_cycle}, "
          f"{args.min_iterations} steps, {args.roi_samples} proposals; pool {args.train}, val {args.val}) on "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, median of {args.repeats}:\n")
    samplers = args.samplers.split(",")
    print("| jobs | wall s | speed-up | " + " | ".join(f"final mAP50 {s}" for s in samplers) + " |")
    print("|---|---|---|" + "---|" * len(samplers))
    for jobs, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        finals = runs[-1][1]
        print(f"| {jobs} | {seconds:.0f} | {base / seconds:.2f}x | "
              + " | ".join(f"{finals.get(s, float('nan')):.4f}" for s in samplers) + " |")


if __name__ == "__main__":
    main()
