"""The hostile input corpus (tests/data/bad/, listed in its README.md): one test per case.

Every case ends in a clear error naming the place (file, frame, label index,
field) or in a documented, counted skip; never in a crash deep in torch and
never in a silent drop. Label cases are committed JSON files; image and
checkpoint cases are generated here (symlinks must not be committed, binary
files are simpler to make with PIL/torch than to keep).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import alod.data.dataset as dataset_mod
from alod.data.bdd100k import OUTSIDE_IMAGE, UNREADABLE_IMAGE, check_labels, load_labels
from alod.data.dataset import (
    DetectionDataset,
    DroppedBoxesWarning,
    ImageReadError,
    UnsafeImagePathError,
)
from alod.data.frames import Frame, LabelError
from alod.data.images import MAX_IMAGE_PIXELS
from alod.models import (
    CheckpointError,
    build_detector,
    detector_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from entrypoints.cli import cli

BAD = Path(__file__).parent / "bad"
README = BAD / "README.md"


# =============================================================================== labels
# A problem: (frame, label index, field, regex on the message); file is always the case file.


@dataclass(frozen=True)
class LabelCase:
    file: str
    problems: tuple = ()
    kwargs: dict = field(default_factory=dict)
    # when there are no problems: what loads and what is counted
    frames: int | None = None
    boxes: int | None = None
    skipped: dict = field(default_factory=dict)
    clipped: int = 0
    warnings: tuple = ()  # (frame, label index, regex)


TOP = "wrong top-level type"
FINITE = "coordinate must be a finite number"

LABEL_CASES = [
    LabelCase("truncated.json", ((None, None, None, r"invalid JSON at line 4, column 1"),)),
    LabelCase("not_utf8.json", ((None, None, None, r"not UTF-8 text: invalid byte at offset 14"),)),
    LabelCase("empty.json", ((None, None, None, r"invalid JSON at line 1, column 1"),)),
    LabelCase("nested_too_deep.json", ((None, None, None, r"nested too deeply"),)),
    LabelCase("top_level_number.json", ((None, None, None, TOP + r": got int"),)),
    LabelCase("top_level_string.json", ((None, None, None, TOP + r": got a string"),)),
    LabelCase("top_level_null.json", ((None, None, None, TOP + r": got null"),)),
    LabelCase(
        "top_level_list_of_strings.json",
        (("#0", None, None, r"frame is not a JSON object \(a string\)"),
         ("#1", None, None, r"frame is not a JSON object \(a string\)")),
    ),
    LabelCase("top_level_dict_without_frames.json", ((None, None, None, TOP + r".*keys \['labels', 'version'\]"),)),
    LabelCase("top_level_single_frame.json", ((None, None, None, TOP + r".*keys \['labels', 'name'\]"),)),
    LabelCase("frames_not_a_list.json", ((None, None, "frames", r"expected a list, got an object"),)),
    LabelCase(
        "coords_missing.json",
        (("a.jpg", 1, "box2d.y2", "missing coordinate"),)
        + tuple(("a.jpg", 2, f"box2d.{c}", "missing coordinate") for c in ("x1", "y1", "x2", "y2")),
    ),
    LabelCase("coords_nan.json", (("a.jpg", 0, "box2d.x1", FINITE + ", got nan"),)),
    LabelCase(
        "coords_inf.json",
        (("a.jpg", 0, "box2d.x1", FINITE + ", got -inf"),
         ("a.jpg", 0, "box2d.x2", FINITE + ", got inf"),
         ("a.jpg", 1, "box2d.y2", FINITE + ", got inf")),  # 1e999 overflows to inf
    ),
    LabelCase(
        "coords_string.json",
        (("a.jpg", 0, "box2d.x1", FINITE + ", got '10'"), ("a.jpg", 1, "box2d.y2", FINITE + ", got ''")),
    ),
    LabelCase("coords_null.json", (("a.jpg", 0, "box2d.y1", FINITE + ", got None"),)),
    LabelCase("coords_bool.json", (("a.jpg", 0, "box2d.x2", FINITE + ", got True"),)),
    LabelCase("box2d_not_an_object.json", (("a.jpg", 0, "box2d", r"expected an object with x1, y1, x2, y2, got a list"),)),
    LabelCase(
        "box_inverted.json",
        (("a.jpg", 0, "box2d.x2", r"inverted box: x2=10.0 < x1=30.0"),
         ("a.jpg", 1, "box2d.y2", r"inverted box: y2=20.0 < y1=40.0")),
    ),
    # The file gives sized.jpg its size; unsized.jpg gets it from image_size.
    LabelCase(
        "box_far_outside.json",
        kwargs={"image_size": (1280, 720)},
        frames=2, boxes=4, clipped=3, skipped={OUTSIDE_IMAGE: 3},
        warnings=(
            ("sized.jpg", 1, r"mostly outside the 1280x720 image; clipped to \(1200, 600, 1279, 719\)"),
            ("sized.jpg", 2, OUTSIDE_IMAGE + r" \(1280x720\); dropped"),
            ("sized.jpg", 3, OUTSIDE_IMAGE + r" \(1280x720\); dropped"),
            ("unsized.jpg", 0, r"mostly outside the 1280x720 image; clipped to \(0, 0, 1279, 719\)"),
            ("unsized.jpg", 1, OUTSIDE_IMAGE + r" \(1280x720\); dropped"),
        ),
    ),
    # Without a size for unsized.jpg its boxes stay as written (nothing to clip to).
    LabelCase(
        "box_far_outside.json",
        frames=2, boxes=5, clipped=2, skipped={OUTSIDE_IMAGE: 2},
        warnings=(
            ("sized.jpg", 1, r"mostly outside"),
            ("sized.jpg", 2, OUTSIDE_IMAGE),
            ("sized.jpg", 3, OUTSIDE_IMAGE),
        ),
    ),
    LabelCase(
        "unknown_categories.json",
        (("a.jpg", 1, "category", r"unknown category 'dog' \(2 label\(s\), first here\); known: .*car"),
         ("a.jpg", 2, "category", r"unknown category 'Car' \(1 label"),
         ("b.jpg", 0, "category", r"unknown category 'unicorn' \(1 label"),
         ("b.jpg", 1, "category", r"unknown category '' \(1 label")),
    ),
    LabelCase(
        "unknown_categories.json",
        kwargs={"skip_unknown": True},
        frames=2, boxes=1,
        skipped={"unknown category 'dog'": 2, "unknown category 'Car'": 1,
                 "unknown category 'unicorn'": 1, "unknown category ''": 1},
        warnings=(("a.jpg", 1, r"'dog' \(2 label\(s\).*skipped"), ("a.jpg", 2, "'Car'"),
                  ("b.jpg", 0, "'unicorn'"), ("b.jpg", 1, "''")),
    ),
    LabelCase(
        "category_missing.json",
        (("a.jpg", 0, "category", r"missing or not a string \(got None\)"),
         ("a.jpg", 1, "category", r"missing or not a string \(got 3\)")),
    ),
    LabelCase(
        "duplicate_names.json",
        (("a.jpg", None, "name", r"duplicate frame name: first at .*duplicate_names.json frame #0, again at .*frame #2"),),
    ),
    LabelCase(
        "name_path_traversal.json",
        (("../x.jpg", None, "name", r"escapes the image root via '\.\.'"),
         ("sub/../../x.jpg", None, "name", r"escapes the image root"),
         ("..\\x.jpg", None, "name", r"escapes the image root")),
    ),
    LabelCase(
        "name_absolute.json",
        (("/etc/passwd", None, "name", r"is an absolute path"),
         ("C:\\x.jpg", None, "name", r"is an absolute path"),
         ("\\\\server\\share\\x.jpg", None, "name", r"is an absolute path")),
    ),
    LabelCase(
        "name_missing.json",
        (("#0", None, "name", r"no string 'name' \(got None\)"),
         ("#1", None, "name", r"no string 'name' \(got 3\)"),
         ("#2", None, "name", r"no string 'name' \(got ''\)")),
    ),
    LabelCase("labels_not_a_list.json", (("a.jpg", None, "labels", r"expected a list or null, got a string"),)),
    LabelCase(
        "label_not_an_object.json",
        (("a.jpg", 0, None, r"label is not a JSON object \(a string\)"),
         ("a.jpg", 1, None, r"label is not a JSON object \(int\)")),
    ),
    LabelCase("size_invalid.json", (("a.jpg", None, "size", r"expected positive width/height"),)),
    LabelCase(
        "score_invalid.json",
        (("a.jpg", 1, "score", r"score must be a finite number, got nan"),
         ("a.jpg", 2, "score", r"missing score \(other labels have one\)")),
    ),
    LabelCase(
        "coco_hostile.json",
        (("#1", None, "id", r"duplicate image id 1"),
         ("../c.jpg", None, "name", r"escapes the image root"),
         ("#3", None, "id", r"image id must be an integer, got '3'"),
         ("a.jpg", 0, "bbox", r"negative width or height"),
         ("a.jpg", 1, "bbox.w", r"must be a finite number, got nan"),
         (None, 2, "image_id", r"annotation #2 refers to unknown image id 9"),
         ("a.jpg", 2, "category_id", r"category id 77 not in 'categories'"),
         ("a.jpg", 3, "bbox", r"expected \[x, y, w, h\], got \[1, 2, 3\]")),
    ),
    LabelCase("bom_utf8.json", frames=1, boxes=1),  # a UTF-8 byte order mark is accepted
]


def _case_id(case) -> str:
    extra = "-".join(f"{k}" for k in getattr(case, "kwargs", {}) or {})
    return case.file + (f"[{extra}]" if extra else "")


def _match(actual, expected, what: str) -> None:
    """Located items must equal the expected list, in order; messages by regex."""
    assert len(actual) == len(expected), f"{what}:\n" + "\n".join(map(str, actual))
    for got, (*where, pattern) in zip(actual, expected):
        loc = (got.frame, got.label_index, got.field)[: len(where)]
        assert loc == tuple(where), f"{what}: {got}"
        assert re.search(pattern, got.message), f"{what}: {got.message!r} !~ {pattern!r}"


@pytest.mark.parametrize("case", LABEL_CASES, ids=_case_id)
def test_label_case(case: LabelCase) -> None:
    path = BAD / case.file
    _, report = check_labels(path, **case.kwargs)
    assert all(p.file == str(path) for p in report.problems)
    _match(report.problems, case.problems, "problems")
    runner_args = ["data", "check", str(path)]
    if case.kwargs.get("skip_unknown"):
        runner_args.append("--skip-unknown")
    if case.kwargs.get("image_size"):
        runner_args += ["--image-size", "x".join(map(str, case.kwargs["image_size"]))]
    result = CliRunner().invoke(cli, runner_args)
    assert isinstance(result.exception, (SystemExit, type(None))), result.output  # no traceback
    if case.problems:
        with pytest.raises(LabelError) as exc:
            load_labels(path, **case.kwargs)
        assert exc.value.problems == report.problems
        assert result.exit_code == 1
        for p in report.problems:  # every problem is printed with its place
            assert str(p) in result.output
        return
    loaded, again = load_labels(path, **case.kwargs)
    assert len(loaded) == report.frames == case.frames
    assert again.boxes == case.boxes
    assert dict(again.skipped) == case.skipped
    assert again.clipped == case.clipped
    _match(again.warnings, case.warnings, "warnings")
    # nothing dropped silently: every box in the file is kept, or counted as skipped
    assert again.boxes + sum(again.skipped.values()) == _boxes_in(path)
    assert result.exit_code == 0, result.output
    if case.clipped:
        assert f"boxes clipped to their image: {case.clipped}" in result.output


def _boxes_in(path: Path) -> int:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    return sum(len(fr.get("labels") or []) for fr in data)


def test_far_outside_boxes_are_clipped_to_the_image() -> None:
    frames, _ = load_labels(BAD / "box_far_outside.json", image_size=(1280, 720))
    sized, unsized = frames
    np.testing.assert_array_equal(sized.boxes, [[0, 0, 100, 100], [1200, 600, 1280, 720], [100, 100, 200, 200]])
    np.testing.assert_array_equal(unsized.boxes, [[0, 0, 1280, 720]])


# =============================================================================== images
# Made at test time. `dataset`: None = decoded to uint8 RGB [3,H,W], else a regex
# for the ImageReadError of DetectionDataset.__getitem__. `check`: None = passes
# `alod data check --images`, else a regex for its problem on that frame.


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(w: int = 64, h: int = 48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _jpeg_with_size(w: int, h: int) -> bytes:
    """A valid small baseline JPEG whose SOF0 header claims w x h."""
    data = bytearray(_encode(_rgb(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    return bytes(data)


def _png_with_size(w: int, h: int) -> bytes:
    """A small PNG whose IHDR (CRC fixed) claims w x h."""
    data = bytearray(_encode(_rgb(16, 16), "PNG"))
    struct.pack_into(">II", data, 16, w, h)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 32] = b"\xff" * 32
    return bytes(b)


def _animated_gif() -> bytes:
    a = _rgb()
    return _encode(a, "GIF", save_all=True, append_images=[a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])


@dataclass(frozen=True)
class ImageCase:
    name: str
    make: Callable[[], bytes]
    dataset: str | None
    check: str | None
    size: tuple[int, int] = (64, 48)  # (W, H) when accepted


IMAGE_CASES = [
    ImageCase("truncated.jpg", lambda: _half(_encode(_rgb(), "JPEG")),
              r"cannot decode image .*truncated\.jpg.*\(corrupt or truncated\): Image is incomplete or truncated",
              r"truncated JPEG \(no end-of-image marker"),
    ImageCase("truncated_header.jpg", lambda: _encode(_rgb(), "JPEG")[:40],
              r"truncated_header\.jpg.*unreadable image header", r"unreadable image header"),
    ImageCase("truncated.png", lambda: _half(_encode(_rgb(), "PNG")),
              r"cannot decode image .*truncated\.png", r"corrupt or truncated PNG"),
    ImageCase("corrupt_middle.jpg", lambda: _corrupt_middle(_encode(_rgb(), "JPEG")),
              r"cannot decode image .*corrupt_middle\.jpg \(frame 'corrupt_middle\.jpg'\) \(corrupt or truncated\)",
              None),  # header and end marker intact: found when decoding, not by the header check
    ImageCase("zero_byte.jpg", lambda: b"", r"zero_byte\.jpg.*empty file \(0 bytes\)", r"empty file \(0 bytes\)"),
    ImageCase("not_an_image.jpg", lambda: b"<html>404 Not Found</html>\n",
              r"not_an_image\.jpg.*not an image", r"not an image"),
    ImageCase("png_named.jpg", lambda: _encode(_rgb(), "PNG"), None, None),  # content decides: accepted
    ImageCase("grayscale.jpg", lambda: _encode(_rgb().convert("L"), "JPEG"), None, None),
    ImageCase("cmyk.jpg", lambda: _encode(_rgb().convert("CMYK"), "JPEG"), None, None),
    ImageCase("rgba.png", lambda: _encode(_rgb().convert("RGBA"), "PNG"), None, None),
    ImageCase("palette.png", lambda: _encode(_rgb().convert("P"), "PNG"), None, None),
    ImageCase("16bit.png", lambda: _encode(Image.fromarray(np.full((48, 64), 51400, np.uint16)), "PNG"), None, None),
    ImageCase("bmp_named.jpg", lambda: _encode(_rgb(), "BMP"),
              r"BMP images are not supported; use JPEG, PNG, WebP or GIF", r"BMP images are not supported"),
    ImageCase("animated.gif", _animated_gif, r"animated GIF with 2 frames", r"animated GIF with 2 frames"),
    ImageCase("huge_header_30000x30000.jpg", lambda: _jpeg_with_size(30000, 30000),
              r"huge_header_30000x30000\.jpg.*image too large.*refuses images over 64000000 pixels",
              r"image too large"),
    ImageCase("over_limit_9000x8000.png", lambda: _png_with_size(9000, 8000),
              r"image too large: 9000x8000 = 72000000 pixels, over the limit of 64000000",
              r"image too large: 9000x8000"),
]


def _write_images(root: Path, cases) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (root / case.name).write_bytes(case.make())


@pytest.fixture
def no_decode(monkeypatch):
    """Fails the test if a pixel decode is attempted."""
    def refuse(*a, **k):
        raise AssertionError("decode_image must not be reached for this file")

    monkeypatch.setattr(dataset_mod, "decode_image", refuse)


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
def test_image_case(case: ImageCase, tmp_path: Path, request) -> None:
    root = tmp_path / "images"
    _write_images(root, [case])
    ds = DetectionDataset([Frame(case.name, boxes=[[1, 1, 10, 10]], labels=[3])], root)
    if case.dataset is None:
        raw = ds.read_image(0)
        assert raw.dtype == torch.uint8 and tuple(raw.shape) == (3, case.size[1], case.size[0])
        with Image.open(root / case.name) as im:
            expected = np.asarray(im.convert("RGB")) if im.mode != "I;16" else None
        if expected is not None:  # same pixels as PIL's conversion to RGB (CMYK, gray, palette...)
            assert np.abs(raw.permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).max() <= 1
        else:  # 16-bit: scaled to 8 bits (51400 / 257 = 200)
            assert int(raw.min()) == int(raw.max()) == 200
        image, target = ds[0]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert target["boxes"].tolist() == [[1, 1, 10, 10]]
        assert ds.get_height_and_width(0) == (case.size[1], case.size[0])
    else:
        if case.check is not None and "too large" in case.check:
            request.getfixturevalue("no_decode")  # refused from the header, never decoded
        with pytest.raises(ImageReadError, match=case.dataset) as exc:
            ds[0]
        assert case.name in str(exc.value)  # names the file
        loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=dataset_mod.collate_fn)
        with pytest.raises(ImageReadError, match=re.escape(case.name)):
            next(iter(loader))

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"name": case.name, "labels": []}]))
    frames, report = check_labels(labels, images=root)
    if case.check is None:
        assert report.ok, report.problems
        assert (frames[0].width, frames[0].height) == case.size
    else:
        (p,) = report.problems
        assert (p.file, p.frame, p.field) == (str(labels), case.name, "name")
        assert p.message.startswith(UNREADABLE_IMAGE) and re.search(case.check, p.message), p.message


def test_check_images_cli_lists_every_bad_image(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _write_images(root, IMAGE_CASES)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"name": c.name, "labels": []} for c in IMAGE_CASES] + [{"name": "gone.jpg"}]))
    result = CliRunner().invoke(cli, ["data", "check", str(labels), "--images", str(root)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    bad = [c for c in IMAGE_CASES if c.check is not None]
    assert f"unreadable images: {len(bad)}" in result.output and "missing images: 1" in result.output
    for c in bad:
        assert f"frame '{c.name}'" in result.output
    for c in IMAGE_CASES:
        if c.check is None:
            assert f"frame '{c.name}'" not in result.output


def test_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    """An actual (not header-forged) image over the limit is refused the same way."""
    (tmp_path / "big.png").write_bytes(_encode(_rgb(200, 100), "PNG"))
    ds = DetectionDataset([Frame("big.png")], tmp_path, max_pixels=19_999)
    with pytest.raises(ImageReadError, match=r"big\.png.*200x100 = 20000 pixels, over the limit of 19999"):
        ds[0]
    assert DetectionDataset([Frame("big.png")], tmp_path)[0][0].shape == (3, 100, 200)
    assert MAX_IMAGE_PIXELS == 64_000_000  # the documented limit (README, alod.data.images)


@pytest.mark.parametrize("kind", ["dir_link", "file_link"])
def test_symlink_escaping_the_image_root(tmp_path: Path, kind: str) -> None:
    root, outside = tmp_path / "images", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_encode(_rgb(), "JPEG"))
    if kind == "dir_link":
        (root / "link").symlink_to(outside, target_is_directory=True)
        name = "link/secret.jpg"
    else:
        (root / "escape.jpg").symlink_to(outside / "secret.jpg")
        name = "escape.jpg"
    ds = DetectionDataset([Frame(name)], root)
    with pytest.raises(UnsafeImagePathError, match=r"outside the image root") as exc:
        ds[0]
    assert isinstance(exc.value, ImageReadError) and isinstance(exc.value, ValueError)
    assert name in str(exc.value)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"name": name, "labels": []}]))
    (p,) = check_labels(labels, images=root)[1].problems
    assert (p.frame, p.field) == (name, "name") and "outside the image root" in p.message
    # a link that stays inside the root is fine
    (root / "real.jpg").write_bytes(_encode(_rgb(), "JPEG"))
    (root / "alias.jpg").symlink_to(root / "real.jpg")
    assert DetectionDataset([Frame("alias.jpg")], root)[0][0].shape == (3, 48, 64)


@pytest.mark.parametrize("name", ["../x.jpg", "/etc/passwd", "a/../../x.jpg"])
def test_dataset_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeImagePathError, match=re.escape(repr(name))):
        DetectionDataset([Frame(name)], tmp_path)[0]


def test_boxes_outside_an_unsized_frame_are_not_dropped_silently(tmp_path: Path) -> None:
    """Labels loaded without a size keep boxes outside the image; the dataset
    drops them from the target (they have no pixels) and says so."""
    (tmp_path / "a.jpg").write_bytes(_encode(_rgb(), "JPEG"))
    frame = Frame("a.jpg", boxes=[[1, 1, 10, 10], [500, 500, 600, 600]], labels=[3, 3])
    with pytest.warns(DroppedBoxesWarning, match=r"frame 'a\.jpg': 1 box\(es\) at rows \[1\] .*64x48 image"):
        _, target = DetectionDataset([frame], tmp_path)[0]
    assert target["boxes"].tolist() == [[1, 1, 10, 10]]


# =============================================================================== checkpoints


class _RunsCode:
    """Unpickling this object runs `code` (what a crafted checkpoint does)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _good_checkpoint(path: Path) -> dict:
    save_checkpoint(path, model=build_detector("tiny"), epoch=0, config={})
    return torch.load(path, weights_only=True)


def _crafted_exec(path: Path, marker: Path) -> None:
    ckpt = _good_checkpoint(path)
    ckpt["config"]["payload"] = _RunsCode(f"open({str(marker)!r}, 'w').close()")
    torch.save(ckpt, path)


def _crafted_shell(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 0, "config": {}, "x": _RunsShell(marker)}, path)


def _crafted_in_state_dict(path: Path, marker: Path) -> None:
    ckpt = _good_checkpoint(path)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = _RunsCode(f"open({str(marker)!r}, 'w').close()")
    torch.save(ckpt, path)


def _crafted_plain_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:  # a legacy (non-zip) pickle file
        pickle.dump({"model": _RunsCode(f"open({str(marker)!r}, 'w').close()")}, f)


@dataclass(frozen=True)
class CheckpointCase:
    name: str
    make: Callable[[Path, Path], None]
    error: str
    crafted: bool = False  # unpickling with weights_only=False would run code


def _namespace_args(path: Path, marker: Path) -> None:
    import argparse

    ckpt = _good_checkpoint(path)
    ckpt["args"] = argparse.Namespace(lr=0.02)  # what torchvision's references save
    torch.save(ckpt, path)


def _truncated(path: Path, marker: Path) -> None:
    _good_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _non_tensor_state(path: Path, marker: Path) -> None:
    ckpt = _good_checkpoint(path)
    ckpt["model"] = {k: v.tolist() for k, v in list(ckpt["model"].items())[:2]}
    torch.save(ckpt, path)


REFUSED = r"refusing to load .*could run code.*Refused: "
CHECKPOINT_CASES = [
    CheckpointCase("crafted_exec.pt", _crafted_exec, REFUSED + r"Unsupported global: GLOBAL (builtins\.)?exec\b", True),
    CheckpointCase("crafted_os_system.pt", _crafted_shell, REFUSED + r".*GLOBAL posix\.system", True),
    CheckpointCase("crafted_in_state_dict.pt", _crafted_in_state_dict, REFUSED + r".*GLOBAL (builtins\.)?exec\b", True),
    CheckpointCase("crafted_plain_pickle.pkl", _crafted_plain_pickle, REFUSED, True),
    CheckpointCase("namespace_args.pt", _namespace_args, REFUSED + r"Unsupported global: GLOBAL argparse\.Namespace"),
    CheckpointCase("truncated.pt", _truncated, r"cannot read .*truncated\.pt as a torch file \(truncated"),
    CheckpointCase("empty.pt", lambda p, m: p.write_bytes(b""), r"empty\.pt.*empty file \(0 bytes\)"),
    CheckpointCase("not_a_torch_file.pt", lambda p, m: p.write_text("hello"), r"cannot read .*not_a_torch_file\.pt"),
    CheckpointCase("non_tensor_state_dict.pt", _non_tensor_state, r"neither a state dict nor a checkpoint dict"),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the legacy pickle case
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=lambda c: c.name)
def test_checkpoint_case(case: CheckpointCase, tmp_path: Path) -> None:
    path, marker = tmp_path / case.name, tmp_path / "code_ran"
    case.make(path, marker)
    assert not marker.exists()
    # detector_from_checkpoint is what registry artifacts (tracking.load_registered_detector)
    # and the pyfunc wrapper go through; build_detector(weights=) reads --weights files.
    with pytest.raises(CheckpointError, match=case.error):
        detector_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=case.error):
        build_detector("tiny", weights=path)
    if case.error.startswith(REFUSED) or "cannot read" in case.error or "empty" in case.error:
        with pytest.raises(CheckpointError, match=case.error):
            load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code"
    if case.crafted:  # the payload is real: an unsafe load would have run it
        with contextlib.suppress(Exception):  # after running the code, the rest may not load
            torch.load(path, weights_only=False)
        assert marker.exists()


def test_registered_model_pyfunc_refuses_crafted_checkpoint(tmp_path: Path) -> None:
    """The models-from-code pyfunc loads the logged checkpoint through the same safe path."""
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "code_ran"
    _crafted_exec(path, marker)
    # Recorded and dropped: mlflow's note on predict's type hints at import (an
    # import on the way replaces warnings.filters, so an "ignore" filter is lost).
    with warnings.catch_warnings(record=True):
        from alod.pyfunc_detector import DetectorModel

        model = DetectorModel()
    with pytest.raises(CheckpointError, match=REFUSED):
        model.load_context(SimpleNamespace(artifacts={"checkpoint": str(path)}))
    assert not marker.exists()


# =============================================================================== the corpus README


def test_readme_lists_every_case() -> None:
    text = README.read_text(encoding="utf-8")
    committed = sorted(p.name for p in BAD.iterdir() if p.name != "README.md")
    assert committed == sorted({c.file for c in LABEL_CASES}), "every committed file has a case and vice versa"
    names = committed + [c.name for c in IMAGE_CASES] + [c.name for c in CHECKPOINT_CASES]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"README.md does not list {missing}"
    # the project README's reliability figure counts the same inputs (+2 symlinks)
    tried = len(committed) + len(IMAGE_CASES) + 2 + len(CHECKPOINT_CASES)
    top = (BAD.parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"Bad inputs tried: **{tried}**" in top
