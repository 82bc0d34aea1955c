"""`alod data check` and `alod data to-coco` through the real CLI group."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from entrypoints.cli import cli

UNITEST = "bdd100k__unitest_val_bdd__cleaned_ca5618b.json"
IGNORE = "bdd100k__example_ignore_annotation__boxtrack_otherperson.json"


@pytest.fixture
def runner():
    return CliRunner()


def test_check_good_file(runner, bdd_fixtures):
    result = runner.invoke(cli, ["data", "check", str(bdd_fixtures / UNITEST)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "frames: 1" in out and "boxes: 34" in out
    assert "car" in out and "19" in out
    assert "OK" in out


def test_check_reports_ignored_and_skips(runner, bdd_fixtures, tmp_path):
    result = runner.invoke(cli, ["data", "check", str(bdd_fixtures / IGNORE)])
    assert result.exit_code == 0, result.output
    assert "ignore regions: 1" in result.output and "other person" in result.output

    labels = [{"category": "lane", "poly2d": []}, {"category": "car", "box2d": {"x1": 1300, "y1": 0, "x2": 1400, "y2": 9}}]
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"name": "a.jpg", "labels": labels}]))
    result = runner.invoke(cli, ["data", "check", str(path), "--image-size", "1280x720"])
    assert result.exit_code == 0, result.output
    assert "no box2d: 1" in result.output and "outside the image: 1" in result.output
    assert "warnings: 1" in result.output


def test_check_bad_file_lists_problems(runner, tmp_path):
    bad = [
        {"name": "a.jpg", "labels": [{"category": "car", "box2d": {"x1": 1, "y1": 2, "x2": "x", "y2": 4}}]},
        {"name": "a.jpg"},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = runner.invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "frame 'a.jpg', label 0, field 'box2d.x2'" in result.output
    assert "duplicate frame name" in result.output
    assert "2 problem(s)" in result.output


def test_check_truncated_and_missing(runner, tmp_path):
    path = tmp_path / "t.json"
    path.write_text("[{")
    result = runner.invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 1 and "invalid JSON at line 1" in result.output
    result = runner.invoke(cli, ["data", "check", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_check_missing_images(runner, bdd_fixtures, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    result = runner.invoke(cli, ["data", "check", str(bdd_fixtures / IGNORE), "--images", str(images)])
    assert result.exit_code == 1
    assert "missing images: 2" in result.output
    assert "field 'name': image file not found" in result.output


def test_bad_image_size_is_a_usage_error(runner, bdd_fixtures):
    result = runner.invoke(cli, ["data", "check", str(bdd_fixtures / UNITEST), "--image-size", "big"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output


def test_to_coco(runner, bdd_fixtures, tmp_path):
    out = tmp_path / "coco.json"
    result = runner.invoke(cli, ["data", "to-coco", str(bdd_fixtures / IGNORE), str(out)])
    assert result.exit_code == 0, result.output
    assert "2 images, 2 annotations (1 ignore regions" in result.output
    coco = json.loads(out.read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert coco["images"][0]["width"] == 1280

    result = runner.invoke(cli, ["data", "to-coco", str(bdd_fixtures / UNITEST), str(out), "--image-size", "640x360"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["images"][0]["width"] == 640


def test_to_coco_bad_input_writes_nothing(runner, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"name": "/abs.jpg"}]))
    out = tmp_path / "coco.json"
    result = runner.invoke(cli, ["data", "to-coco", str(path), str(out)])
    assert result.exit_code == 1 and "absolute path" in result.output
    assert not out.exists()
