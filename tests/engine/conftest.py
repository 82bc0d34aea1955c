"""Tiny generated scenes: coloured rectangles on a plain background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine.train import TrainConfig, fit
from alod.models import build_detector

# det_20 id -> colour; distinct colours make the task learnable in seconds.
COLOURS = {1: (220, 40, 40), 3: (40, 200, 60), 9: (50, 80, 230)}


def make_scenes(root: Path, n: int = 6, seed: int = 0, size: tuple[int, int] = (320, 180)) -> list[Frame]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    w, h = size
    frames = []
    for i in range(n):
        img = Image.new("RGB", size, (128, 128, 128))
        draw = ImageDraw.Draw(img)
        boxes, labels = [], []
        for label in rng.permutation(list(COLOURS))[: rng.integers(1, 4)]:
            for _ in range(10):  # place without overlap
                bw, bh = rng.integers(h // 9, h * 7 // 18, size=2)
                x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
                box = [x1, y1, x1 + bw, y1 + bh]  # x2/y2 exclusive
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
                    break
            else:
                continue
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=COLOURS[int(label)])
            boxes.append(box)
            labels.append(int(label))
        name = f"scene_{i:02d}.jpg"
        img.save(root / name, quality=95)
        frames.append(Frame(name=name, boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=labels, width=w, height=h))
    return frames


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Frame], Path]:
    root = tmp_path_factory.mktemp("scenes")
    return make_scenes(root), root


@pytest.fixture(scope="session")
def trained_tiny(scenes) -> tuple[torch.nn.Module, list[dict]]:
    """A tiny detector overfit on the scenes (~190 SGD steps); shared, do not modify."""
    frames, root = scenes
    torch.manual_seed(0)
    model = build_detector("tiny")
    # repeat the scenes so an epoch is 12 steps and the cosine schedule is smooth
    train = DetectionDataset(frames * 8, root, train=True)
    config = TrainConfig(epochs=16, batch_size=4, lr=0.08, warmup_iters=12, clip_grad_norm=5.0, workers=0, seed=0)
    history = fit(model, train, config, progress=False)
    return model.eval(), history
