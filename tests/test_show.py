"""`alod show`: one PNG per image, ground truth or predictions, clean errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from alod import plots
from alod.data.synthetic import write_dataset
from alod.models import build_detector, save_checkpoint
from entrypoints.show import show

W, H = 320, 180  # the synthetic scenes' default size


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("show")
    write_dataset(root, train=4, val=0, seed=0)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model=build_detector("tiny"), epoch=0,
                           config={})


def _run(*args):
    result = CliRunner().invoke(show, [str(a) for a in args])
    return result


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _labels(data):
    return data / "labels/det_20/det_train.json", data / "images/100k/train"


def test_ground_truth_one_png_per_image(data, tmp_path):
    labels, images = _labels(data)
    result = _run("--labels", labels, "--images", images, "--out", tmp_path / "gt")
    assert result.exit_code == 0, result.output
    pngs = _pngs(tmp_path / "gt")
    assert len(pngs) == 4
    legend = plots.legend_strip(W).shape[0]
    for p in pngs:
        with Image.open(p) as im:
            assert im.size == (W, H + legend) and im.mode == "RGB"
        assert str(p) in result.output
    assert "wrote 4 PNG(s) of ground truth" in result.output


def test_limit_and_data_root(data, tmp_path):
    result = _run("--data", data, "--split", "train", "--limit", 2, "--out", tmp_path / "two")
    assert result.exit_code == 0, result.output
    assert len(_pngs(tmp_path / "two")) == 2


def test_predictions_from_weights_one_png_per_image(data, weights, tmp_path):
    images = sorted((data / "images/100k/train").glob("*.jpg"))[:3]
    result = _run("--weights", weights, *images, "--out", tmp_path / "pred", "--score-threshold", 0.0)
    assert result.exit_code == 0, result.output
    pngs = _pngs(tmp_path / "pred")
    assert [p.stem for p in pngs] == sorted(i.stem for i in images)
    with Image.open(pngs[0]) as im:
        assert im.size == (W, H + plots.legend_strip(W).shape[0])
    assert "predictions" in result.output


def test_ground_truth_beside_predictions(data, weights, tmp_path):
    labels, images = _labels(data)
    result = _run("--labels", labels, "--images", images, "--weights", weights, "--limit", 1,
                  "--out", tmp_path / "both")
    assert result.exit_code == 0, result.output
    (png,) = _pngs(tmp_path / "both")
    with Image.open(png) as im:
        assert im.size[0] == 2 * W + 3 * plots.GAP


def test_model_uri_goes_through_the_registry(data, weights, tmp_path, monkeypatch):
    from alod import tracking
    from alod.models import detector_from_checkpoint

    class Version:
        name, version = "alod-detector", "3"

    seen = []
    monkeypatch.setattr(tracking, "setup_client", lambda: None)
    monkeypatch.setattr(tracking, "load_registered_detector",
                        lambda uri: (seen.append(uri), (detector_from_checkpoint(weights), Version()))[1])
    image = sorted((data / "images/100k/train").glob("*.jpg"))[0]
    result = _run("--model-uri", "models:/alod-detector@champion", image, "--out", tmp_path / "uri")
    assert result.exit_code == 0, result.output
    assert seen == ["models:/alod-detector@champion"] and "alod-detector v3" in result.output
    assert len(_pngs(tmp_path / "uri")) == 1


@pytest.mark.parametrize("case", ["nothing", "images_without_model", "both_models", "images_and_labels",
                                  "labels_without_images", "bad_json", "not_an_image", "missing_image",
                                  "unknown_model"])
def test_bad_input_is_a_clear_error_not_a_traceback(case, data, weights, tmp_path, monkeypatch):
    labels, images = _labels(data)
    image = sorted(images.glob("*.jpg"))[0]
    out = tmp_path / "out"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    if case == "unknown_model":
        from alod import tracking

        def missing(uri):
            raise tracking.TrackingError(f"registered model {uri!r} not found")
        monkeypatch.setattr(tracking, "setup_client", lambda: None)
        monkeypatch.setattr(tracking, "load_registered_detector", missing)
    args, message = {
        "nothing": ([], "nothing to draw"),
        "images_without_model": ([image], "needs --model-uri or --weights"),
        "both_models": (["--model-uri", "models:/x@y", "--weights", weights, image], "not both"),
        "images_and_labels": (["--weights", weights, image, "--labels", labels, "--images", images], "not both"),
        "labels_without_images": (["--labels", labels], "--labels needs --images"),
        "bad_json": (["--labels", bad, "--images", images], "bad.json"),
        "not_an_image": (["--weights", weights, text], "notes.jpg"),
        "missing_image": (["--weights", weights, tmp_path / "nope.jpg"], "does not exist"),
        "unknown_model": (["--model-uri", "models:/nope@champion", image], "not found"),
    }[case]
    result = _run(*args, "--out", out)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
