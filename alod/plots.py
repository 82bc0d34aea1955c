"""Pictures and figures logged to MLflow (headless).

Two kinds of output:

* pictures (numpy ``H x W x 3`` uint8, for `tracking.log_image`): one frame
  with its boxes (`draw_frame`), ground truth beside predictions for a fixed
  set of images (`gt_vs_pred_grid`), a contact sheet of what a sampler picked
  (`picked_sheet`). Boxes are drawn with torchvision's `draw_bounding_boxes`;
  text with the DejaVu Sans font matplotlib ships (no system font needed).
* charts (matplotlib `Figure`, for `tracking.log_figure`): score and class
  histograms, per-class AP50 bars, learning curves. Figures are built without
  pyplot, so nothing has to be closed and nothing piles up over many cycles.

One palette everywhere: `CLASS_COLORS` gives every det_20 class the same
colour in every picture and chart. Ignore regions are hatched with a
black/white dashed outline, never in a class colour.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402
from torchvision.utils import draw_bounding_boxes  # noqa: E402

from alod.data.categories import CATEGORIES, ID_TO_NAME, NAME_TO_ID  # noqa: E402
from alod.data.frames import Frame  # noqa: E402

# --------------------------------------------------------------------------- palette

# det_20 id -> RGB. Fixed: a class has this colour in every picture and chart.
CLASS_COLORS: dict[int, tuple[int, int, int]] = {
    1: (230, 25, 75),     # pedestrian: red
    2: (245, 130, 48),    # rider: orange
    3: (0, 130, 200),     # car: blue
    4: (145, 30, 180),    # truck: purple
    5: (255, 225, 25),    # bus: yellow
    6: (128, 128, 0),     # train: olive
    7: (240, 50, 230),    # motorcycle: magenta
    8: (60, 180, 75),     # bicycle: green
    9: (70, 240, 240),    # traffic light: cyan
    10: (250, 190, 212),  # traffic sign: pink
}
UNKNOWN_COLOR = (200, 200, 200)  # a label id outside det_20
SHORT_NAMES: dict[int, str] = {1: "ped", 2: "rider", 3: "car", 4: "truck", 5: "bus", 6: "train",
                               7: "moto", 8: "bike", 9: "light", 10: "sign"}
BACKGROUND = (24, 24, 24)  # behind grid cells
GAP = 4  # pixels between grid cells

_FONT_PATH = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
if not os.path.isfile(_FONT_PATH):  # pragma: no cover - matplotlib always ships it
    _FONT_PATH = None


def class_color(label: int) -> tuple[int, int, int]:
    return CLASS_COLORS.get(int(label), UNKNOWN_COLOR)


def class_color_hex(label: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*class_color(label))


def _class_id(key) -> int:
    """A det_20 id from an id or a class name (as in EvalResult.ap50_per_class)."""
    if isinstance(key, str) and not key.isdigit():
        if key not in NAME_TO_ID:
            raise ValueError(f"unknown class {key!r}; det_20 classes: {', '.join(CATEGORIES)}")
        return NAME_TO_ID[key]
    return int(key)


@functools.lru_cache(maxsize=32)
def _font(size: int):
    if _FONT_PATH:
        return ImageFont.truetype(_FONT_PATH, size)
    return ImageFont.load_default(size)  # pragma: no cover


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones."""
    r, g, b = rgb
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _fit_text(text: str, font, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _sizes(h: int, w: int, line_width: int | None, font_size: int | None) -> tuple[int, int]:
    side = min(h, w)
    lw = line_width or max(2, round(side / 200))
    fs = font_size or int(min(24, max(9, round(side / 30))))
    return lw, fs


# --------------------------------------------------------------------------- one frame


def _as_chw_uint8(image) -> torch.Tensor:
    """A private uint8 RGB [3, H, W] copy (drawing works in place)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(image))
        if t.ndim == 3 and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3, 4):
            t = t.permute(2, 0, 1)  # HWC -> CHW
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
    else:
        raise TypeError(f"expected an image tensor [3,H,W] or array [H,W,3], got {type(image).__name__}")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected an image [3,H,W] (or [H,W,3] array), got shape {tuple(t.shape)}")
    if t.is_floating_point():
        t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
    if t.dtype != torch.uint8:
        raise ValueError(f"image dtype must be uint8 or float in 0..1, got {t.dtype}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].contiguous().clone()


def _pixel_boxes(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """xyxy exclusive float boxes -> inclusive int pixel corners inside the image, and a visible mask."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(b).all(1)
    b = np.where(np.isfinite(b), b, 0.0)
    visible = finite & (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h)
    x1 = np.clip(np.floor(b[:, 0]), 0, w - 1)
    y1 = np.clip(np.floor(b[:, 1]), 0, h - 1)
    x2 = np.maximum(np.clip(np.ceil(b[:, 2]) - 1, 0, w - 1), x1)
    y2 = np.maximum(np.clip(np.ceil(b[:, 3]) - 1, 0, h - 1), y1)
    return np.stack([x1, y1, x2, y2], 1).astype(np.int64), visible


def _hatch(img: torch.Tensor, box: np.ndarray, lw: int) -> None:
    """Ignore region: white diagonal hatching and a black/white dashed outline, in place."""
    x1, y1, x2, y2 = (int(v) for v in box)
    x2, y2 = x2 + 1, y2 + 1  # exclusive for slicing
    region = img[:, y1:y2, x1:x2]
    yy = torch.arange(y1, y2)[:, None]
    xx = torch.arange(x1, x2)[None, :]
    period = 4 + 3 * lw
    stripes = ((xx + yy) % period) < lw
    white = torch.full((3, 1), 255, dtype=torch.int32)
    sel = region[:, stripes].to(torch.int32)
    region[:, stripes] = ((sel * 2 + white * 3) // 5).to(torch.uint8)
    dash = 3 + 2 * lw
    # dashes alternate black and white, so the outline shows on any background
    for t in range(lw):
        for y in {min(y1 + t, y2 - 1), max(y2 - 1 - t, y1)}:
            phase = (torch.arange(x1, x2) // dash) % 2
            img[:, y, x1:x2] = torch.where(phase.bool(), 255, 0).to(torch.uint8)
        for x in {min(x1 + t, x2 - 1), max(x2 - 1 - t, x1)}:
            phase = (torch.arange(y1, y2) // dash) % 2
            img[:, y1:y2, x] = torch.where(phase.bool(), 255, 0).to(torch.uint8)


def _title_band(img: torch.Tensor, title: str, fs: int) -> torch.Tensor:
    """Darken a strip at the top and write `title` in it (the image keeps its size)."""
    h, w = img.shape[-2:]
    band = min(h, fs + 6)
    img[:, :band] = (img[:, :band].to(torch.int32) * 3 // 10).to(torch.uint8)
    pil = TF.to_pil_image(img)
    font = _font(fs)
    ImageDraw.Draw(pil).text((4, 2), _fit_text(title, font, w - 8), fill=(255, 255, 255), font=font)
    return TF.pil_to_tensor(pil)


def _draw(img: torch.Tensor, frame: Frame, *, order: np.ndarray, texts: Sequence[str | None],
          draw_ignore: bool, title: str | None, line_width: int | None, font_size: int | None) -> torch.Tensor:
    h, w = img.shape[-2:]
    lw, fs = _sizes(h, w, line_width, font_size)
    pix, visible = _pixel_boxes(frame.boxes, w, h)
    if draw_ignore:
        for i in np.nonzero(frame.ignore & visible)[0]:
            _hatch(img, pix[i], lw)
    keep = [k for k, i in enumerate(order) if visible[i]]
    if keep:
        idx = order[keep]
        colors = [class_color(frame.labels[i]) for i in idx]
        img = draw_bounding_boxes(
            img, torch.from_numpy(pix[idx]), labels=[texts[k] for k in keep], colors=colors, width=lw,
            font=_FONT_PATH, font_size=fs if _FONT_PATH else None, fill_labels=True,
            label_colors=[_text_color(c) for c in colors])
    if title:
        img = _title_band(img, title, fs)
    return img


def _score_text(score: float) -> str:
    text = f"{score:.2f}"
    return text[1:] if text.startswith("0.") else text


def draw_frame(image, frame: Frame, *, title: str | None = None, show_scores: bool = True,
               score_threshold: float | None = None, max_labels: int = 40,
               line_width: int | None = None, font_size: int | None = None) -> torch.Tensor:
    """`image` (uint8 [3,H,W], float in 0..1, or an [H,W,3] array) with `frame`'s boxes drawn.

    Returns a new uint8 [3,H,W] tensor of the same size. Boxes are in the image's
    pixel coordinates (xyxy, x2/y2 exclusive) and take their class colour
    (`CLASS_COLORS`); ignore regions are hatched with a dashed black/white
    outline. Predictions (`frame.scores` set) below `score_threshold` are left
    out, the rest are drawn lowest score first and labelled ``car .87``
    (`show_scores`), ground truth is labelled with short class names. Only the
    `max_labels` most telling boxes (highest scores, else largest) that are big
    enough for their text get one, so hundreds of boxes stay legible. Line width
    and font size follow the image size unless given. `title` goes in a dark
    band across the top.
    """
    img = _as_chw_uint8(image)
    h, w = img.shape[-2:]
    _lw, fs = _sizes(h, w, line_width, font_size)
    n = len(frame)
    cand = np.nonzero(~frame.ignore)[0]
    scores = frame.scores if frame.scores is not None and len(frame.scores) == n else None
    if scores is not None and score_threshold is not None:
        cand = cand[scores[cand] >= score_threshold]
    wh = np.clip(frame.boxes[:, 2:] - frame.boxes[:, :2], 0, None) if n else np.zeros((0, 2))
    if scores is not None:
        order = cand[np.argsort(scores[cand], kind="stable")]  # highest drawn last, on top
        by_importance = order[::-1]  # highest scores get the labels
    else:
        area = wh[:, 0] * wh[:, 1]
        order = cand[np.argsort(-area[cand], kind="stable")]  # small boxes on top of large ones
        by_importance = order  # the largest boxes get the labels
    big_enough = (wh[:, 1] >= fs) & (wh[:, 0] >= 1.5 * fs) if n else np.zeros(0, bool)
    labelled = {int(i) for i in [i for i in by_importance if big_enough[i]][:max(0, max_labels)]}
    texts: list[str | None] = []
    for i in order:
        if int(i) not in labelled:
            texts.append(None)
            continue
        name = SHORT_NAMES.get(int(frame.labels[i]), str(int(frame.labels[i])))
        texts.append(f"{name} {_score_text(float(scores[i]))}" if scores is not None and show_scores else name)
    return _draw(img, frame, order=order, texts=texts, draw_ignore=True, title=title,
                 line_width=line_width, font_size=font_size)


# --------------------------------------------------------------------------- grids


def _resized(image, frames: Sequence[Frame], cell: tuple[int, int]) -> tuple[torch.Tensor, list[Frame]]:
    """The image scaled to fit the cell (aspect kept) and each frame's boxes scaled with it."""
    img = _as_chw_uint8(image)
    h, w = img.shape[-2:]
    cw, ch = cell
    s = min(cw / w, ch / h)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        img = TF.resize(img, [nh, nw], antialias=True)
    scale = np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
    scaled = [Frame(f.name, f.boxes * scale, f.labels, f.ignore, scores=f.scores, probs=f.probs,
                    proposal=f.proposal, extra=_scaled_extra(f.extra, scale)) for f in frames]
    return img, scaled


def _scaled_extra(extra: dict, scale: np.ndarray) -> dict:
    """extra["tta"] views carry boxes too (the consistency measure compares them)."""
    if not extra or not extra.get("tta"):
        return extra
    tta = {k: {**v, "boxes": np.asarray(v["boxes"], dtype=np.float32).reshape(-1, 4) * scale}
           for k, v in extra["tta"].items()}
    return {**extra, "tta": tta}


def _paste(canvas: np.ndarray, img: torch.Tensor, x: int, y: int, cell: tuple[int, int]) -> None:
    """Paste img centred in the cell whose top-left corner is (x, y)."""
    arr = img.permute(1, 2, 0).numpy()
    h, w = arr.shape[:2]
    ox, oy = x + (cell[0] - w) // 2, y + (cell[1] - h) // 2
    canvas[oy:oy + h, ox:ox + w] = arr


def legend_strip(width: int, *, font_size: int = 11) -> np.ndarray:
    """[H, width, 3] uint8: each class's colour swatch and name, and the ignore hatching.

    Wraps onto as many lines as `width` needs; the height depends only on width and font_size."""
    font = _font(font_size)
    sw, pad, line_h = font_size, 6, font_size + 8
    items = [(class_color(i), name) for i, name in ID_TO_NAME.items()] + [(None, "ignore region")]
    lines, x = [[]], pad
    for color, name in items:
        item_w = sw + 4 + math.ceil(font.getlength(name)) + 12
        if x + item_w > width - pad and lines[-1]:
            lines.append([])
            x = pad
        lines[-1].append((x, color, name))
        x += item_w
    height = len(lines) * line_h + 4
    pil = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(pil)
    for row, line in enumerate(lines):
        y = 2 + row * line_h + (line_h - sw) // 2
        for x, color, name in line:
            if color is None:  # ignore: a hatched swatch
                draw.rectangle((x, y, x + sw, y + sw), fill=(90, 90, 90))
                for k in range(-sw, sw, 4):
                    draw.line((x + max(k, 0), y + max(-k, 0), x + min(sw, sw + k), y + min(sw, sw - k)),
                              fill=(255, 255, 255))
                draw.rectangle((x, y, x + sw, y + sw), outline=(255, 255, 255))
            else:
                draw.rectangle((x, y, x + sw, y + sw), fill=color)
            draw.text((x + sw + 4, y + sw // 2), name, fill=(230, 230, 230), font=font, anchor="lm")
    return np.asarray(pil)


def _header(width: int, text: str, font_size: int = 13) -> np.ndarray:
    font = _font(font_size)
    pil = Image.new("RGB", (width, font_size + 10), (48, 48, 48))
    ImageDraw.Draw(pil).text((6, 4), _fit_text(text, font, width - 12), fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def _check_aligned(**seqs) -> int:
    lengths = {k: len(v) for k, v in seqs.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs must be aligned, got lengths " + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)


def gt_vs_pred_grid(images: Sequence, gt_frames: Sequence[Frame], pred_frames: Sequence[Frame], *,
                    cols: int = 2, cell_size: tuple[int, int] = (384, 216), score_threshold: float = 0.3,
                    legend: bool = True) -> np.ndarray:
    """Ground truth beside predictions for each image: [H, W, 3] uint8.

    `cols` (ground truth, prediction) pairs per row; each cell is `cell_size`
    (width, height) with the image scaled to fit (aspect kept). Predictions
    below `score_threshold` are not drawn. The caller picks the images (the
    same ones every cycle, see `alod.pictures.fixed_val_sample`) so the logged
    pictures show progress. Width = 2*cols*cell_w + (2*cols+1)*GAP; height =
    rows*(cell_h+GAP) + GAP, plus `legend_strip(width)` when `legend`.
    """
    n = _check_aligned(images=images, gt_frames=gt_frames, pred_frames=pred_frames)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    cw, ch = (int(v) for v in cell_size)
    rows = max(1, math.ceil(n / cols))
    width = 2 * cols * cw + (2 * cols + 1) * GAP
    canvas = np.full((rows * (ch + GAP) + GAP, width, 3), BACKGROUND, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y = GAP + r * (ch + GAP)
        x = GAP + 2 * c * (cw + GAP)
        img, (gt, pred) = _resized(images[k], (gt_frames[k], pred_frames[k]), (cw, ch))
        kept = int((pred.scores >= score_threshold).sum()) if pred.scores is not None else len(pred)
        ignored = int(gt.ignore.sum())
        gt_title = f"GT {gt.num_trainable}" + (f" +{ignored} ign" if ignored else "") + f" · {gt.name}"
        _paste(canvas, draw_frame(img, gt, title=gt_title), x, y, (cw, ch))
        pred_title = f"pred {kept} ≥ {score_threshold:g}"
        if pred.scores is not None and len(pred.scores) and kept < len(pred):
            pred_title += f" (+{len(pred) - kept} below, best {_score_text(float(pred.scores.max()))})" \
                if kept == 0 else f" (+{len(pred) - kept} below)"
        _paste(canvas, draw_frame(img, pred, title=pred_title,
                                  score_threshold=score_threshold), x + cw + GAP, y, (cw, ch))
    if n == 0:
        canvas[:] = _blank(canvas.shape[1], canvas.shape[0], "no images")
    if legend:
        canvas = np.concatenate([canvas, legend_strip(width)], 0)
    return canvas


def _blank(width: int, height: int, text: str) -> np.ndarray:
    pil = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(pil).text((8, 8), text, fill=(200, 200, 200), font=_font(13))
    return np.asarray(pil)


# --------------------------------------------------------------------------- what the sampler picked

def driver_detections(frame: Frame, *, sampler: str | None = None, score_threshold: float = 0.05,
                      k: int = 5) -> tuple[np.ndarray, np.ndarray, str]:
    """The detections that drove an image's score: (indices, values, tag).

    With class probabilities (`frame.probs`): the `k` most uncertain distinct
    detections (one per proposal, score >= threshold, as the samplers count
    them) by the sampler's own per-detection measure (entropy, least
    confidence, margin, BALD mutual information, flip inconsistency; entropy for
    other samplers) and `tag` names it ("H", "LC", ...). Without: every
    detection at or over the threshold (what `boxcount` counts), values = the
    detection scores and tag "".
    """
    from alod.active import samplers as S

    try:
        spec = S.get_sampler(sampler) if sampler else None
    except ValueError:  # a name alod does not register (e.g. `auto`, which picks another sampler each cycle)
        spec = None
    if frame.probs is not None and len(frame) and not (spec is not None and spec.set_based and spec.measure is None):
        idx = S.distinct_detections(frame, score_threshold)
        if idx.size == 0:
            return idx, np.zeros(0), ""
        ctx = S.SamplerContext(score_threshold=score_threshold)
        measure, tag = (spec.measure, spec.measure_tag) if spec is not None and spec.measure else (None, "")
        values = None
        if measure is not None:
            try:
                values = measure(frame, idx, ctx)
            except ValueError:  # the measure's inputs were not computed for this frame (no passes, no TTA)
                values = None
        if values is None:  # samplers without a per-detection measure: entropy, and the tag says so
            values, tag = S.entropy_of(frame.probs[idx]), "H"
        top = np.argsort(-values, kind="stable")[:k]
        return idx[top], np.asarray(values)[top], tag
    if frame.scores is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0), ""
    idx = np.nonzero(frame.scores >= score_threshold)[0]
    idx = idx[np.argsort(-frame.scores[idx], kind="stable")]
    return idx, frame.scores[idx].astype(np.float64), ""


def _draw_drivers(image, frame: Frame, *, sampler: str | None, score_threshold: float, k: int,
                  title: str) -> torch.Tensor:
    img = _as_chw_uint8(image)
    idx, values, tag = driver_detections(frame, sampler=sampler, score_threshold=score_threshold, k=k)
    h, w = img.shape[-2:]
    lw, _fs = _sizes(h, w, None, None)
    order = idx[::-1]  # the strongest driver last, on top
    texts = []
    for j, i in enumerate(order):
        name = SHORT_NAMES.get(int(frame.labels[i]), str(int(frame.labels[i])))
        v = values[len(order) - 1 - j]
        texts.append(f"{name} {tag}={_score_text(float(v))}" if tag else
                     (f"{name} {_score_text(float(v))}" if len(order) - j <= 40 else None))
    return _draw(img, frame, order=np.asarray(order, dtype=np.int64), texts=texts, draw_ignore=False,
                 title=title, line_width=lw + 1, font_size=None)


def picked_sheet(images: Sequence, frames: Sequence[Frame], scores: Sequence[float] | None, *,
                 top_n: int = 8, low_n: int = 4, picked: Sequence[bool] | None = None,
                 sampler: str | None = None, score_threshold: float = 0.05, max_drivers: int = 5,
                 cols: int = 4, cell_size: tuple[int, int] = (320, 180), title: str | None = None,
                 legend: bool = True) -> np.ndarray:
    """Contact sheet of what a sampler picked: [H, W, 3] uint8.

    images, frames (the detections the sampler saw; may be empty), scores (the
    sampler's image scores; NaN or None = unknown, e.g. cycle 1's random pick)
    are aligned. The top section shows the `top_n` highest-scored images of
    `picked` (default: of all), highest first; the bottom one the `low_n`
    lowest-scored of the rest, for contrast. Each cell has its score and name,
    and the detections that drove the score (`driver_detections`: the
    `max_drivers` most uncertain boxes with their uncertainty when the frames
    carry class probabilities, else every box over `score_threshold`).
    Width = cols*cell_w + (cols+1)*GAP.
    """
    n = _check_aligned(images=images, frames=frames, scores=scores, picked=picked)
    sc = np.full(n, np.nan) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    chosen = np.ones(n, bool) if picked is None else np.asarray(picked, dtype=bool)
    key = np.where(np.isnan(sc), -np.inf, sc)
    top = [int(i) for i in np.argsort(-key, kind="stable") if chosen[i]][:max(0, top_n)]
    shown = set(top)
    rest = [int(i) for i in np.argsort(key, kind="stable")
            if i not in shown and not (picked is not None and chosen[i])]
    low = sorted(rest[:max(0, low_n)], key=lambda i: -key[i])
    cw, ch = (int(v) for v in cell_size)
    width = cols * cw + (cols + 1) * GAP
    what = f"picked by {sampler}" if sampler else "picked"
    parts = [_header(width, title or f"{what}: {len(top)} of {int(chosen.sum())}, highest score first")]
    parts.append(_cells(images, frames, sc, top, cols, (cw, ch), sampler, score_threshold, max_drivers, rank=True)
                 if top else _blank(width, ch // 2, "nothing picked"))
    if low:
        parts.append(_header(width, f"lowest scored (not picked), for contrast: {len(low)}"))
        parts.append(_cells(images, frames, sc, low, cols, (cw, ch), sampler, score_threshold, max_drivers,
                            rank=False))
    if legend:
        parts.append(legend_strip(width))
    return np.concatenate(parts, 0)


def _cell_title(score: float, name: str, position: int | None) -> str:
    """'#3 score 0.42 · name'; an unscored image (a random pick) is named only: no rank, no score."""
    if np.isnan(score):
        return name
    return (f"#{position} " if position is not None else "") + f"score {score:.4g} · {name}"


def _cells(images, frames, sc, order, cols, cell, sampler, thr, k, *, rank: bool) -> np.ndarray:
    cw, ch = cell
    rows = math.ceil(len(order) / cols)
    canvas = np.full((rows * (ch + GAP) + GAP, cols * cw + (cols + 1) * GAP, 3), BACKGROUND, dtype=np.uint8)
    for pos, i in enumerate(order):
        r, c = divmod(pos, cols)
        img, (frame,) = _resized(images[i], (frames[i],), cell)
        title = _cell_title(sc[i], frame.name, pos + 1 if rank else None)
        _paste(canvas, _draw_drivers(img, frame, sampler=sampler, score_threshold=thr, k=k, title=title),
               GAP + c * (cw + GAP), GAP + r * (ch + GAP), cell)
    return canvas


# --------------------------------------------------------------------------- charts


def _figure(figsize: tuple[float, float], ncols: int = 1, margins: dict | None = None):
    """A pyplot-free figure. Charts logged every cycle pass fixed `margins`
    (subplots_adjust) instead of constrained layout, which costs ~0.1 s a render."""
    fig = Figure(figsize=figsize, layout=None if margins else "constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    if margins:
        fig.subplots_adjust(**margins)
    return fig, axes


def score_histogram(scores, *, title: str = "scores", bins: int = 50, picked=None, log: bool = False):
    """Histogram of image scores; `picked` (scores of the picked images) drawn on top."""
    fig, (ax,) = _figure((6, 3.5), margins={"left": 0.12, "right": 0.97, "top": 0.9, "bottom": 0.14})
    scores = np.asarray(scores, dtype=float).reshape(-1)
    scores = scores[np.isfinite(scores)]
    if scores.size:
        _n, edges, _p = ax.hist(scores, bins=bins, color="#4c72b0", label=f"pool ({scores.size})", log=log)
        if picked is not None:
            picked = np.asarray(picked, dtype=float).reshape(-1)
            picked = picked[np.isfinite(picked)]
            if picked.size:
                ax.hist(picked, bins=edges, color="#dd8452", label=f"picked ({picked.size})", log=log)
                ax.legend()
    else:
        ax.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title, xlabel="score", ylabel="images")
    return fig


def _counts_by_id(counts: Mapping) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (counts or {}).items():
        cid = _class_id(key)
        out[cid] = out.get(cid, 0.0) + float(value)
    return out


def class_histogram(labeled_counts: Mapping, pool_counts: Mapping, *,
                    title: str = "classes: labeled vs pool"):
    """Fraction of boxes per class, labeled set beside the pool, log scale.

    Counts are keyed by det_20 id or class name. Each set is normalised to sum
    to 1, so a sampler that finds rare classes shows labeled bars above the
    pool's for them. Box counts (labeled / pool) are under the class names."""
    lab, pool = _counts_by_id(labeled_counts), _counts_by_id(pool_counts)
    ids = list(ID_TO_NAME)
    fig, (ax,) = _figure((8, 4), margins={"left": 0.09, "right": 0.98, "top": 0.92, "bottom": 0.13})
    x = np.arange(len(ids))
    lab_total, pool_total = sum(lab.values()), sum(pool.values())
    lab_frac = np.array([lab.get(i, 0) / lab_total if lab_total else 0.0 for i in ids])
    pool_frac = np.array([pool.get(i, 0) / pool_total if pool_total else 0.0 for i in ids])
    colors = [class_color_hex(i) for i in ids]
    ax.bar(x - 0.2, np.where(lab_frac > 0, lab_frac, np.nan), 0.4, color=colors, edgecolor="black",
           linewidth=0.5, label=f"labeled ({int(lab_total)} boxes)")
    ax.bar(x + 0.2, np.where(pool_frac > 0, pool_frac, np.nan), 0.4, color=colors, alpha=0.35,
           edgecolor="black", linewidth=0.5, hatch="//", label=f"pool ({int(pool_total)} boxes)")
    positive = np.concatenate([lab_frac, pool_frac])
    positive = positive[positive > 0]
    ax.set_yscale("log")
    if positive.size:
        ax.set_ylim(positive.min() / 2, min(1.0, positive.max()) * 4)
    else:
        ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
    # box counts (labeled / pool) under each class name: rare classes are the point
    ax.set_xticks(x, [f"{ID_TO_NAME[i]}\n{int(lab.get(i, 0))} / {int(pool.get(i, 0))}" for i in ids],
                  fontsize=8)
    ax.set(title=title, ylabel="fraction of boxes (log)")
    ax.grid(axis="y", alpha=0.3, which="both")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor="#777777", edgecolor="black", label=f"labeled ({int(lab_total)} boxes)"),
                       Patch(facecolor="#dddddd", edgecolor="black", hatch="//",
                             label=f"pool ({int(pool_total)} boxes)")], loc="upper right")
    return fig


def ap_bars(ap50_per_class: Mapping, *, title: str = "AP50 per class", mean: float | None = None):
    """One bar per det_20 class in its colour; classes with no ground truth (NaN) marked n/a.

    `mean` (pass the mAP50) is drawn as a dashed line; by default the mean of
    the finite APs."""
    aps = {_class_id(k): float(v) for k, v in (ap50_per_class or {}).items()}
    ids = list(ID_TO_NAME)
    values = np.array([aps.get(i, np.nan) for i in ids])
    fig, (ax,) = _figure((8, 4), margins={"left": 0.08, "right": 0.98, "top": 0.92, "bottom": 0.09})
    x = np.arange(len(ids))
    ax.bar(x, np.nan_to_num(values, nan=0.0), color=[class_color_hex(i) for i in ids], edgecolor="black",
           linewidth=0.5)
    for xi, v in zip(x, values):
        ax.text(xi, (0 if np.isnan(v) else v) + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center",
                va="bottom", fontsize=8)
    mean_label = "mAP50"
    if mean is None and np.isfinite(values).any():
        mean, mean_label = float(np.nanmean(values)), "mean of classes"
    if mean is not None and np.isfinite(mean):
        ax.axhline(mean, linestyle="--", color="gray", label=f"{mean_label} {mean:.3f}")
        ax.legend(loc="upper right")
    ax.set_xticks(x, [ID_TO_NAME[i] for i in ids], fontsize=8)
    ax.set(title=title, ylabel="AP50", ylim=(0, 1.05))
    ax.grid(axis="y", alpha=0.3)
    return fig


def learning_curves(curves: pd.DataFrame, *, x: str | Sequence[str] = "labeled_images", y: str = "mAP50",
                    reference: float | Mapping[str, float] | None = None, title: str = "learning curves",
                    show_seeds: bool = False, forecast_to: float | None = 2.0):
    """curves: one row per (sampler, seed, cycle) with columns sampler, cycle, x, y.

    One line per sampler (per sampler/protocol when several protocols are
    present): mean over seeds, shaded min..max spread. `x` may name several
    columns ("labeled_images", "labeled_boxes"): one panel each, sharing y.
    `reference`: the full-pool result as a dashed line (a number, or a mapping
    label -> number for several). `show_seeds` adds each seed's own line, faint.
    `forecast_to`: where a sampler has three or more label counts, its fitted learning curve
    (alod.forecast) continues dashed from the last budget to `forecast_to` x it, with the
    bootstrap band's edges dashed too (None: no forecast).
    """
    from alod import forecast as fcast

    xs = [x] if isinstance(x, str) else list(x)
    fig, axes = _figure((7 * len(xs), 4.5), ncols=len(xs))
    by_protocol = "protocol" in curves.columns and curves["protocol"].nunique() > 1
    keys = ["sampler", "protocol"] if by_protocol else ["sampler"]
    for ax, xcol in zip(axes, xs):
        for key, group in curves.groupby(keys, sort=True):
            label = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            group = group.dropna(subset=[xcol, y])
            if group.empty:
                continue
            stats = group.groupby("cycle").agg(x=(xcol, "mean"), mean=(y, "mean"), lo=(y, "min"), hi=(y, "max"),
                                               n=(y, "size")).sort_values("x")
            line, = ax.plot(stats["x"], stats["mean"], marker="o", label=f"{label} (n={int(stats['n'].max())})")
            if (stats["n"] > 1).any():
                ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=line.get_color(), alpha=0.2)
            if forecast_to:
                try:
                    fc = fcast.forecast(group[xcol], group[y], group["seed"] if "seed" in group.columns else None)
                except fcast.NotEnoughPoints:
                    fc = None
                if fc is not None:
                    grid = np.linspace(fc.now, fc.now * forecast_to, 40)
                    mid, lo, hi = fc.curve(grid)
                    ax.plot(grid, mid, linestyle="--", color=line.get_color(), linewidth=1.2,
                            label=f"{label} forecast (dashed: fit, 80 % band)")
                    if np.isfinite(lo).all():
                        ax.plot(grid, lo, linestyle="--", color=line.get_color(), linewidth=0.7)
                        ax.plot(grid, hi, linestyle="--", color=line.get_color(), linewidth=0.7)
                        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.08, linestyle="--")
            if show_seeds and "seed" in group.columns:
                for _seed, g in group.groupby("seed"):
                    g = g.sort_values("cycle")
                    ax.plot(g[xcol], g[y], color=line.get_color(), alpha=0.3, linewidth=0.8)
        refs = reference if isinstance(reference, Mapping) else (
            {"full pool": reference} if reference is not None else {})
        for (name, value), style in zip(refs.items(), ("--", ":", "-.", (0, (1, 4)))):
            if value is not None and np.isfinite(value):
                ax.axhline(float(value), linestyle=style, color="gray", label=f"{name} ({float(value):.3f})")
        # several panels: the title once above them (per panel it ran under the legend), each panel its x
        ax.set(title=title if len(xs) == 1 else f"against {xcol.replace('_', ' ')}",
               xlabel=xcol.replace("_", " "), ylabel=y)
        ax.grid(alpha=0.3)
        if not ax.get_legend_handles_labels()[0]:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    # One legend beside the panels, every panel's entries once: five samplers with forecasts make a dozen
    # entries, which inside an axes cover the curves.
    entries = {}  # label -> handle, in first-drawn order
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize="small")
    if len(xs) > 1:
        fig.suptitle(title)
    return fig
