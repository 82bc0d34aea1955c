"""`alod evaluate --predictions P.json --labels GT.json` against the official BDD100K
evaluator (`python -m bdd100k.eval.run -t det`, bdd100k 1.0.1 + scalabel 0.3.1), to 1e-9.

The official packages go into their own virtualenv (they need `pydantic<2` and
`numpy<2`), built once and cached under ~/.cache/alod-test/ (ALOD_TEST_CACHE), keyed
by the versions. Without PyPI the tests skip, unless ALOD_REQUIRE_OFFICIAL_EVALUATOR=1
(`.ci/run` sets it) makes that a failure.

The cases are generated: ignore regions (2018 names and `crowd`/`ignored` attributes in
every spelling the toolkit reads), tiny and zero-width boxes, boxes crossing or outside
the image border (frames with and without `size`), more than 100 detections on an
image, jittered, missing, duplicated and mislabeled predictions, tied scores, images
named out of order, frames without labels, labels without box2d, empty predictions.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from alod.data.categories import CATEGORIES
from entrypoints.cli import cli

OFFICIAL = ("bdd100k==1.0.1", "scalabel==0.3.1", "pydantic<2", "numpy<2")
KEY = f"bdd100k-1.0.1_scalabel-0.3.1_pydantic1_numpy1_py{sys.version_info.major}.{sys.version_info.minor}"
CACHE = Path(os.environ.get("ALOD_TEST_CACHE", Path.home() / ".cache" / "alod-test"))
TOLERANCE = 1e-9

NAMES_2018 = ("person", "bike", "motor", "van", "caravan")
IGNORE_NAMES = ("other person", "other vehicle", "trailer")
# Attribute spellings the toolkit (pydantic 1, then bool()) and alod both read as flags.
FLAG_VALUES = (True, False, 1, 0, 1.0, "true", "False", "yes", "no", "1", "0", "on", "off")


# --- the official evaluator's virtualenv ------------------------------------------


def _unavailable(message: str):
    if os.environ.get("ALOD_REQUIRE_OFFICIAL_EVALUATOR"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def official_python() -> Path:
    """The cached virtualenv's python, built on first use (about a minute with PyPI)."""
    venv = CACHE / KEY
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{KEY}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
        if not ready.exists():
            # A venv's scripts name its folder, so it is built in place; `.ready` marks it done.
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            steps = [[sys.executable, "-m", "venv", str(venv)],
                     [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *OFFICIAL],
                     [str(python), "-c", "import bdd100k.eval.run, scalabel.eval.detect"]]
            for cmd in steps:
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
                except subprocess.TimeoutExpired:
                    _unavailable(f"building the official evaluator's venv timed out: {' '.join(cmd)}")
                if proc.returncode != 0:
                    _unavailable(f"cannot build the official evaluator's venv in {venv} "
                                 f"({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
            ready.write_text("\n".join(OFFICIAL) + "\n")
    return python


# --- generated cases ------------------------------------------------------------


def _coord(rng, lo, hi, decimals):
    v = rng.uniform(lo, hi)
    return float(round(v, decimals)) if decimals is not None else float(v)


def _box(rng, *, border: bool, tiny: bool, decimals):
    """An inclusive box2d; `border`: may cross or lie outside the 1280x720 image."""
    if tiny:
        w, h = rng.choice([0.0, 0.5, 1.0, 2.0]), rng.choice([0.0, 1.0, 3.0])
    else:
        w, h = _coord(rng, 4, 300, decimals), _coord(rng, 4, 200, decimals)
    if border:
        x1, y1 = _coord(rng, -150, 1350, decimals), _coord(rng, -100, 760, decimals)
    else:
        x1, y1 = _coord(rng, 0, 1270 - w, decimals), _coord(rng, 0, 710 - h, decimals)
    return {"x1": x1, "y1": y1, "x2": x1 + w, "y2": y1 + h}


def _jitter(rng, box, amount):
    w, h = box["x2"] - box["x1"] + 1, box["y2"] - box["y1"] + 1
    d = rng.normal(0, amount, 4) * np.array([w, h, w, h])
    x1, y1, x2, y2 = box["x1"] + d[0], box["y1"] + d[1], box["x2"] + d[2], box["y2"] + d[3]
    return {"x1": float(x1), "y1": float(y1), "x2": float(max(x2, x1)), "y2": float(max(y2, y1))}


def _category(rng, *, ignore_share: float, old_share: float) -> str:
    r = rng.random()
    if r < ignore_share:
        return str(rng.choice(IGNORE_NAMES))
    if r < ignore_share + old_share:
        return str(rng.choice(NAMES_2018))
    return str(rng.choice(CATEGORIES))


def generate(seed: int, *, images=8, boxes=(0, 14), ignore_share=0.1, old_share=0.1, flag_share=0.15,
             border_share=0.15, tiny_share=0.1, decimals=2, detect=0.8, jitter=0.08, mislabel=0.1,
             duplicate=0.1, false_positives=(0, 6), crowded_image=False, missing_share=0.15,
             score_levels=None, sized_share=0.5):
    """(ground truth, predictions) as Scalabel JSON lists; knobs name the hard parts."""
    rng = np.random.default_rng(seed)
    names = [f"{rng.integers(16**8):08x}.jpg" for _ in range(images)]  # not in sorted order
    gt, preds = [], []
    for k, name in enumerate(names):
        frame: dict = {"name": name}
        if rng.random() < sized_share:
            frame["size"] = {"width": 1280, "height": 720}
        if rng.random() < 0.2:
            frame["attributes"] = {"weather": "clear", "timeofday": "daytime", "scene": "city street"}
        labels, plabels = [], []
        n = int(rng.integers(boxes[0], boxes[1] + 1))
        for j in range(n):
            box = _box(rng, border=rng.random() < border_share, tiny=rng.random() < tiny_share, decimals=decimals)
            label = {"id": str(j), "category": _category(rng, ignore_share=ignore_share, old_share=old_share),
                     "box2d": box}
            if rng.random() < flag_share:
                label["attributes"] = {str(rng.choice(["crowd", "ignored"])): FLAG_VALUES[rng.integers(len(FLAG_VALUES))],
                                       "occluded": bool(rng.random() < 0.5)}
            labels.append(label)
            if rng.random() < detect:
                copies = 2 if rng.random() < duplicate else 1
                for _ in range(copies):
                    cat = label["category"] if rng.random() >= mislabel else str(rng.choice(CATEGORIES))
                    plabels.append({"category": cat, "box2d": _jitter(rng, box, jitter)})
        if rng.random() < 0.05:
            # no box2d: skipped by both (an unknown category would stop the official evaluator)
            labels.append({"id": "poly", "category": "car", "poly2d": [{"vertices": [[0, 0], [5, 5]],
                                                                         "types": "LL", "closed": False}]})
        n_fp = int(rng.integers(false_positives[0], false_positives[1] + 1))
        if crowded_image and k == 0:
            n_fp += 130  # more than COCOeval's 100 detections per image
        for _ in range(n_fp):
            plabels.append({"category": str(rng.choice(CATEGORIES)),
                            "box2d": _box(rng, border=False, tiny=rng.random() < tiny_share, decimals=None)})
        if labels or rng.random() < 0.5:
            frame["labels"] = labels
        elif rng.random() < 0.5:
            frame["labels"] = None
        gt.append(frame)
        if rng.random() < missing_share:
            continue  # no prediction frame for this image at all
        for i, pl in enumerate(plabels):
            score = rng.random()
            if score_levels:
                score = round(score * score_levels) / score_levels  # ties across and within images
            pl["id"] = str(i)
            pl["score"] = float(score)
        rng.shuffle(plabels)
        preds.append({"name": name, "labels": plabels})
    order = rng.permutation(len(preds))
    return gt, [preds[i] for i in order]


def _only_ignore_regions():
    gt = [{"name": "b.jpg", "labels": [{"id": "0", "category": "other vehicle",
                                        "box2d": {"x1": 10, "y1": 10, "x2": 50, "y2": 40}}]},
          {"name": "a.jpg", "labels": [{"id": "0", "category": "pedestrian",
                                        "box2d": {"x1": 100, "y1": 100, "x2": 130, "y2": 180}}]}]
    preds = [{"name": "a.jpg", "labels": [{"id": "0", "category": "pedestrian", "score": 0.9,
                                           "box2d": {"x1": 101, "y1": 99, "x2": 131, "y2": 181}}]},
             {"name": "b.jpg", "labels": [{"id": "0", "category": "car", "score": 0.8,
                                           "box2d": {"x1": 10, "y1": 10, "x2": 50, "y2": 40}}]}]
    return gt, preds


def _tie_across_images():
    """Equal scores on two images: the official evaluator ranks them by image name."""
    box = {"x1": 10.0, "y1": 10.0, "x2": 60.0, "y2": 60.0}
    far = {"x1": 600.0, "y1": 300.0, "x2": 650.0, "y2": 350.0}
    gt = [{"name": "z.jpg", "labels": [{"id": "0", "category": "car", "box2d": box}]},
          {"name": "a.jpg", "labels": [{"id": "0", "category": "car", "box2d": box}]}]
    preds = [{"name": "z.jpg", "labels": [{"id": "0", "category": "car", "score": 0.5, "box2d": box}]},
             {"name": "a.jpg", "labels": [{"id": "0", "category": "car", "score": 0.5, "box2d": far}]}]
    return gt, preds


def _border_crossing():
    """A sized frame whose ground truth crosses the border and lies outside it."""
    gt = [{"name": "a.jpg", "size": {"width": 1280, "height": 720}, "labels": [
        {"id": "0", "category": "car", "box2d": {"x1": 1200.0, "y1": 600.0, "x2": 1400.0, "y2": 760.0}},
        {"id": "1", "category": "bus", "box2d": {"x1": -80.0, "y1": 100.0, "x2": 60.0, "y2": 300.0}},
        {"id": "2", "category": "truck", "box2d": {"x1": 1300.0, "y1": 10.0, "x2": 1350.0, "y2": 60.0}}]}]
    preds = [{"name": "a.jpg", "labels": [
        {"id": "0", "category": "car", "score": 0.9, "box2d": {"x1": 1200.0, "y1": 600.0, "x2": 1279.0, "y2": 719.0}},
        {"id": "1", "category": "bus", "score": 0.8, "box2d": {"x1": 0.0, "y1": 100.0, "x2": 60.0, "y2": 300.0}},
        {"id": "2", "category": "truck", "score": 0.7, "box2d": {"x1": 1300.0, "y1": 10.0, "x2": 1350.0, "y2": 60.0}}]}]
    return gt, preds


def _flag_spellings():
    """Ignore regions spelled 1, "yes", "true", "on", 1.0 (missed: no effect) and false ones (missed: a miss)."""
    def car(j, x, attrs=None):
        lab = {"id": str(j), "category": "car", "box2d": {"x1": x, "y1": 10.0, "x2": x + 40, "y2": 50.0}}
        if attrs is not None:
            lab["attributes"] = attrs
        return lab
    flags = [{"crowd": 1}, {"ignored": "yes"}, {"crowd": "true"}, {"ignored": "on"}, {"crowd": 1.0},
             {"crowd": "no"}, {"ignored": 0}]
    gt = [{"name": "a.jpg", "labels": [car(0, 0.0)] + [car(j + 1, 60.0 * (j + 1), f) for j, f in enumerate(flags)]}]
    preds = [{"name": "a.jpg", "labels": [{**car(0, 0.0), "score": 0.9}]}]
    return gt, preds


def _no_predictions_ignore_only_class():
    gt, _ = _only_ignore_regions()
    return gt, [{"name": "a.jpg", "labels": []}]


CASES = {
    "flag-spellings": _flag_spellings,
    "no-predictions-ignore-only-class": _no_predictions_ignore_only_class,
    "mixed": lambda: generate(1),
    "mixed-2": lambda: generate(2, images=12),
    "full-precision": lambda: generate(3, decimals=None),
    "ignore-and-flags": lambda: generate(4, ignore_share=0.35, flag_share=0.5, old_share=0.3),
    "tiny-boxes": lambda: generate(5, tiny_share=0.6, jitter=0.3),
    "border": lambda: generate(6, border_share=0.8, sized_share=1.0),
    "over-100-detections": lambda: generate(7, images=4, crowded_image=True),
    "tied-scores": lambda: generate(8, score_levels=4, duplicate=0.4),
    "tied-scores-2": lambda: generate(9, score_levels=1, images=10),
    "missing-and-mislabeled": lambda: generate(10, missing_share=0.5, mislabel=0.5, detect=0.6),
    "sparse-classes": lambda: generate(11, images=5, boxes=(0, 2), false_positives=(0, 1)),
    "no-predictions": lambda: (generate(12)[0], []),
    "no-ground-truth-boxes": lambda: (generate(13, boxes=(0, 0))[0], generate(13)[1]),
    "only-ignore-regions-in-a-class": _only_ignore_regions,
    "tie-across-images": _tie_across_images,
    "border-crossing": _border_crossing,
}

# Runs the official entry point (`python -m bdd100k.eval.run`'s run()) once per case in one
# interpreter: the same code as the command, without paying its imports for every case.
DRIVER = """
import json, sys
from bdd100k.eval.run import run
for gt, pred, out in json.loads(sys.argv[1]):
    sys.argv = ["bdd100k.eval.run", "-t", "det", "-g", gt, "-r", pred, "--out-file", out, "--nproc", "1", "-q"]
    run()
"""


@pytest.fixture(scope="module")
def cases(tmp_path_factory, official_python):
    """Case name -> (gt path, predictions path, the official metrics on the 0..1 scale)."""
    root = tmp_path_factory.mktemp("official")
    jobs = []
    for name, make in CASES.items():
        gt, preds = make()
        (root / name).mkdir()
        paths = [root / name / "gt.json", root / name / "pred.json", root / name / "official.json"]
        paths[0].write_text(json.dumps(gt))
        paths[1].write_text(json.dumps(preds))
        jobs.append([str(p) for p in paths])
    proc = subprocess.run([str(official_python), "-c", DRIVER, json.dumps(jobs)], capture_output=True,
                          text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, f"the official evaluator failed:\n{proc.stderr[-5000:]}"
    out = {}
    for name, (gt, pred, official) in zip(CASES, jobs):
        res = json.loads(Path(official).read_text())
        metrics = {"mAP50": res["AP50"][1]["OVERALL"] / 100, "mAP50_95": res["AP"][1]["OVERALL"] / 100}
        metrics.update({f"AP50.{c}": v / 100 for c, v in res["AP50"][0].items()})
        out[name] = (gt, pred, metrics)
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_alod_evaluate_equals_the_official_evaluator(cases, case, backend):
    gt, pred, official = cases[case]
    result = CliRunner().invoke(cli, ["evaluate", "--predictions", pred, "--labels", gt, "--json",
                                      "--backend", backend])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    ours = {"mAP50": got["mAP50"], "mAP50_95": got["mAP50_95"],
            **{f"AP50.{c}": v for c, v in got["AP50"].items()}}
    ours = {k: float("nan") if v is None else v for k, v in ours.items()}
    assert set(ours) == set(official)
    wrong = {k: (ours[k], official[k]) for k in official if not _same(ours[k], official[k])}
    assert not wrong, f"{case}: alod vs official differ: {wrong}"


def test_the_cases_exercise_what_they_are_named_for(cases):
    """The generated cases really hold the hard parts (a weak case would pass by luck)."""
    def labels(path):
        return [lab for f in json.loads(Path(path).read_text()) for lab in (f.get("labels") or [])]

    gt, pred, official = cases["over-100-detections"]
    assert max(len(f["labels"]) for f in json.loads(Path(pred).read_text())) > 100
    gt, pred, _ = cases["border"]
    assert any(lab["box2d"]["x1"] < 0 or lab["box2d"]["x2"] > 1279 for lab in labels(gt) if "box2d" in lab)
    gt, pred, _ = cases["tied-scores"]
    scores = [lab["score"] for lab in labels(pred)]
    assert len(set(scores)) < len(scores) / 4
    gt, _, _ = cases["ignore-and-flags"]
    assert any(lab.get("attributes", {}).get("crowd") in (1, "yes", "true", "1", "on") or
               lab.get("attributes", {}).get("ignored") in (1, "yes", "true", "1", "on") for lab in labels(gt))
    assert any(lab["category"] in IGNORE_NAMES for lab in labels(gt))
    # 5 of the 7 flagged cars are ignore regions, 2 are misses: AP50 1/3 only when read as the toolkit does
    assert cases["flag-spellings"][2]["AP50.car"] == pytest.approx(1 / 3, abs=0.02)
    # the official empty result: 0 for a class with only ignore regions
    assert cases["no-predictions-ignore-only-class"][2]["AP50.car"] == 0.0
    # the tie across images decides the number: ranked by name, the hit comes second
    assert cases["tie-across-images"][2]["mAP50"] < 1.0
    # ground truth beyond the border is kept: the clipped predictions miss two of three
    assert 0 < cases["border-crossing"][2]["mAP50"] < 1.0
