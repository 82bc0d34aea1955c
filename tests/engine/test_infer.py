"""Streaming inference: one Frame per image, in order, batch-size independent."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine.infer import InferenceStats, predict


@pytest.fixture(scope="module")
def model(trained_tiny) -> torch.nn.Module:
    return trained_tiny[0]


def _frames(scenes) -> tuple[list[Frame], DetectionDataset]:
    frames, root = scenes
    # names out of alphabetical order: the output must follow the dataset, not sort
    frames = frames[::-1]
    return frames, DetectionDataset(frames, root)


def test_one_frame_per_image_in_order(model, scenes) -> None:
    frames, ds = _frames(scenes)
    out = predict(model, ds, batch_size=4)
    assert isinstance(out, types.GeneratorType)
    preds = list(out)
    assert [p.name for p in preds] == [f.name for f in frames]
    for p in preds:
        assert isinstance(p, Frame) and p.scores is not None
        assert p.boxes.dtype == np.float32 and p.labels.dtype == np.int64
        assert len(p.boxes) == len(p.labels) == len(p.scores) > 0
        assert (p.width, p.height) == (320, 180)
        assert p.labels.min() >= 1 and p.labels.max() <= 10
        assert (p.boxes[:, 2] <= 320).all() and (p.boxes[:, 3] <= 180).all()


def test_batch_size_and_workers_do_not_change_results(model, scenes) -> None:
    _, ds = _frames(scenes)
    one = list(predict(model, ds, batch_size=1))
    for other in (list(predict(model, ds, batch_size=4)), list(predict(model, ds, batch_size=3, workers=2))):
        for a, b in zip(one, other, strict=True):
            assert a.name == b.name and len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
            np.testing.assert_array_equal(a.labels, b.labels)


def test_streams_lazily(model, scenes) -> None:
    frames, ds = _frames(scenes)
    loaded = []

    class Counting(DetectionDataset):
        def __getitem__(self, i):
            loaded.append(i)
            return super().__getitem__(i)

    it = predict(model, Counting(frames, ds.image_root), batch_size=2)
    next(it)
    assert len(loaded) == 2  # one batch read, not the whole pool
    assert len(list(it)) == len(frames) - 1


def test_original_coordinates(model, tmp_path, scenes) -> None:
    from PIL import Image

    frames, root = scenes
    Image.open(root / frames[0].name).resize((160, 90)).save(tmp_path / "small.jpg")
    (pred,) = predict(model, DetectionDataset([Frame("small.jpg")], tmp_path))
    assert (pred.width, pred.height) == (160, 90)
    assert (pred.boxes[:, [0, 2]] <= 160).all() and (pred.boxes[:, [1, 3]] <= 90).all()


def test_refuses_training_dataset(model, scenes) -> None:
    frames, root = scenes
    with pytest.raises(ValueError, match="train=False"):
        next(predict(model, DetectionDataset(frames, root, train=True)))


def test_stats_count_images_and_time_without_changing_results(model, scenes) -> None:
    frames, ds = _frames(scenes)
    stats = InferenceStats()
    assert stats.images_per_second == 0.0
    with_stats = list(predict(model, ds, batch_size=4, stats=stats))
    assert stats.images == len(frames) and stats.seconds > 0
    assert stats.images_per_second == pytest.approx(len(frames) / stats.seconds)
    for a, b in zip(with_stats, predict(model, ds, batch_size=4), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
