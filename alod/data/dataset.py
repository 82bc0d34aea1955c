"""Torch dataset over `Frame`s, and an aspect-ratio grouped batch sampler.

Images are returned at their own size: the detector's transform resizes them,
so predictions come back in original image coordinates. Ignore regions
(`Frame.ignore`) are never training targets.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from alod.data.bdd100k import resolve_image_path
from alod.data.frames import Frame
from alod.data.images import MAX_IMAGE_PIXELS, ImageReadError, inspect_image

# ImageReadError is defined in alod.data.images (no torch) and re-exported here.
__all__ = [
    "DetectionDataset",
    "DroppedBoxesWarning",
    "GroupedBatchSampler",
    "ImageReadError",
    "UnsafeImagePathError",
    "aspect_ratio_groups",
    "collate_fn",
]


def decode_rgb(data: bytes, where: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Encoded image bytes -> uint8 RGB [3,H,W]; ImageReadError naming `where` on any failure."""
    try:
        inspect_image(data, where, max_pixels=max_pixels)
    except ImageReadError as e:
        raise ImageReadError(f"cannot decode image {e}") from None
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:
        # torchvision prefixes the C++ source location; keep the reason.
        reason = str(e).rsplit(", ", 1)[-1].strip()
        raise ImageReadError(f"cannot decode image {where} (corrupt or truncated): {reason}") from None
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = image.to(torch.float32).div_(257.0).round_().to(torch.uint8)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ImageReadError(f"cannot decode image {where}: got a tensor of shape {tuple(image.shape)}")
    return image


class UnsafeImagePathError(ImageReadError, ValueError):
    """A frame name that is absolute, uses '..' or resolves (symlinks) outside the image root."""


class DroppedBoxesWarning(UserWarning):
    """Boxes of a frame left with no area inside its image: dropped from the training target."""


def _transforms() -> v2.Compose:
    return v2.Compose([
        v2.ClampBoundingBoxes(),
        # Boxes left with no area after clamping would crash Faster R-CNN's loss.
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
    ])


class DetectionDataset(Dataset):
    """(image float [3,H,W] in 0..1, target dict) for torchvision detectors.

    target: boxes (BoundingBoxes XYXY, exclusive x2/y2), labels int64 (det_20
    ids), image_id (index into `frames`). Training mode flips half the images
    horizontally: drawn from torch's global RNG, or, once `augment_seed` is set
    (fit sets it every epoch), from (augment_seed, index) alone, so an image's
    flip does not depend on which loader worker reads it or on how many batches
    a resumed epoch skips.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        image_root: str | Path,
        train: bool = False,
        *,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ):
        self.frames = frames
        self.image_root = Path(image_root)
        self.train = train
        self.max_pixels = max_pixels
        self.transforms = _transforms()
        self.augment_seed: int | None = None
        self._sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def image_path(self, index: int) -> Path:
        """The frame's image file; UnsafeImagePathError if its name leaves the image root."""
        try:
            return resolve_image_path(self.image_root, self.frames[index].name)
        except ValueError as e:
            raise UnsafeImagePathError(str(e)) from None

    def read_image(self, index: int) -> torch.Tensor:
        """uint8 RGB [3,H,W]; ImageReadError names the file and the reason when that fails.

        The header is checked before decoding (format, frame count, size against
        `max_pixels`: see `alod.data.images`), so a hostile file fails here with
        a message, never deep in torch or by exhausting memory.
        """
        path = self.image_path(index)
        where = f"{path} (frame {self.frames[index].name!r})"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageReadError(f"image not found: {where}") from None
        except OSError as e:
            raise ImageReadError(f"cannot read image {where}: {e.strerror or e}") from None
        return decode_rgb(data, where, max_pixels=self.max_pixels)

    def get_height_and_width(self, index: int) -> tuple[int, int]:
        """(H, W) from the Frame or the image header, without decoding pixels."""
        if index not in self._sizes:
            frame = self.frames[index]
            if frame.width and frame.height:
                self._sizes[index] = (int(frame.height), int(frame.width))
            else:
                path = self.image_path(index)
                try:
                    with open(path, "rb") as f:
                        head = f.read(256 * 1024)
                except FileNotFoundError:
                    raise ImageReadError(f"image not found: {path} (frame {frame.name!r})") from None
                except OSError as e:
                    raise ImageReadError(f"cannot read image header {path}: {e.strerror or e}") from None
                w, h = inspect_image(head, f"{path} (frame {frame.name!r})", max_pixels=self.max_pixels)
                self._sizes[index] = (h, w)
        return self._sizes[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        frame = self.frames[index]
        image = tv_tensors.Image(self.read_image(index))
        h, w = image.shape[-2:]
        self._sizes.setdefault(index, (int(h), int(w)))
        keep = ~frame.ignore
        _warn_dropped(frame, keep, int(w), int(h))
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                # float32 also for frames loaded exact (float64) for evaluation
                torch.from_numpy(frame.boxes[keep].astype(np.float32, copy=False)).reshape(-1, 4),
                format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.from_numpy(frame.labels[keep]).to(torch.int64),
            "image_id": index,
        }
        if self.train and self._flips(index):
            image = v2.functional.horizontal_flip(image)
            target["boxes"] = v2.functional.horizontal_flip(target["boxes"])
        image, target = self.transforms(image, target)
        return image, target

    def _flips(self, index: int) -> bool:
        if self.augment_seed is None:
            return bool(torch.rand(()) < 0.5)
        return bool(np.random.default_rng((self.augment_seed, index)).random() < 0.5)


def _warn_dropped(frame: Frame, keep: np.ndarray, w: int, h: int) -> None:
    """Say which boxes the transforms will drop (no area left inside the image):
    SanitizeBoundingBoxes(min_size=1) after ClampBoundingBoxes drops them silently."""
    boxes = frame.boxes[keep]
    if not len(boxes):
        return
    bw = np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0)
    bh = np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0)
    lost = np.flatnonzero(~((bw >= 1.0) & (bh >= 1.0)))
    if len(lost):
        rows = np.flatnonzero(keep)[lost].tolist()
        warnings.warn(
            f"frame {frame.name!r}: {len(lost)} box(es) at rows {rows[:10]} have no area inside "
            f"the {w}x{h} image and are dropped from the target (load labels with image_size "
            f"to clip and count them up front)",
            DroppedBoxesWarning,
            stacklevel=3,
        )


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
