"""The run folder owns the layout of work_dir/runs/<id> and the local-copy-else-artifact rule."""

from __future__ import annotations

import json

import mlflow
import pytest

from alod import run_folder
from alod.run_folder import RunFolder


def test_layout_and_artifact_names(tmp_path) -> None:
    folder = RunFolder(tmp_path, "abc")
    assert folder.path == tmp_path / "runs" / "abc"
    assert folder / run_folder.LABELED == tmp_path / "runs" / "abc" / "labeled.json"
    assert run_folder.LABELED.artifact_dir == "state"
    assert run_folder.cycle_checkpoint(3).local == "cycle_003.pt"
    assert run_folder.cycle_state(3).artifact_dir == "state/cycles"
    assert folder.downloads == tmp_path / "downloads" / "abc"  # never inside the run folder
    with pytest.raises(ValueError, match="not uploaded"):
        run_folder.RANKING.artifact_dir


def test_local_copy_first_else_the_artifact_else_none(tmp_path, sqlite_tracking) -> None:
    with sqlite_tracking(tmp_path):
        mlflow.set_experiment("run-folder")
        with mlflow.start_run() as run:
            folder = RunFolder(tmp_path / "work", run.info.run_id)
            folder.create()
            (folder / run_folder.LABELED).write_text(json.dumps({"a.jpg": 1}))
            mlflow.log_artifact(str(folder / run_folder.LABELED), run_folder.LABELED.artifact_dir)
        assert folder.local_or_artifact(run_folder.LABELED) == folder / run_folder.LABELED
        (folder / run_folder.LABELED).write_text(json.dumps({"a.jpg": 1, "b.jpg": 2}))  # newer local copy wins
        assert json.loads(folder.local_or_artifact(run_folder.LABELED).read_text()) == {"a.jpg": 1, "b.jpg": 2}
        (folder / run_folder.LABELED).unlink()  # another machine: only the artifact
        fetched = folder.local_or_artifact(run_folder.LABELED)
        assert fetched.is_relative_to(folder.downloads) and json.loads(fetched.read_text()) == {"a.jpg": 1}
        assert folder.local_or_artifact(run_folder.AUTO) is None  # neither here nor uploaded
