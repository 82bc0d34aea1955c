"""Several cycle runs at once against the team stack's `mlflow server` on PostgreSQL, against SQLite.

    python benchmarks/tracking_load.py --runs 8            # the README's figures
    python benchmarks/tracking_load.py --runs 3 --cycles 2 # what tests/test_tracking_load.py runs (smaller)

Each configuration starts `--runs` identical `alod cycle` processes at the same moment (same seed: they
must log the same numbers) and measures, per cycle, the time every process spent in tracking calls
(`ALOD_TRACKING_PROFILE`: each call through `alod.tracking` timed, retries included) and the wall time.
Configurations: SQLite with one run (the single-user default), SQLite with `--runs` runs at once (one
file, many writers), the team stack (PostgreSQL + moto S3 + `mlflow server`, proxied artifacts, 2
gunicorn workers) with one run and with `--runs` at once. Afterwards every run is checked: every
cycle metric and every per-epoch metric at each step exactly once, one child run per cycle, and the
same values in every run of a configuration.

Prints a table; exits non-zero when a check fails. Needs PostgreSQL's server binaries.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-load"
TIMING = ("train_seconds", "images_per_second", "model_tflops_per_second", "mfu", "epoch_seconds")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("tracking-load-out"))
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--per-cycle", type=int, default=4)
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--val", type=int, default=4)
    ap.add_argument("--server-workers", type=int, default=2)
    ap.add_argument("--configs", default="sqlite-1,sqlite-N,server-1,server-N")
    return ap.parse_args(argv)


def cycle_cmd(out: Path, args, work: str) -> list[str]:
    return [sys.executable, "-m", "entrypoints.cli", "cycle", "--data", str(out / "data"), "--protocol", "pool",
            "--sampler", "random", "--cycles", str(args.cycles), "--per-cycle", str(args.per_cycle), "--epochs", "1",
            "--arch", "tiny", "--batch-size", "4", "--workers", "0", "--lr", "0.04", "--register", "false",
            "--experiment-name", EXPERIMENT, "--work-dir", str(out / work)]


def run_many(out: Path, args, name: str, n: int, client_env: dict) -> dict:
    """`n` cycle runs started together; returns per-run tracking seconds, wall seconds and run ids."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALOD_", "AWS_", "PG"))}
    procs = []
    started = time.perf_counter()
    for i in range(n):
        env = {**base, **client_env, "OMP_NUM_THREADS": "1", "ALOD_TRACKING_PROFILE": str(folder / f"profile-{i}.json"),
               "PYTHONPATH": str(REPO) + os.pathsep + base.get("PYTHONPATH", "")}
        log = open(folder / f"run-{i}.log", "w")
        procs.append((subprocess.Popen(cycle_cmd(out, args, f"work-{name}"), cwd=out, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait()
        log.close()
    wall = time.perf_counter() - started
    failed = [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
    if failed:
        raise SystemExit(f"{name}: runs {failed} failed; see {folder}/run-{failed[0]}.log")
    runs, tracking_seconds = [], []
    for i in range(n):
        text = (folder / f"run-{i}.log").read_text()
        runs.append(text.strip().splitlines()[-1].split()[-1])  # "cycle run <id>"
        profile = json.loads((folder / f"profile-{i}.json").read_text())
        tracking_seconds.append(sum(v["seconds"] for v in profile.values()))
    return {"runs": runs, "tracking_seconds": tracking_seconds, "wall": wall,
            "calls": sum(v["calls"] for v in json.loads((folder / "profile-0.json").read_text()).values())}


def check(uri: str, runs: list[str], cycles: int) -> list[str]:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    problems, values = [], []
    for run_id in runs:
        run = c.get_run(run_id)
        if run.info.status != "FINISHED":
            problems.append(f"{run_id}: {run.info.status}")
        mine = {}
        for key in run.data.metrics:
            steps = [m.step for m in c.get_metric_history(run_id, key)]
            if sorted(steps) != list(range(1, cycles + 1)):
                problems.append(f"{run_id}: {key} at steps {sorted(steps)}")
            if not key.startswith(TIMING):
                mine[key] = {m.step: m.value for m in c.get_metric_history(run_id, key)}
        kids = c.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        if sorted(int(k.data.tags["alod.cycle"]) for k in kids) != list(range(1, cycles + 1)):
            problems.append(f"{run_id}: child runs {[k.data.tags.get('alod.cycle') for k in kids]}")
        for k in kids:
            for key in k.data.metrics:
                steps = [m.step for m in c.get_metric_history(k.info.run_id, key)]
                if len(steps) != len(set(steps)):
                    problems.append(f"{run_id} cycle {k.data.tags['alod.cycle']}: {key} steps {steps}")
        values.append(mine)
    if any(v != values[0] for v in values[1:]):
        problems.append("runs with identical settings logged different values")
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from alod.data.synthetic import write_dataset

    if not (out / "data").is_dir():
        write_dataset(out / "data", train=args.train, val=args.val, seed=0)
    configs = args.configs.split(",")
    rows, problems = [], []
    stack = None
    try:
        for config in configs:
            kind, count = config.split("-")
            n = args.runs if count == "N" else int(count)
            if kind == "sqlite":
                uri = f"sqlite:///{out / f'{config}.db'}"
                env = {"MLFLOW_TRACKING_URI": uri}
                # MLflow creates a new SQLite file's tables on first use; 8 processes doing that at once
                # fail in its migrations ("table ... already exists", 7 of 8 runs): create it first.
                from mlflow import MlflowClient

                MlflowClient(tracking_uri=uri).search_experiments()
            else:
                if stack is None:
                    sys.path.insert(0, str(REPO))  # tools/ is the checkout's, not installed with alod
                    from tools.teamstack import TeamStack

                    stack = TeamStack(out / "stack-logs", artifacts="proxied", workers=args.server_workers).start()
                env = stack.server.client_env()
                uri = stack.server.url
            print(f"{config}: {n} run(s) at once ...", flush=True)
            result = run_many(out, args, config, n, env)
            found = check(uri, result["runs"], args.cycles)
            problems += [f"{config}: {p}" for p in found]
            per_cycle = [s / args.cycles for s in result["tracking_seconds"]]
            rows.append({"config": config, "runs": n, "tracking_s_per_cycle": statistics.mean(per_cycle),
                         "tracking_s_per_cycle_max": max(per_cycle), "wall_s": result["wall"],
                         "wall_s_per_cycle": result["wall"] / args.cycles, "calls_per_run": result["calls"],
                         "problems": len(found)})
    finally:
        if stack is not None:
            stack.stop()
    (out / "tracking_load.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{args.cycles} cycles per run, tiny detector, {args.per_cycle} images per cycle, 1 epoch")
    print("| backend | runs at once | tracking s per cycle (mean, max over runs) | tracking calls per run | "
          "wall s (all runs) | metrics checked |\n|---|---|---|---|---|---|")
    names = {"sqlite": "SQLite file", "server": "mlflow server + PostgreSQL + S3 (proxied)"}
    for r in rows:
        print(f"| {names[r['config'].split('-')[0]]} | {r['runs']} | {r['tracking_s_per_cycle']:.2f} "
              f"({r['tracking_s_per_cycle_max']:.2f}) | {r['calls_per_run']} | {r['wall_s']:.0f} | "
              f"{'every step once' if not r['problems'] else str(r['problems']) + ' problem(s)'} |")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
