"""A tiny untrained detector and a handful of synthetic scenes, built once."""

from __future__ import annotations

import pytest
import torch

from alod.data.bdd100k import load_labels
from alod.data.synthetic import write_dataset
from alod.models import build_detector


@pytest.fixture(scope="session")
def synthetic_pool(tmp_path_factory):
    """(frames, image root) of 6 synthetic 320x180 scenes."""
    out = tmp_path_factory.mktemp("synthetic")
    paths = write_dataset(out, train=6, val=0, seed=11)
    frames, _ = load_labels(paths["train"])
    return frames, out / "images" / "100k" / "train"


@pytest.fixture(scope="session")
def tiny_model():
    # Untrained: near-uniform class probabilities, so every image has detections
    # above torchvision's 0.05 threshold and many proposals pass for several classes.
    torch.manual_seed(0)
    return build_detector("tiny").eval()
