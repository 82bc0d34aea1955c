"""The seeded chaos run (benchmarks/chaos.py), short: up to 5 `kill -9` at random moments of a 3-cycle run,
each resumed with the run id alone, and 3 kills of `alod import-labels` with the files oracle.
The script checks everything (labeled set and metrics equal to an uninterrupted run, bit for bit;
no step twice; one finished child run per cycle; no temp files) and exits non-zero on any problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_five_random_kills_lose_nothing(tmp_path):
    out = tmp_path / "chaos"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chaos.py"), "--out", str(out), "--kills", "5",
                           "--import-kills", "3", "--seed", "1", "--cycles", "3", "--per-cycle", "6",
                           "--train", "30", "--val", "6", "--epochs", "2"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    result = json.loads((out / "chaos.json").read_text())
    # the moments are drawn over the reference's wall time; a resume can reach the end before the last
    # ones (it redoes less than the clock assumes), so at least 3 of the 5 must have hit a live process
    assert result["cycle"]["kills"] >= 3, result["cycle"]
    assert result["cycle"]["labels_lost"] == 0
    assert result["cycle"]["problems"] == [] and result["import"]["problems"] == []
    assert result["import"]["labels_lost"] == 0
