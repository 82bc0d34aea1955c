"""`mlflow run . -e main` as a user types it: with no experiment name (MLflow's Default
experiment) and with a non-default one. Every step's run must land beside the main run,
and main must re-enter its own run after each step (it used to crash right after pretrain
unless the experiment was named `alod`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The smallest main that still runs every step: one sampler, one seed, one cycle, one epoch.
TINY_MAIN = dict(arch="tiny", samplers="random", seeds="0", fraction=0.5, pretrain_epochs=1, epochs=1,
                 batch_size=4, lr=0.04, cycles=1, per_cycle=4, batches=2, batch_images=8, workers=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from alod.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("mlflow-main")
    write_dataset(root / "data", train=16, val=6, seed=0)
    return root


def _mlflow_run_main(root: Path, experiment: str | None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "main", "--env-manager", "local"]
    if experiment is not None:
        cmd += ["--experiment-name", experiment]
    params = {**TINY_MAIN, "data": str(root / "data"), "work_dir": str(root / "work")}
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    # A user's shell: none of MLflow's run variables, this interpreter first on PATH
    # (`--env-manager local` runs `python` from PATH).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [None, "bars"], ids=["default-experiment", "named-experiment"])
def test_mlflow_run_main_keeps_every_step_in_its_experiment(root, experiment):
    from mlflow import MlflowClient

    proc = _mlflow_run_main(root, experiment)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mlflow run -e main failed:\n{out[-6000:]}"
    assert "does not match environment run ID" not in out
    main_id = re.findall(r"main run ([0-9a-f]{32})", out)[-1]

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    main = client.get_run(main_id)
    expected = client.get_experiment_by_name(experiment or "Default")
    assert main.info.experiment_id == expected.experiment_id
    assert main.info.status == "FINISHED" and main.data.tags["alod.step"] == "main"
    # Its steps ran in the same experiment, each as a finished top-level run...
    steps = [r for r in client.search_runs([expected.experiment_id])
             if r.data.tags.get("alod.step") in ("pretrain", "rank", "cycle")]
    assert sorted(r.data.tags["alod.step"] for r in steps) == ["cycle", "pretrain", "rank"]
    assert all(r.info.status == "FINISHED" for r in steps)
    # ...and none in the `alod` experiment the main entry point's default names.
    assert client.get_experiment_by_name("alod") is None
    assert {a.path for a in client.list_artifacts(main_id, "compare")} >= {"compare/comparison.csv"}
