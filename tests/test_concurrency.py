"""Concurrent users on one tracking store: two imports into one run, two resumes of one run, two
`main` runs in one experiment, all at the same moment, as separate processes (the `alod` command).

Nothing may be lost or duplicated, and a refusal must say why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-concurrency"
TINY = ["--arch", "tiny", "--batch-size", "4", "--workers", "0", "--lr", "0.04"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, sqlite_tracking):
    from alod.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("concurrency")
    write_dataset(root / "data", train=32, val=8, seed=0)
    with sqlite_tracking(root):
        yield root


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra or {})}


def start(root: Path, *args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "entrypoints.cli", *args], cwd=root, env=_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def alod(root: Path, *args, env: dict | None = None) -> tuple[int, str]:
    return finish(start(root, *args, env=env))


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def steps(run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client().get_metric_history(run_id, key))


def children(run_id: str) -> list:
    exp = client().get_run(run_id).info.experiment_id
    return client().search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")


def cycle_args(root: Path, *extra) -> list[str]:
    return ["cycle", "--data", str(root / "data"), "--protocol", "pool", "--sampler", "random", "--cycles", "2",
            "--per-cycle", "6", "--epochs", "1", *TINY, "--register", "false", "--experiment-name", EXPERIMENT,
            "--work-dir", str(root / "work"), *extra]


def test_two_resumes_of_one_run_at_once(root):
    """The second resume is refused before it touches the run (status, metrics), naming the holder."""
    rc, out = alod(root, *cycle_args(root), env={"ALOD_FAULT": "after_select:1"})
    assert rc == 137, out
    run_id = client().search_runs([client().get_experiment_by_name(EXPERIMENT).experiment_id],
                                  order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id
    resume = ["cycle", "--resume-run-id", run_id, "--work-dir", str(root / "work")]
    a, b = start(root, *resume), start(root, *resume)
    results = [finish(a), finish(b)]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    refused = next(out for rc, out in results if rc == 1)
    assert f"run {run_id} is in use by process" in refused and "run.lock" in refused, refused
    assert "Traceback" not in refused
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"  # the refused one did not mark it failed
    for key in ("mAP50", "labeled_images", "loss"):
        assert steps(run_id, key) == [1, 2], key
    assert sorted(c.data.tags["alod.cycle"] for c in children(run_id)) == ["1", "2"]
    for child in children(run_id):
        assert steps(child.info.run_id, "loss") == [1]
    # a resume after both ended is not refused: the lock died with its process
    rc, out = alod(root, *resume)
    assert rc == 0 and "already done" in out, out


def test_two_imports_into_one_run_at_once(root, tmp_path):
    """Each import reads the store, merges and writes it; the second waits for the first's lock and
    merges on top of it. ALOD_DELAY holds each import between its merge and its write, so that
    without the lock the later write would drop the earlier import's labels every time."""
    import mlflow

    from alod.data.bdd100k import load_labels, save_frames, split_paths
    from alod.data.pool import LabeledState

    work = root / "work-files"
    args = cycle_args(root, "--oracle", "files")
    args[args.index("--work-dir") + 1] = str(work)
    rc, out = alod(root, *args)
    assert rc == 0 and "waits for the labels of cycle 1" in out, out
    run_id = re.findall(r"cycle run ([0-9a-f]+)", out)[-1]
    batch = LabeledState.load(work / "runs" / run_id / "labeled.json").labeled()
    assert len(batch) == 6
    truth = {f.name: f for f in load_labels(split_paths(root / "data", "train")[0])[0]}
    save_frames([truth[n] for n in batch[:3]], tmp_path / "alice.json")
    save_frames([truth[n] for n in batch[3:]], tmp_path / "bob.json")
    delay = {"ALOD_DELAY": "import_before_write:3"}
    t0 = time.monotonic()
    procs = [start(root, "import-labels", run_id, str(tmp_path / name), "--work-dir", str(work), env=delay)
             for name in ("alice.json", "bob.json")]
    results = [finish(p) for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    assert time.monotonic() - t0 >= 6  # one after the other: each held the store for its 3 s
    assert all("3 image(s) added" in out for _, out in results), results
    # the last one to finish saw everything
    assert sum("every selected image has labels" in out for _, out in results) == 1, results
    stored = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="labels/labels.json",
                                                      dst_path=str(tmp_path / "dl")))
    assert sorted(f.name for f in load_labels(stored)[0]) == sorted(batch)
    records = [a.path for a in client().list_artifacts(run_id, "labels/imports")]
    assert len(records) == 2, records
    # and the cycle trains on exactly the six images' boxes
    rc, out = alod(root, "cycle", "--resume-run-id", run_id, "--work-dir", str(work))
    assert rc == 0, out
    boxes = sum(truth[n].num_trainable for n in batch)
    assert {m.step: m.value for m in client().get_metric_history(run_id, "labeled_boxes")} == {1: boxes}


def test_two_main_runs_in_one_experiment(root):
    """Main B starts while main A's cycle run is still running: B reuses A's finished pretrain and rank
    runs, never A's running cycle run, and both comparisons end complete and equal. ALOD_DELAY holds A
    after each cycle's metrics, so that A's cycle run is still running when B decides what to reuse
    (without it, a fast A could finish first and B would rightly reuse it)."""
    exp_name = "alod-concurrency-main"
    args = ["run", "--data", str(root / "data"), *TINY, "--samplers", "random", "--seeds", "0",
            "--pretrain-epochs", "0", "--epochs", "1", "--min-iterations", "6", "--cycles", "2",
            "--per-cycle", "6", "--batches", "2", "--batch-images", "16", "--experiment-name", exp_name,
            "--work-dir", str(root / "work-main")]
    a = start(root, *args, env={"ALOD_DELAY": "after_metrics:15"})
    deadline = time.monotonic() + 300
    running = []
    while not running and time.monotonic() < deadline and a.poll() is None:
        time.sleep(0.5)
        exp = client().get_experiment_by_name(exp_name)
        if exp is not None:
            running = client().search_runs([exp.experiment_id], "tags.`alod.step` = 'cycle' and "
                                           "attributes.status = 'RUNNING'")
    assert running, "main A never had a running cycle run"
    b = start(root, *args)
    (rc_a, out_a), (rc_b, out_b) = finish(a), finish(b)
    assert rc_a == 0 and rc_b == 0, (out_a, out_b)
    assert "reusing" not in out_a
    assert "reusing finished pretrain run" in out_b and "reusing finished rank run" in out_b, out_b
    assert "reusing finished cycle run" not in out_b, out_b  # A's was still running
    exp = client().get_experiment_by_name(exp_name).experiment_id
    cycles = client().search_runs([exp], "tags.`alod.step` = 'cycle'")
    assert len(cycles) == 2 and all(r.info.status == "FINISHED" for r in cycles)
    curves = [{m.step: m.value for m in client().get_metric_history(r.info.run_id, "mAP50")} for r in cycles]
    assert sorted(curves[0]) == [1, 2] and curves[0] == curves[1]  # CPU: the same run twice, bit for bit
    mains = client().search_runs([exp], "tags.`alod.step` = 'main'")
    assert len(mains) == 2 and all("final_mAP50.random" in r.data.metrics for r in mains)
    linked = {r.data.tags["alod.main_run"] for r in cycles}
    assert linked == {r.info.run_id for r in mains}  # each main's own cycle run
