"""A full disk: `work_dir` on a small tmpfs that fills up while a cycle writes its checkpoint.

The command must stop with an error naming the file and the filesystem (no traceback), the last good
state (labeled set, the previous cycle's checkpoint) must be intact with no half-written files left,
and once space is freed a resume with the run id alone must continue to the uninterrupted run's
results. Needs root (or CAP_SYS_ADMIN) for `mount -t tmpfs`; skips saying so otherwise."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

EXPERIMENT = "alod-full-disk"


def _mount(point: Path, size: int) -> None:
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")


def _umount(point: Path) -> None:
    if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def store(tmp_path, monkeypatch):
    from alod.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", train=24, val=8, seed=0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts (./mlruns) stay off the small filesystem
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return tmp_path


@pytest.fixture
def small_disk(tmp_path):
    point = tmp_path / "disk"
    mounted = []

    def mount(size: int) -> Path:
        _mount(point, size)
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        if mounted:
            _umount(point)


def cycle(store: Path, work: Path, *extra) -> tuple[int, str]:
    from entrypoints.cli import cli

    args = ["cycle", "--data", str(store / "data"), "--protocol", "pool", "--sampler", "random", "--cycles", "2",
            "--per-cycle", "6", "--epochs", "1", "--arch", "tiny", "--batch-size", "4",
            "--workers", "0", "--lr", "0.04", "--register", "false", "--experiment-name", EXPERIMENT,
            "--work-dir", str(work), *extra]
    if "--resume-run-id" in extra:
        args = ["cycle", *extra, "--work-dir", str(work)]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def history(run_id: str, key: str) -> dict:
    from mlflow import MlflowClient

    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}


def _tensors_equal(a: Path, b: Path) -> bool:
    import torch

    from alod.models import load_checkpoint

    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_disk_fills_during_a_checkpoint_write(store, small_disk):
    from mlflow import MlflowClient

    rc, out = cycle(store, store / "ref")
    assert rc == 0, out
    ref_id = re.findall(r"cycle run ([0-9a-f]+)", out)[-1]
    ref_dir = store / "ref" / "runs" / ref_id
    size = (ref_dir / "cycle_001.pt").stat().st_size
    # room for cycle 1's checkpoint and the state files, not for cycle 2's checkpoint beside it
    disk = small_disk((size * 3 // 2) // 4096 * 4096)

    rc, out = cycle(store, disk)
    assert rc == 1, out
    found = re.findall(r"runs/([0-9a-f]{32})/cycle_002\.pt", out)
    assert found, out
    run_id = found[0]
    run_dir = disk / "runs" / run_id
    assert f"no space left on device writing {run_dir / 'cycle_002.pt'}" in out, out
    assert "Traceback" not in out
    # the last good state: cycle 2's labels (bought before training) and cycle 1's checkpoint, nothing half
    assert json.loads((run_dir / "labeled.json").read_text()) == json.loads((ref_dir / "labeled.json").read_text())
    assert _tensors_equal(run_dir / "cycle_001.pt", ref_dir / "cycle_001.pt")
    assert not (run_dir / "cycle_002.pt").exists()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    assert MlflowClient().get_run(run_id).info.status == "FAILED"
    assert sorted(history(run_id, "mAP50")) == [1]

    # space freed: the run id alone continues it
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    rc, out = cycle(store, disk, "--resume-run-id", run_id)
    assert rc == 0, out
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    for key in ("mAP50", "labeled_images", "labeled_boxes", "loss"):
        assert history(run_id, key) == history(ref_id, key), key  # CPU: equal to the uninterrupted run
    exp = MlflowClient().get_run(run_id).info.experiment_id
    children = MlflowClient().search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(c.data.tags["alod.cycle"] for c in children) == ["1", "2"]
    for child in children:  # each cycle's one epoch logged once
        assert [m.step for m in MlflowClient().get_metric_history(child.info.run_id, "loss")] == [1]
    assert _tensors_equal(run_dir / "cycle_002.pt", ref_dir / "cycle_002.pt")


def test_disk_full_during_a_state_write_keeps_the_old_state(small_disk):
    from alod.data.pool import LabeledState
    from alod.fileio import DiskFullError

    disk = small_disk(64 * 1024)
    state = LabeledState()
    state.add(["a.jpg", "b.jpg"], 1)
    path = state.save(disk / "labeled.json")
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:  # fill the filesystem
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    big = LabeledState()
    big.add([f"image-{i:06d}-with-a-long-name.jpg" for i in range(5000)], 2)
    with pytest.raises(DiskFullError, match=re.escape(f"no space left on device writing {path}")):
        big.save(path)
    assert LabeledState.load(path).to_dict() == {"a.jpg": 1, "b.jpg": 1}
    assert sorted(p.name for p in disk.iterdir()) == ["ballast", "labeled.json"]
