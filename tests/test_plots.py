"""Pictures and charts: sizes, edge cases (empty, ignore-only, hundreds of boxes), determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from alod import pictures, plots
from alod.data.bdd100k import load_labels
from alod.data.categories import ID_TO_NAME
from alod.data.frames import Frame
from alod.data.synthetic import write_dataset
from alod.models import build_detector

H, W = 90, 160


def _image(h=H, w=W, value=100):
    return torch.full((3, h, w), value, dtype=torch.uint8)


def _pred(boxes, labels, scores, probs=None):
    n = len(labels)
    return Frame("p.jpg", np.asarray(boxes, np.float32).reshape(-1, 4), labels, scores=scores, probs=probs,
                 proposal=np.arange(n) if probs is not None else None)


def _many(n, seed=0, w=W, h=H, scores=True):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 10, h - 10], (n, 2))
    wh = rng.uniform(1, 40, (n, 2))
    return Frame("many.jpg", np.c_[xy, xy + wh], rng.integers(1, 11, n), ignore=rng.uniform(size=n) < 0.1,
                 scores=rng.uniform(size=n) if scores else None)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, train=6, val=4, seed=0)
    val, _ = load_labels(root / "labels/det_20/det_val.json")
    train, _ = load_labels(root / "labels/det_20/det_train.json")
    return root, train, val


# --------------------------------------------------------------------------- palette


def test_one_fixed_distinct_colour_per_class():
    assert set(plots.CLASS_COLORS) == set(ID_TO_NAME)
    assert len(set(plots.CLASS_COLORS.values())) == len(ID_TO_NAME)
    assert plots.class_color(3) == plots.CLASS_COLORS[3]
    assert plots.class_color(99) == plots.UNKNOWN_COLOR
    assert plots.class_color_hex(1) == "#e6194b"


# --------------------------------------------------------------------------- draw_frame


def test_draw_frame_keeps_size_and_draws_in_class_colour():
    img = _image()
    out = plots.draw_frame(img, Frame("a", [[10, 10, 60, 50]], [3]))
    assert out.shape == (3, H, W) and out.dtype == torch.uint8
    assert torch.equal(img, _image())  # the input is not drawn on
    assert tuple(out[:, 10, 30].tolist()) == plots.CLASS_COLORS[3]  # top edge
    assert tuple(out[:, 80, 100].tolist()) == (100, 100, 100)  # far from the box


def test_draw_frame_empty_and_below_threshold_leave_the_image_alone():
    img = _image()
    with_nothing = plots.draw_frame(img, Frame("a"))
    assert torch.equal(with_nothing, img)
    empty_pred = plots.draw_frame(img, Frame("a", scores=np.zeros(0)))
    assert torch.equal(empty_pred, img)
    low = plots.draw_frame(img, _pred([[10, 10, 60, 50]], [3], [0.1]), score_threshold=0.5)
    assert torch.equal(low, img)
    titled = plots.draw_frame(img, Frame("a"), title="nothing here")
    assert titled.shape == img.shape and not torch.equal(titled, img)


def test_ignore_only_frame_is_hatched_inside_only():
    img = _image()
    out = plots.draw_frame(img, Frame("a", [[20, 20, 80, 70]], [3], ignore=[True]))
    inside = out[:, 22:68, 22:78]
    assert not torch.equal(inside, img[:, 22:68, 22:78])  # hatched
    assert (inside == 100).all(0).any()  # ... but not filled: the image shows between stripes
    assert torch.equal(out[:, 75:, :], img[:, 75:, :])
    assert torch.equal(out[:, :, 85:], img[:, :, 85:])
    # no class colour: ignore regions never look like a box of their class
    colours = {tuple(c) for c in out.permute(1, 2, 0).reshape(-1, 3).tolist()}
    assert plots.CLASS_COLORS[3] not in colours


def test_hundreds_of_boxes_and_odd_boxes():
    img = _image(360, 640)
    frame = _many(350, w=640, h=360)
    out = plots.draw_frame(img, frame, title="350 boxes")
    assert out.shape == (3, 360, 640)
    gt = plots.draw_frame(img, _many(320, seed=1, w=640, h=360, scores=False))
    assert gt.shape == (3, 360, 640)
    odd = Frame("odd", [[-20, -20, 5, 5], [150, 80, 400, 300], [10, 10, 10, 10], [500, 500, 600, 600],
                        [np.nan, 1, 2, 3], [30, 30, 31.5, 31.5]], [1, 2, 3, 4, 5, 6])
    assert plots.draw_frame(_image(), odd).shape == (3, H, W)


def test_draw_frame_accepts_float_gray_and_hwc_images():
    frame = Frame("a", [[10, 10, 60, 50]], [1])
    assert plots.draw_frame(torch.rand(3, H, W), frame).dtype == torch.uint8
    assert plots.draw_frame(torch.zeros(1, H, W, dtype=torch.uint8), frame).shape == (3, H, W)
    assert plots.draw_frame(np.zeros((H, W, 3), np.uint8), frame).shape == (3, H, W)
    with pytest.raises(ValueError):
        plots.draw_frame(torch.zeros(2, 5, H, W), frame)


# --------------------------------------------------------------------------- grids


def test_gt_vs_pred_grid_shape_with_empty_and_crowded_predictions():
    imgs = [_image(), _image(180, 320), _image(720, 1280)]
    gts = [Frame("a", [[10, 10, 60, 50]], [3]), Frame("b", [[5, 5, 50, 50]], [1], ignore=[True]), _many(300)]
    preds = [Frame("a", scores=np.zeros(0)), _pred([[10, 10, 60, 50]], [3], [0.9]), _many(400, seed=2)]
    cw, ch = 200, 120
    grid = plots.gt_vs_pred_grid(imgs, gts, preds, cols=2, cell_size=(cw, ch))
    width = 4 * cw + 5 * plots.GAP
    legend = plots.legend_strip(width)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * (ch + plots.GAP) + plots.GAP + legend.shape[0], width, 3)
    bare = plots.gt_vs_pred_grid(imgs, gts, preds, cols=3, cell_size=(cw, ch), legend=False)
    assert bare.shape == (ch + 2 * plots.GAP, 6 * cw + 7 * plots.GAP, 3)
    assert plots.gt_vs_pred_grid([], [], [], legend=False).shape[0] > 0
    with pytest.raises(ValueError, match="aligned"):
        plots.gt_vs_pred_grid(imgs, gts, preds[:2])


def test_picked_sheet_shape_order_and_drivers():
    rng = np.random.default_rng(0)
    imgs = [_image(value=20 * i) for i in range(8)]
    probs = rng.dirichlet(np.ones(11), 3).astype(np.float32)
    frames = [_pred([[10, 10, 60, 50], [70, 20, 100, 60], [5, 5, 20, 20]], [3, 1, 9], [0.9, 0.6, 0.4], probs)
              for _ in imgs]
    frames[0] = Frame("none.jpg", scores=np.zeros(0))  # no detections
    scores = [5, 1, 7, 3, np.nan, 2, 8, 0]
    cw, ch = 160, 90
    sheet = plots.picked_sheet(imgs, frames, scores, top_n=3, low_n=2, cols=3, cell_size=(cw, ch), sampler="entropy")
    width = 3 * cw + 4 * plots.GAP
    cells = ch + 2 * plots.GAP
    header = plots._header(width, "x").shape[0]
    assert sheet.shape == (2 * header + 2 * cells + plots.legend_strip(width).shape[0], width, 3)
    nothing = plots.picked_sheet([], [], [], top_n=3, low_n=2, legend=False)
    assert nothing.ndim == 3 and nothing.shape[2] == 3
    # drivers: the most uncertain distinct detections first, by the sampler's measure
    idx, values, tag = plots.driver_detections(frames[1], sampler="entropy", k=2)
    from alod.active.samplers import entropy_of
    ent = entropy_of(probs)
    assert tag == "H" and list(idx) == list(np.argsort(-ent)[:2]) and np.allclose(values, np.sort(ent)[::-1][:2])
    idx, values, tag = plots.driver_detections(frames[1], sampler="margin:mean", k=5)
    assert tag == "M" and len(idx) == 3
    plain = _pred([[10, 10, 60, 50], [70, 20, 100, 60]], [3, 1], [0.2, 0.7])
    idx, values, tag = plots.driver_detections(plain, sampler="boxcount", score_threshold=0.5)
    assert list(idx) == [1] and tag == ""


# --------------------------------------------------------------------------- charts


def _saved_size(fig, tmp_path, name):
    from PIL import Image

    path = tmp_path / name
    fig.savefig(path)
    with Image.open(path) as im:
        return im.size


def test_charts_are_figures_of_their_size(tmp_path):
    dpi = 100
    hist = plots.score_histogram([0.1, 0.5, np.nan, 0.9], picked=[0.9], title="s")
    assert isinstance(hist, Figure) and _saved_size(hist, tmp_path, "h.png") == (6 * dpi, 350)
    assert isinstance(plots.score_histogram([]), Figure)
    classes = plots.class_histogram({"car": 10, 1: 2}, {3: 1000, 6: 1, 10: 30})
    assert _saved_size(classes, tmp_path, "c.png") == (800, 400)
    assert classes.axes[0].get_yscale() == "log"
    assert isinstance(plots.class_histogram({}, {}), Figure)
    aps = plots.ap_bars({"car": 0.5, "pedestrian": float("nan"), "bus": 0.1}, mean=0.3)
    assert _saved_size(aps, tmp_path, "a.png") == (800, 400)
    with pytest.raises(ValueError, match="unknown class"):
        plots.ap_bars({"spaceship": 0.3})


def _curves():
    rows = []
    for sampler, gain in (("random", 0.1), ("boxcount", 0.2)):
        for seed in (0, 1, 2):
            for cycle in (1, 2, 3):
                rows.append({"sampler": sampler, "protocol": "batches", "seed": seed, "cycle": cycle,
                             "labeled_images": 60 * cycle, "labeled_boxes": 500 * cycle + 7 * seed,
                             "mAP50": gain * cycle + 0.01 * seed})
    return pd.DataFrame(rows)


def test_learning_curves_old_call_and_new_options(tmp_path):
    curves = _curves()
    old = plots.learning_curves(curves, title="mAP50 against labeled images", forecast_to=None)
    assert isinstance(old, Figure) and len(old.axes) == 1
    assert len(old.axes[0].collections) == 2  # min..max spread band per sampler
    both = plots.learning_curves(curves, x=("labeled_images", "labeled_boxes"), reference=0.7, show_seeds=True,
                                 forecast_to=None)
    assert len(both.axes) == 2
    assert _saved_size(both, tmp_path, "lc.png") == (1400, 450)
    dashed = [ln for ln in both.axes[1].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 0.7
    assert isinstance(plots.learning_curves(curves.iloc[:0]), Figure)


def test_learning_curves_legend_sits_beside_the_panels_not_on_the_curves(tmp_path):
    fig = plots.learning_curves(_curves(), x=("labeled_images", "labeled_boxes"),
                                reference={"full pool": 0.7, "zero labels": 0.05})
    _saved_size(fig, tmp_path, "lc.png")  # lays the figure out
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent()
    assert legend.x0 >= max(ax.get_window_extent().x1 for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "full pool (0.700)" in labels and "zero labels (0.050)" in labels
    # the title once above the panels, each panel's own clear of the legend (a long one ran under it)
    titled = plots.learning_curves(_curves(), x=("labeled_images", "labeled_boxes"),
                                    title="test mAP50, transfer, warm start, a long title")
    _saved_size(titled, tmp_path, "titled.png")  # lays the figure out
    renderer = titled._get_renderer()
    assert titled.get_suptitle() == "test mAP50, transfer, warm start, a long title"
    assert [ax.get_title() for ax in titled.axes] == ["against labeled images", "against labeled boxes"]
    legend_x0 = titled.legends[0].get_window_extent(renderer).x0
    assert all(ax.title.get_window_extent(renderer).x1 <= legend_x0 for ax in titled.axes)
    styles = {ln.get_label(): ln.get_linestyle() for ln in fig.axes[0].get_lines()}
    assert styles["full pool (0.700)"] != styles["zero labels (0.050)"]  # two gray references told apart
    # a sampler only one panel can draw (no image counts logged) is still in the legend, once
    curves = _curves()
    curves.loc[curves["sampler"] == "boxcount", "labeled_images"] = float("nan")
    labels = [t.get_text() for t in plots.learning_curves(curves, x=("labeled_images", "labeled_boxes"),
                                                          forecast_to=None).legends[0].get_texts()]
    assert labels == ["random (n=3)", "boxcount (n=3)"]


def test_learning_curves_draw_the_forecast_dashed_with_its_band():
    curves = _curves()
    fig = plots.learning_curves(curves)  # default: forecast to 2x the last budget
    ax = fig.axes[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 2 * 3  # per sampler: the fit and the band's two edges (bootstrap over 3 seeds)
    fits = [ln for ln in dashed if ln.get_label().endswith("forecast (dashed: fit, 80 % band)")]
    assert len(fits) == 2
    for ln in fits:
        x = ln.get_xdata()
        assert x[0] == 180 and x[-1] == 360  # from the last budget to twice it
    assert len(ax.collections) == 4  # the spread over seeds and the forecast band, per sampler
    few = plots.learning_curves(curves[curves["cycle"] < 3])  # two budgets: no forecast
    assert not [ln for ln in few.axes[0].get_lines() if ln.get_linestyle() == "--"]


# --------------------------------------------------------------------------- pictures (library helpers)


def test_fixed_val_sample_is_deterministic_and_prefers_boxes():
    frames = [Frame(f"{i:03d}.jpg", [[0, 0, 5, 5]] if i % 2 else np.zeros((0, 4)), [1] if i % 2 else [])
              for i in range(40)]
    a = pictures.fixed_val_sample(frames, 6, seed=0)
    b = pictures.fixed_val_sample(list(reversed(frames)), 6, seed=0)
    assert [f.name for f in a] == [f.name for f in b]
    assert all(f.num_trainable for f in a)
    assert [f.name for f in pictures.fixed_val_sample(frames, 6, seed=1)] != [f.name for f in a]
    assert len(pictures.fixed_val_sample(frames[:3], 6)) == 3


def test_class_counts_skip_ignore_regions():
    frames = [Frame("a", np.zeros((3, 4)), [3, 3, 1], ignore=[False, True, False]), Frame("b")]
    counts = pictures.class_counts(frames)
    assert counts[3] == 1 and counts[1] == 1 and sum(counts.values()) == 2 and set(counts) == set(ID_TO_NAME)


def test_cycle_and_selection_pictures_with_a_tiny_model(synth):
    root, train, val = synth
    torch.manual_seed(0)
    model = build_detector("tiny")
    model.train()
    sample = pictures.fixed_val_sample(val, 4)
    vroot, troot = root / "images/100k/val", root / "images/100k/train"
    out = pictures.cycle_pictures(model, sample, vroot, ap50_per_class={"car": 0.2}, map50=0.2, labeled=train[:2],
                                  pool=train, cols=2, cell_size=(160, 90), title="cycle 1")
    assert model.training  # inference did not leave the model in eval mode
    assert out["gt_vs_pred"].shape[1] == 4 * 160 + 5 * plots.GAP
    assert isinstance(out["ap50_per_class"], Figure) and isinstance(out["class_histogram"], Figure)
    preds = [Frame(f.name, f.boxes[:1], f.labels[:1], scores=[0.9]) for f in val]
    again = pictures.cycle_pictures(None, sample, vroot, predictions=preds, cols=2, cell_size=(160, 90))
    assert set(again) == {"gt_vs_pred"} and again["gt_vs_pred"].shape == out["gt_vs_pred"].shape
    with pytest.raises(KeyError):
        pictures.cycle_pictures(None, sample, vroot, predictions=preds[:1])

    scores = {f.name: float(i) for i, f in enumerate(train)}
    scores[train[0].name] = -1.0  # labeled before (set-based samplers score them -1): never the contrast
    picked = [train[5].name, train[4].name]
    sel = pictures.selection_pictures(picked, scores, train, troot, sampler="entropy", model=model, top_n=2,
                                      low_n=2, labeled=[train[0].name], cycle=2, cols=2, cell_size=(160, 90))
    assert sel["picked"].shape[1] == 2 * 160 + 3 * plots.GAP and sel["picked"].dtype == np.uint8
    assert isinstance(sel["score_histogram"], Figure)
    first = pictures.selection_pictures(picked, None, train, troot, sampler="random", cycle=1,
                                        what="random from batch 1")
    assert set(first) == {"picked"}
    # batches protocol: scores from the ranking, no model at hand
    ranked = pictures.selection_pictures(picked, scores, train, troot, sampler="boxcount", top_n=1, low_n=1,
                                         cols=2, cell_size=(160, 90))
    assert ranked["picked"].shape[1] == sel["picked"].shape[1]
    with pytest.raises(KeyError, match="not in the pool"):
        pictures.selection_pictures(["nope.jpg"], None, train, troot)


def test_library_imports_no_click_or_mlflow():
    code = ("import sys, alod.plots, alod.pictures; "
            "bad = [m for m in ('mlflow', 'click') if m in sys.modules]; "
            "assert not bad, bad; import matplotlib; assert matplotlib.get_backend().lower() == 'agg'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})


def test_picked_cell_titles_name_a_random_pick_without_score_or_rank():
    assert plots._cell_title(0.42, "a.jpg", 3) == "#3 score 0.42 · a.jpg"
    assert plots._cell_title(7.0, "b.jpg", None) == "score 7 · b.jpg"
    assert plots._cell_title(float("nan"), "c.jpg", 1) == "c.jpg"  # cycle 1's random tiles: no "score ?"
