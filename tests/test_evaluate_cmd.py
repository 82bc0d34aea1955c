"""`alod evaluate` through the real CLI group: a checkpoint or a bare state dict on a split."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from alod.data.synthetic import write_dataset
from alod.models import build_detector, save_checkpoint
from entrypoints.cli import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root / "data", train=0, val=3, seed=0)
    torch.manual_seed(0)
    model = build_detector("tiny")
    save_checkpoint(root / "ckpt.pt", model=model, epoch=0, config={})
    torch.save(model.state_dict(), root / "state.pth")
    return root


@pytest.mark.parametrize("weights", ["ckpt.pt", "state.pth"])
def test_evaluate_prints_the_table(data, weights):
    result = CliRunner().invoke(cli, ["evaluate", "--weights", str(data / weights), "--data", str(data / "data")])
    assert result.exit_code == 0, result.output
    assert "mAP50 " in result.output and "mAP50-95" in result.output and "3 images" in result.output


def test_evaluate_needs_one_model_source(data):
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data / "data")])
    assert result.exit_code != 0 and "exactly one of --predictions, --weights or --model-uri" in result.output


@pytest.fixture(scope="module")
def registered(data, sqlite_tracking):
    """The module's checkpoint registered as alod-detector@champion in a throwaway store."""
    from alod import tracking

    with sqlite_tracking(data):
        tracking.setup("alod-evaluate-test")
        with tracking.run("cycle"):
            version = tracking.log_detector(data / "ckpt.pt", registered_name=tracking.DETECTOR_MODEL)
        tracking.set_alias(tracking.DETECTOR_MODEL, tracking.CHAMPION, version.version)
        yield "models:/alod-detector@champion"


def test_predict_writes_what_evaluate_scores_as_alod_does(data, registered):
    """`alod predict` at its default threshold, then `alod evaluate --predictions`, gives the
    numbers `alod evaluate --model-uri` computes itself (at 0.3 it would not)."""
    import json

    images = sorted((data / "data" / "images" / "100k" / "val").glob("*.jpg"))
    labels = data / "data" / "labels" / "det_20" / "det_val.json"
    out = data / "preds.json"
    result = CliRunner().invoke(cli, ["predict", "--model-uri", registered, *map(str, images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scored = CliRunner().invoke(cli, ["evaluate", "--predictions", str(out), "--labels", str(labels), "--json"])
    assert scored.exit_code == 0, scored.output
    direct = CliRunner().invoke(cli, ["evaluate", "--model-uri", registered, "--data", str(data / "data"), "--json"])
    assert direct.exit_code == 0, direct.output
    a, b = json.loads(scored.stdout), json.loads(direct.stdout)  # progress bars go to stderr
    assert set(a) == {"mAP50", "mAP50_95", "AP50", "num_images", "num_predictions"}
    assert a["num_predictions"] == b["num_predictions"] > 0 and a["num_images"] == b["num_images"] == 3
    for key in ("mAP50", "mAP50_95"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)
    assert a["AP50"].keys() == b["AP50"].keys()
    # a table without --json, from the --data root's labels
    table = CliRunner().invoke(cli, ["evaluate", "--predictions", str(out), "--data", str(data / "data")])
    assert table.exit_code == 0 and "mAP50-95" in table.output and "3 images" in table.output


def test_evaluate_predictions_errors(data, tmp_path):
    import json

    labels = data / "data" / "labels" / "det_20" / "det_val.json"
    frames = json.loads(labels.read_text())
    no_scores = tmp_path / "no_scores.json"
    no_scores.write_text(json.dumps([f for f in frames if f.get("labels")][:1]))
    result = CliRunner().invoke(cli, ["evaluate", "--predictions", str(no_scores), "--labels", str(labels)])
    assert result.exit_code != 0 and "has no scores" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "--predictions", str(no_scores)])
    assert result.exit_code != 0 and "needs the ground truth" in result.output
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps([{"name": "not-in-gt.jpg", "labels": [
        {"category": "car", "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}, "score": 0.5}]}]))
    result = CliRunner().invoke(cli, ["evaluate", "--predictions", str(stranger), "--labels", str(labels)])
    assert result.exit_code != 0 and "unknown image 'not-in-gt.jpg'" in result.output
