"""Torch dataset over `Frame`s, and an aspect-ratio grouped batch sampler.

Images are returned at their own size: the detector's transform resizes them,
so predictions come back in original image coordinates. Ignore regions
(`Frame.ignore`) are never training targets.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from alod.data.bdd100k import resolve_image_path
from alod.data.frames import Frame


class ImageReadError(RuntimeError):
    """An image that is missing or cannot be decoded; the message names the file."""


def _transforms(train: bool) -> v2.Compose:
    steps: list[Any] = [v2.RandomHorizontalFlip(0.5)] if train else []
    steps += [
        v2.ClampBoundingBoxes(),
        # Boxes left with no area after clamping would crash Faster R-CNN's loss.
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


class DetectionDataset(Dataset):
    """(image float [3,H,W] in 0..1, target dict) for torchvision detectors.

    target: boxes (BoundingBoxes XYXY, exclusive x2/y2), labels int64 (det_20
    ids), image_id (index into `frames`). Training mode adds a random flip.
    """

    def __init__(self, frames: Sequence[Frame], image_root: str | Path, train: bool = False):
        self.frames = frames
        self.image_root = Path(image_root)
        self.train = train
        self.transforms = _transforms(train)
        self._sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def image_path(self, index: int) -> Path:
        return resolve_image_path(self.image_root, self.frames[index].name)

    def read_image(self, index: int) -> torch.Tensor:
        """uint8 RGB [3,H,W]; ImageReadError names the file when that fails."""
        path = self.image_path(index)
        try:
            data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        except FileNotFoundError:
            raise ImageReadError(f"image not found: {path} (frame {self.frames[index].name!r})") from None
        except OSError as e:
            raise ImageReadError(f"cannot read image {path}: {e}") from None
        try:
            return decode_image(data, mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as e:
            raise ImageReadError(f"cannot decode image {path} (corrupt or not an image): {e}") from None

    def get_height_and_width(self, index: int) -> tuple[int, int]:
        """(H, W) from the Frame or the image header, without decoding pixels."""
        if index not in self._sizes:
            frame = self.frames[index]
            if frame.width and frame.height:
                self._sizes[index] = (int(frame.height), int(frame.width))
            else:
                path = self.image_path(index)
                try:
                    with Image.open(path) as im:  # lazy: reads the header only
                        w, h = im.size
                except FileNotFoundError:
                    raise ImageReadError(f"image not found: {path} (frame {frame.name!r})") from None
                except OSError as e:
                    raise ImageReadError(f"cannot read image header {path}: {e}") from None
                self._sizes[index] = (h, w)
        return self._sizes[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        frame = self.frames[index]
        image = tv_tensors.Image(self.read_image(index))
        h, w = image.shape[-2:]
        self._sizes.setdefault(index, (int(h), int(w)))
        keep = ~frame.ignore
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(frame.boxes[keep]).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.from_numpy(frame.labels[keep]).to(torch.int64),
            "image_id": index,
        }
        image, target = self.transforms(image, target)
        return image, target


def collate_fn(batch: Sequence[tuple[Any, Any]]) -> tuple[tuple, tuple]:
    """Images differ in size: keep lists, the detector batches them itself."""
    return tuple(zip(*batch))  # type: ignore[return-value]


# --------------------------------------------------------------------------- sampling


def aspect_ratio_groups(dataset: Any, k: int = 3) -> list[int]:
    """Group id per image: aspect ratio w/h quantized into 2k+2 log-spaced bins."""
    edges = [2.0 ** (i / k) for i in range(-k, k + 1)]  # 0.5 .. 2.0
    groups = []
    for i in range(len(dataset)):
        h, w = dataset.get_height_and_width(i)
        groups.append(bisect.bisect_right(edges, w / h))
    return groups


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images share an aspect-ratio group, so padding is small.

    Wraps any index sampler (RandomSampler, DistributedSampler). Full
    single-group batches are yielded as they fill; at the end the leftovers are
    batched together (sorted by group). The batch count is therefore always
    ceil(len(sampler) / batch_size), identical on every DDP rank.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[int, list[int]] = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
        rest = [i for g in sorted(buckets) for i in buckets[g]]
        for start in range(0, len(rest), self.batch_size):
            yield rest[start : start + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)  # type: ignore[arg-type]
