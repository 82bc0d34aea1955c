"""Shared test fixtures: real BDD100K label files and tiny synthetic data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI lays shared/ beside the clone; ALOD_SHARED overrides for other layouts.
SHARED = Path(os.environ.get("ALOD_SHARED", REPO.parent / "shared"))
BDD_FIXTURES = SHARED / "fixtures" / "bdd100k"


@pytest.fixture(scope="session")
def bdd_fixtures() -> Path:
    if not BDD_FIXTURES.is_dir():
        pytest.fail(f"real BDD100K fixtures not found at {BDD_FIXTURES}; set ALOD_SHARED")
    return BDD_FIXTURES


@contextlib.contextmanager
def _sqlite_tracking(folder: Path):
    """MLflow tracking (the variable subprocesses inherit, and this process's client) on a fresh SQLite
    store in `folder`; what was set before comes back afterwards."""
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # sets MLFLOW_TRACKING_URI too
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(old)  # None unsets both


@pytest.fixture(scope="session")
def sqlite_tracking():
    """`with sqlite_tracking(folder):` a throwaway tracking store, for fixtures of any scope."""
    return _sqlite_tracking
