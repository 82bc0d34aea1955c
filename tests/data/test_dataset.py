"""DetectionDataset targets, flips, sizes, errors; the grouped batch sampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)
from torchvision import tv_tensors

import alod.data.dataset as dataset_mod
from alod.data.dataset import (
    DetectionDataset,
    GroupedBatchSampler,
    ImageReadError,
    aspect_ratio_groups,
    collate_fn,
)
from alod.data.frames import Frame

W, H = 100, 60


def _write(root: Path, name: str, size: tuple[int, int] = (W, H)) -> None:
    # left half red, right half blue: a flip is visible in the pixels
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:, : size[0] // 2] = (255, 0, 0)
    img[:, size[0] // 2 :] = (0, 0, 255)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / name)


@pytest.fixture
def data(tmp_path: Path) -> tuple[list[Frame], Path]:
    _write(tmp_path, "a.png")
    _write(tmp_path, "sub/b.png", (60, 100))
    frames = [
        Frame(
            name="a.png",
            boxes=np.array([[10, 5, 30, 25], [50, 10, 90, 50], [0, 0, 20, 20]], np.float32),
            labels=[1, 3, 3],
            ignore=[False, False, True],
        ),
        Frame(name="sub/b.png"),  # no boxes: kept, it teaches background
    ]
    return frames, tmp_path


def test_item_targets(data) -> None:
    frames, root = data
    ds = DetectionDataset(frames, root)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and tuple(boxes.canvas_size) == (H, W)
    # the ignore region (third box) is not a target
    assert boxes.tolist() == [[10, 5, 30, 25], [50, 10, 90, 50]]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 3]
    assert target["image_id"] == 0
    image, target = ds[1]
    assert image.shape == (3, 100, 60) and target["boxes"].shape == (0, 4) and target["image_id"] == 1


def test_boxes_clamped_and_degenerate_dropped(tmp_path: Path) -> None:
    _write(tmp_path, "a.png")
    frames = [Frame("a.png", boxes=np.array([[-5, -5, 20, 20], [90, 10, 130, 40], [40, 40, 40, 50]], np.float32),
                    labels=[1, 2, 3])]
    with pytest.warns(dataset_mod.DroppedBoxesWarning, match=r"frame 'a\.png': 1 box\(es\) at rows \[2\]"):
        _, target = DetectionDataset(frames, tmp_path)[0]
    assert target["boxes"].tolist() == [[0, 0, 20, 20], [90, 10, 100, 40]]
    assert target["labels"].tolist() == [1, 2]


def test_eval_never_flips(data) -> None:
    frames, root = data
    ds = DetectionDataset(frames, root, train=False)
    first = ds[0]
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = ds[0]
        assert torch.equal(image, first[0]) and torch.equal(target["boxes"], first[1]["boxes"])


def test_train_flip_moves_boxes(data) -> None:
    frames, root = data
    plain_image, plain = DetectionDataset(frames, root)[0]
    ds = DetectionDataset(frames, root, train=True)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        image, target = ds[0]
        flipped = torch.equal(image, plain_image.flip(-1))
        assert flipped or torch.equal(image, plain_image)
        if flipped:
            x1, y1, x2, y2 = plain["boxes"].unbind(-1)
            # exclusive x2: a box [x1, x2) maps to [W - x2, W - x1)
            assert torch.equal(target["boxes"], torch.stack([W - x2, y1, W - x1, y2], -1))
            assert target["boxes"].tolist()[0] == [70, 5, 90, 25]
        else:
            assert torch.equal(target["boxes"], plain["boxes"])
        assert torch.equal(target["labels"], plain["labels"])
        seen.add(flipped)
    assert seen == {True, False}


def test_height_width_without_decoding(data, monkeypatch) -> None:
    frames, root = data

    def no_decode(*a, **k):
        raise AssertionError("decoded pixels")

    monkeypatch.setattr(dataset_mod, "decode_image", no_decode)
    ds = DetectionDataset(frames, root)
    assert ds.get_height_and_width(0) == (H, W)  # PIL header read
    assert ds.get_height_and_width(1) == (100, 60)
    (root / "a.png").unlink()
    assert ds.get_height_and_width(0) == (H, W)  # cached
    # known sizes need no file at all
    known = DetectionDataset([Frame("missing.jpg", width=1280, height=720)], root)
    assert known.get_height_and_width(0) == (720, 1280)


def test_missing_image_error_names_file(data) -> None:
    frames, root = data
    ds = DetectionDataset(frames + [Frame("gone/nothing.jpg")], root)
    with pytest.raises(ImageReadError, match=r"image not found: .*gone/nothing\.jpg"):
        ds[2]
    with pytest.raises(ImageReadError, match=r"nothing\.jpg"):
        ds.get_height_and_width(2)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_fn)
    with pytest.raises(ImageReadError, match=r"nothing\.jpg"):
        next(iter(loader))


def test_corrupt_image_error_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = DetectionDataset([Frame("bad.jpg")], tmp_path)
    with pytest.raises(ImageReadError, match=r"cannot decode image .*bad\.jpg"):
        ds[0]


def test_escaping_name_refused(tmp_path: Path) -> None:
    ds = DetectionDataset([Frame("../outside.jpg")], tmp_path / "root")
    with pytest.raises(ValueError):
        ds[0]


def test_collate_keeps_lists(data) -> None:
    frames, root = data
    images, targets = collate_fn([DetectionDataset(frames, root)[i] for i in range(2)])
    assert len(images) == 2 and [t["image_id"] for t in targets] == [0, 1]


class _Sizes:
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def get_height_and_width(self, i):
        return self.sizes[i]


def test_aspect_ratio_groups() -> None:
    groups = aspect_ratio_groups(_Sizes([(720, 1280), (360, 640), (1280, 720), (100, 100)]))
    assert groups[0] == groups[1] and len({groups[0], groups[2], groups[3]}) == 3


def test_grouped_batches_group_and_cover() -> None:
    group_ids = [i % 3 for i in range(23)]
    sampler = GroupedBatchSampler(RandomSampler(range(23), generator=torch.Generator().manual_seed(0)), group_ids, 4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(23 / 4)
    assert sorted(i for b in batches for i in b) == list(range(23))
    full = [b for b in batches if len(b) == 4]
    # all but the leftover tail are single-group
    assert sum(len({group_ids[i] for i in b}) == 1 for b in full) >= len(batches) - 3


def test_grouped_batches_same_length_on_every_rank() -> None:
    group_ids = [0 if i % 5 else 1 for i in range(37)]
    data = list(range(37))
    counts = []
    for rank in range(3):
        s = GroupedBatchSampler(DistributedSampler(data, num_replicas=3, rank=rank, seed=1), group_ids, 4)
        s.set_epoch(2)
        counts.append(len(list(s)))
        assert counts[-1] == len(s)
    assert len(set(counts)) == 1


def test_grouped_batches_keep_order_with_one_group() -> None:
    s = GroupedBatchSampler(SequentialSampler(range(7)), [0] * 7, 3)
    assert list(s) == [[0, 1, 2], [3, 4, 5], [6]]


def test_seeded_flips_depend_on_image_and_seed_only(tmp_path: Path) -> None:
    """With augment_seed set (fit sets it per epoch), an image's flip is the same
    whatever was read before it, in whichever process: exact mid-epoch resume needs that."""
    names = []
    for i in range(8):
        name = f"im{i}.png"
        Image.new("RGB", (40, 20), (0, 0, 0)).save(tmp_path / name)
        names.append(name)
    frames = [Frame(name, np.array([[0, 0, 10, 20]], np.float32), [3], width=40, height=20) for name in names]
    ds = DetectionDataset(frames, tmp_path, train=True)
    ds.augment_seed = 7

    def flipped(i: int) -> bool:
        return float(ds[i][1]["boxes"][0, 0]) == 30.0  # x1 of [0, 10) mirrored in a 40-wide image

    forward = [flipped(i) for i in range(8)]
    torch.manual_seed(123)  # the global RNG plays no part
    assert [flipped(i) for i in reversed(range(8))] == forward[::-1]
    assert 0 < sum(forward) < 8  # both outcomes occur
    patterns = set()
    for seed in range(10):  # another epoch, other flips
        ds.augment_seed = seed
        patterns.add(tuple(flipped(i) for i in range(8)))
    assert len(patterns) > 5
