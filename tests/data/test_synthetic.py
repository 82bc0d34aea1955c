"""Synthetic BDD100K-format scenes: layout, determinism, label round trip, class mix."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from alod.data.bdd100k import load_labels, split_paths
from alod.data.categories import CATEGORIES, ID_TO_NAME
from alod.data.synthetic import MAX_OBJECTS, render_scene, scene_rng, write_dataset

NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}\.jpg$")
COUNTS = dict(train=6, val=3, test=2)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    write_dataset(out, **COUNTS, seed=3)
    return out


def test_layout_is_the_bdd100k_download_layout(small):
    produced = {p.relative_to(small).as_posix() for p in small.rglob("*") if p.is_file()}
    expected = {".alod-synthetic"} | {f"labels/det_20/det_{s}.json" for s in COUNTS}
    for split, n in COUNTS.items():
        labels, images = split_paths(small, split)
        assert labels == small / "labels" / "det_20" / f"det_{split}.json"
        assert images == small / "images" / "100k" / split
        jpgs = sorted(images.iterdir())
        assert len(jpgs) == n
        assert all(NAME.match(p.name) for p in jpgs)
        expected |= {f"images/100k/{split}/{p.name}" for p in jpgs}
        with Image.open(jpgs[0]) as im:
            assert im.format == "JPEG" and im.size == (320, 180) and im.mode == "RGB"
    assert produced == expected


def test_same_seed_is_byte_identical_in_parallel_too(small, tmp_path):
    again = tmp_path / "b"
    write_dataset(again, **COUNTS, seed=3, workers=2)
    assert files(again) == files(small)


def test_different_seeds_differ(small, tmp_path):
    other = tmp_path / "c"
    write_dataset(other, train=6, val=3, seed=4)
    a, b = files(small), files(other)
    assert a["labels/det_20/det_train.json"] != b["labels/det_20/det_train.json"]
    assert not {k for k in a if k.endswith(".jpg")} & {k for k in b if k.endswith(".jpg")}


def test_labels_load_back_exactly(small):
    names = set()
    for split, n in COUNTS.items():
        labels, images = split_paths(small, split)
        frames, report = load_labels(labels)
        assert report.ok and not report.problems and not report.warnings and not report.skipped
        assert len(frames) == n
        for i, frame in enumerate(frames):
            _, rendered = render_scene(scene_rng(3, split, i), name=frame.name)
            np.testing.assert_array_equal(frame.boxes, rendered.boxes)
            np.testing.assert_array_equal(frame.labels, rendered.labels)
            np.testing.assert_array_equal(frame.ignore, rendered.ignore)
            assert (frame.width, frame.height) == (320, 180)
            assert frame.attributes == rendered.attributes
            assert (images / frame.name).is_file()
            names.add(frame.name)
    assert len(names) == sum(COUNTS.values())  # unique across splits


def test_render_is_deterministic_and_sized():
    a_px, a = render_scene(np.random.default_rng(7), (96, 54))
    b_px, b = render_scene(np.random.default_rng(7), (96, 54))
    assert a_px.shape == (54, 96, 3) and a_px.dtype == np.uint8
    np.testing.assert_array_equal(a_px, b_px)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.name == b.name and NAME.match(a.name)


def test_class_mix_boxes_and_conditions():
    """A few hundred scenes: every class, cars first, valid boxes, day and night, some ignore regions."""
    W, H = 320, 180
    per_class, tod, ignore, counts = Counter(), Counter(), 0, []
    for i in range(400):
        px, f = render_scene(scene_rng(0, "train", i), (W, H))
        counts.append(len(f))
        tod[f.attributes["timeofday"]] += 1
        assert f.attributes["weather"] and f.attributes["scene"]
        b = f.boxes
        assert b.dtype == np.float32 and b.shape == (len(f), 4)
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 3] <= H).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert set(f.labels.tolist()) <= set(ID_TO_NAME)
        per_class.update(ID_TO_NAME[int(k)] for k in f.labels[~f.ignore])
        ignore += int(f.ignore.sum())
    assert set(per_class) == set(CATEGORIES), f"missing: {set(CATEGORIES) - set(per_class)}"
    assert per_class.most_common(1)[0][0] == "car"
    assert per_class["car"] > 0.4 * sum(per_class.values())
    assert per_class["train"] < per_class["bus"] < per_class["truck"] < per_class["pedestrian"]
    assert min(counts) >= 0 and max(counts) <= MAX_OBJECTS and max(counts) >= 20
    assert tod["daytime"] > tod["night"] > 0 and tod["dawn/dusk"] > 0
    assert 0 < ignore < 0.05 * len(counts)


def test_does_not_write_over_foreign_data(tmp_path):
    labels = tmp_path / "labels" / "det_20" / "det_train.json"
    labels.parent.mkdir(parents=True)
    labels.write_text("[]")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(tmp_path, train=2, val=0)
    assert labels.read_text() == "[]"
    write_dataset(tmp_path, train=2, val=1, overwrite=True)
    # a folder alod generated is regenerated freely, and never mixes generations
    write_dataset(tmp_path, train=3, val=0, seed=1)
    assert not (tmp_path / "labels" / "det_20" / "det_val.json").exists()
    assert not list((tmp_path / "images" / "100k" / "val").glob("*.jpg"))
    assert len(list((tmp_path / "images" / "100k" / "train").glob("*.jpg"))) == 3


def test_cli(tmp_path):
    from entrypoints.synth import synth

    result = CliRunner().invoke(synth, [str(tmp_path / "d"), "--train", "3", "--val", "2", "--seed", "5",
                                        "--size", "160x90"])
    assert result.exit_code == 0, result.output
    assert "train:" in result.output and "car" in result.output and " s " in result.output
    frames, _ = load_labels(tmp_path / "d" / "labels" / "det_20" / "det_val.json")
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (160, 90)
    for bad in ("160", "160x", "axb", "0x90", "8x8"):
        result = CliRunner().invoke(synth, [str(tmp_path / "e"), "--size", bad])
        assert result.exit_code == 2 and "--size" in result.output, (bad, result.output)


# --------------------------------------------------------------------------- domains

# sha256 over (relative path, bytes) of write_dataset(train=6, val=3, test=2, seed=3), computed with the
# generator as it was before domains existed: the target domain must keep producing exactly those files.
TARGET_BEFORE_DOMAINS = "e50d13705c30825b3f9b012c215853a4b80eef9f043bea64ccc5d881e4dde651"


def _digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".alod-synthetic":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_target_domain_is_the_generator_as_it_was(small):
    assert _digest(small) == TARGET_BEFORE_DOMAINS


def test_source_domain_lacks_what_it_says_and_target_has_it():
    from alod.data.synthetic import DOMAINS

    source = DOMAINS["source"]
    per_class, tod, weather = Counter(), Counter(), Counter()
    for i in range(300):
        _, f = render_scene(scene_rng(0, "train", i, "source"), domain="source")
        per_class.update(int(k) for k in f.labels[~f.ignore])
        tod[f.attributes["timeofday"]] += 1
        weather[f.attributes["weather"]] += 1
    assert set(per_class) == set(source.classes), {ID_TO_NAME[k] for k in set(per_class) ^ source.classes}
    assert set(tod) <= set(source.times_of_day) and tod["daytime"] > 200
    assert set(weather) <= set(source.weathers) and len(weather) == 3
    assert not {"night", "rainy", "foggy", "snowy"} & (set(tod) | set(weather))
    assert {ID_TO_NAME[k] for k in set(ID_TO_NAME) - source.classes} == {
        "rider", "train", "motorcycle", "bicycle", "traffic sign"}
    # what the source lacks is common in the target: the pool has something to teach
    target = Counter()
    for i in range(300):
        _, f = render_scene(scene_rng(0, "train", i), domain="target")
        target.update(ID_TO_NAME[int(k)] for k in f.labels[~f.ignore])
    assert target["traffic sign"] > 0.1 * sum(target.values())


def test_source_domain_is_byte_reproducible_and_apart_from_target(tmp_path):
    write_dataset(tmp_path / "s1", train=4, val=2, seed=3, domain="source")
    write_dataset(tmp_path / "s2", train=4, val=2, seed=3, domain="source", workers=2)
    assert files(tmp_path / "s1") == files(tmp_path / "s2")
    write_dataset(tmp_path / "t", train=4, val=2, seed=3)
    source_names = {p.name for p in (tmp_path / "s1").rglob("*.jpg")}
    target_names = {p.name for p in (tmp_path / "t").rglob("*.jpg")}
    assert len(source_names) == 6 and not source_names & target_names
    marker = (tmp_path / "s1" / ".alod-synthetic").read_text()
    assert json.loads(marker)["domain"] == "source"
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        write_dataset(tmp_path / "x", train=1, val=0, domain="night")


def test_cli_domain(tmp_path):
    from entrypoints.synth import synth

    result = CliRunner().invoke(synth, [str(tmp_path / "d"), "--train", "3", "--val", "0", "--domain", "source"])
    assert result.exit_code == 0, result.output
    assert "source domain" in result.output and "no rider" in result.output
    result = CliRunner().invoke(synth, [str(tmp_path / "e"), "--domain", "moon"])
    assert result.exit_code == 2 and "--domain" in result.output


def test_urban_domain_makes_every_class_learnable_and_is_reproducible(tmp_path):
    """`urban` (the benchmark's and the demo's pool) has what it says: no highway, and every class,
    the ones `target` keeps as rare as BDD100K does included, with enough boxes to learn from."""
    urban, target = Counter(), Counter()
    scenes = Counter()
    for i in range(300):
        _, f = render_scene(scene_rng(0, "train", i, "urban"), domain="urban")
        urban.update(ID_TO_NAME[int(k)] for k in f.labels[~f.ignore])
        scenes[f.attributes["scene"]] += 1
        _, f = render_scene(scene_rng(0, "train", i), domain="target")
        target.update(ID_TO_NAME[int(k)] for k in f.labels[~f.ignore])
    assert set(scenes) == {"city street", "residential"} and scenes["city street"] > scenes["residential"]
    for name in ("rider", "bicycle", "motorcycle", "bus", "truck"):
        assert urban[name] >= 40, (name, urban[name])
    for name in ("rider", "bicycle", "motorcycle"):  # the highway has more trucks and fewer two-wheelers
        assert urban[name] > 4 * target[name], (name, urban[name], target[name])
    assert urban["train"] >= 10 > target["train"]
    write_dataset(tmp_path / "u1", train=3, val=1, seed=3, domain="urban")
    write_dataset(tmp_path / "u2", train=3, val=1, seed=3, domain="urban", workers=2)
    assert files(tmp_path / "u1") == files(tmp_path / "u2")
    write_dataset(tmp_path / "s", train=3, val=1, seed=3, domain="source")
    assert not {p.name for p in (tmp_path / "u1").rglob("*.jpg")} & {p.name for p in (tmp_path / "s").rglob("*.jpg")}
