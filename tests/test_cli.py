"""The `alod` command group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_without_loading_torch_or_mlflow():
    """`alod --help` and `alod CMD --help` answer at once: the commands import torch and MLflow when they
    run, not when the group is built (they took seconds to load before anything was asked)."""
    code = ("import sys; from click.testing import CliRunner; from entrypoints.cli import cli; "
            "r = CliRunner().invoke(cli, sys.argv[1:]); print(r.output); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'torchvision', 'mlflow') if m in sys.modules]; assert not heavy, heavy")
    listing = subprocess.run([sys.executable, "-c", code, "--help"], cwd=REPO, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    for command in ("synth", "pretrain", "rank", "cycle", "run", "import-labels", "compare", "build-weights"):
        assert f"  {command} " in listing.stdout
    for command in ("run", "cycle", "build-weights"):
        one = subprocess.run([sys.executable, "-c", code, command, "--help"], cwd=REPO, capture_output=True,
                             text=True)
        assert one.returncode == 0, one.stderr
        assert "--help" in one.stdout
