"""Image files as alod accepts them: header checks before any pixel is decoded.

Used by `alod.data.dataset` (before decoding, for every item) and by
`check_labels(images=...)` / `alod data check --images` (no decode at all).
Imports PIL only, never torch, so label checks stay light.

What is accepted, decided from the bytes, never from the file name:

- JPEG, PNG, WebP and GIF (what ``torchvision.io.decode_image`` decodes); a PNG
  named ``.jpg`` is fine, it is decoded as the PNG it is;
- any colour mode: grayscale, palette, RGBA, CMYK and 16-bit images are all
  decoded to 3-channel 8-bit RGB;
- at most `MAX_IMAGE_PIXELS` pixels (width x height, read from the header):
  larger images are refused before decoding instead of exhausting memory.

Refused with `ImageReadError` (message: the file and the reason): empty files,
files that are not an image, other formats (BMP, TIFF, ...), animated images,
images over the pixel limit, truncated JPEGs (no end-of-image marker) and
PNGs whose chunks fail their checksums.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# 8000 x 8000. A BDD100K image is 1280 x 720 (0.9 MP). Decoded to float32 RGB
# an image at the limit takes 768 MB; PIL itself refuses anything over about
# 179 MP (2 x Image.MAX_IMAGE_PIXELS), so a larger limit cannot be asked for.
MAX_IMAGE_PIXELS = 64_000_000

# PIL format names torchvision.io.decode_image can decode.
DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "MPO"})

# How far from the end of a JPEG its end-of-image marker is looked for: some
# cameras append a few bytes of padding after it.
_EOI_WINDOW = 64 * 1024

__all__ = [
    "DECODABLE_FORMATS",
    "MAX_IMAGE_PIXELS",
    "ImageReadError",
    "check_image_file",
    "inspect_image",
]


class ImageReadError(RuntimeError):
    """An image that is missing or cannot be used; the message names the file and why."""


def inspect_image(data: bytes, source: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of the encoded image `data` from its header, or ImageReadError.

    Checks format, frame count and size; does not decode pixels (see the module
    doc). `source` only names the file in messages.
    """
    if not data:
        raise ImageReadError(f"{source}: empty file (0 bytes)")
    with warnings.catch_warnings():
        # Between PIL's warning and error thresholds PIL only warns; our own
        # limit below decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
                frames = getattr(im, "n_frames", 1) if fmt in ("GIF", "WEBP") else 1
        except Image.DecompressionBombError as e:
            raise ImageReadError(
                f"{source}: image too large to decode safely ({e}); alod refuses images "
                f"over {max_pixels} pixels"
            ) from None
        except UnidentifiedImageError:
            raise ImageReadError(
                f"{source}: not an image, or a format PIL does not recognise "
                f"(first bytes {data[:8]!r}, {len(data)} bytes)"
            ) from None
        except Exception as e:  # noqa: BLE001 - PIL's plugins raise many types on broken headers
            raise ImageReadError(f"{source}: unreadable image header ({type(e).__name__}: {e})") from None
    if fmt not in DECODABLE_FORMATS:
        raise ImageReadError(
            f"{source}: {fmt} images are not supported; use JPEG, PNG, WebP or GIF"
        )
    if frames > 1:
        raise ImageReadError(f"{source}: animated {fmt} with {frames} frames; alod needs still images")
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{source}: header gives an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageReadError(
            f"{source}: image too large: {w}x{h} = {w * h} pixels, over the limit of "
            f"{max_pixels} (alod.data.images.MAX_IMAGE_PIXELS); refused before decoding"
        )
    return w, h


def check_image_file(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file after the checks `alod data check --images` runs.

    `inspect_image` on the header, plus completeness without decoding: a JPEG
    must end with its end-of-image marker (a truncated download does not), a
    PNG's chunks must pass PIL's ``verify()`` (checksums up to IEND).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            # The header is in the first KBs (GIF, WebP: frames are counted, read it all).
            head = f.read(256 * 1024)
            if head.startswith((b"GIF", b"RIFF")):
                head += f.read()
            elif size > len(head):
                f.seek(max(len(head), size - _EOI_WINDOW))
                tail = f.read()
            else:
                tail = b""
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read: {e.strerror or e}") from None
    # A header that does not fit in `head` is reported as unreadable.
    w, h = inspect_image(head, path, max_pixels=max_pixels)
    fmt = _format(head)
    if fmt == "JPEG":
        end = (head + tail)[-_EOI_WINDOW:]
        if b"\xff\xd9" not in end:
            raise ImageReadError(
                f"{path}: truncated JPEG (no end-of-image marker; {size} bytes); re-download or remove it"
            )
    elif fmt == "PNG":
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises many types from verify
            raise ImageReadError(f"{path}: corrupt or truncated PNG: {e}") from None
    return w, h


def _format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    return None
