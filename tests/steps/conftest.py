"""A tiny synthetic dataset, written once, for driving the cycle loop's phases without MLflow."""

from __future__ import annotations

import pytest

from alod.data.splits import load_split
from alod.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(root, train split, val split): 12 train and 4 val scenes of 160x96."""
    root = tmp_path_factory.mktemp("tiny-data")
    write_dataset(root, train=12, val=4, seed=3, size=(160, 96))
    return root, load_split(root, "train"), load_split(root, "val")
