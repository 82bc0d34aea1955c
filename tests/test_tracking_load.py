"""The tracking server under load (benchmarks/tracking_load.py, small): several cycle runs at once on
the team stack's `mlflow server` (PostgreSQL + S3): every metric at every step exactly once, one child
run per cycle, identical runs logging identical values. Needs PostgreSQL's server binaries (skips
without them unless ALOD_REQUIRE_TEAM_STACK=1, as in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.teamstack import postgres_bin_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_concurrent_cycle_runs_on_the_team_server(tmp_path):
    if postgres_bin_dir() is None:
        message = "PostgreSQL server binaries not found (Debian: apt-get install -y postgresql)"
        if os.environ.get("ALOD_REQUIRE_TEAM_STACK"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "load"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tracking_load.py"), "--out", str(out),
                           "--runs", "4", "--cycles", "2", "--train", "16", "--per-cycle", "4",
                           "--configs", "server-N"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    rows = json.loads((out / "tracking_load.json").read_text())
    assert [(r["config"], r["runs"], r["problems"]) for r in rows] == [("server-N", 4, 0)]
    assert rows[0]["tracking_s_per_cycle"] > 0
