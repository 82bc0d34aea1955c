"""Shared test fixtures: real BDD100K label files and tiny synthetic data."""

from __future__ import annotations

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
