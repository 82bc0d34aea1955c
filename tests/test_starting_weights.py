"""The shipped starting weights of the tiny detector: they load safely, detect, and bad weight files fail early."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alod.data.synthetic import write_dataset
from alod.engine.evaluate import evaluate
from alod.engine.infer import predict_all
from alod.models import CheckpointError, build_detector, detector_from_checkpoint, save_checkpoint
from alod.starting_weights import (
    SHIPPED,
    BuildSettings,
    build_starting_weights,
    model_weights,
    provenance,
    resolve_weights,
    weights_choice,
)
from alod.data.splits import load_split

SHIPPED_TINY = SHIPPED["tiny"]
# The floor the shipped file must clear on a small target set it never saw (seed 7); the file's
# own record says what it reaches on larger val splits (README: Starting weights).
TARGET_MAP50_FLOOR = 0.10


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("target")
    write_dataset(root, train=8, val=60, seed=7)
    return root


def test_shipped_file_loads_with_weights_only_and_carries_its_provenance():
    assert SHIPPED_TINY.is_file(), "rebuild with `alod build-weights` (README: Starting weights)"
    assert SHIPPED_TINY.stat().st_size < 10e6
    raw = torch.load(SHIPPED_TINY, weights_only=True)  # data only: this would raise on pickled code
    assert raw["optimizer"] is None and raw["config"]["arch"] == "tiny"
    info = provenance(SHIPPED_TINY)
    assert info["command"].startswith("alod build-weights")
    for key in ("settings", "train_seconds", "source_val_mAP50", "target_val_mAP50", "source_domain"):
        assert key in info, key
    assert info["source_val_mAP50"] > info["target_val_mAP50"] > 0  # the target holds what the source lacks
    side = json.loads(SHIPPED_TINY.with_suffix(".json").read_text())
    assert side["settings"] == info["settings"] and side["target_val_mAP50"] == info["target_val_mAP50"]


def test_shipped_weights_detect_on_target_scenes(target):
    model = detector_from_checkpoint(SHIPPED_TINY).eval()
    val = load_split(target, "val")
    result = evaluate(val.frames, predict_all(model, val.frames, val.images, device=torch.device("cpu"),
                                              batch_size=8, workers=0))
    assert result.mAP50 >= TARGET_MAP50_FLOOR, result.as_table()
    # classes the source never showed are not detected: what labels must teach
    assert result.ap50_per_class["traffic sign"] < 0.05
    assert result.ap50_per_class["car"] > 0.3


def test_tiny_starts_from_the_shipped_weights_by_default():
    assert resolve_weights("tiny", None) == str(SHIPPED_TINY)
    assert resolve_weights("tiny", "") == str(SHIPPED_TINY)
    assert weights_choice("tiny", None) == str(SHIPPED_TINY)
    assert weights_choice("tiny", "none") == "none" and model_weights("none") is None
    assert resolve_weights("tiny", "scratch") is None
    assert weights_choice("fasterrcnn_mobilenet_v3_large_320_fpn", None) == "none"  # ships nothing: random init
    a = build_detector("tiny", weights=model_weights(weights_choice("tiny", None)))
    b = detector_from_checkpoint(SHIPPED_TINY)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def _crafted(path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(path, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    return path


@pytest.mark.parametrize("case", ["missing", "folder", "truncated", "crafted", "other_arch", "other_classes",
                                  "junk"])
def test_bad_weights_fail_clearly_before_training(tmp_path, case):
    from alod.steps.cycle import CycleInputError, CycleParams, run_cycles
    from alod.steps.pretrain import PretrainParams, run_pretrain

    path = tmp_path / "w.pt"
    if case == "missing":
        expected = "file not found"
    elif case == "folder":
        path = tmp_path
        expected = "is a folder"
    elif case == "truncated":
        path.write_bytes(SHIPPED_TINY.read_bytes()[: SHIPPED_TINY.stat().st_size // 2])
        expected = "truncated or not a torch file"
    elif case == "crafted":
        _crafted(path)
        expected = "refusing to load"
    elif case == "other_arch":
        save_checkpoint(path, model=build_detector("fasterrcnn_mobilenet_v3_large_320_fpn"), epoch=0, config={})
        expected = "not of 'tiny'"
    elif case == "other_classes":
        save_checkpoint(path, model=build_detector("tiny", num_classes=5), epoch=0, config={})
        expected = "for 5 classes"
    else:
        torch.save({"weights": [1, 2, 3]}, path)
        expected = "neither a state dict"
    with pytest.raises((CheckpointError, FileNotFoundError), match=expected):
        resolve_weights("tiny", path)
    # the steps refuse before opening a run or touching data (data=None would fail later, differently)
    with pytest.raises(CycleInputError, match=expected):
        run_cycles(CycleParams(arch="tiny", weights=str(path), protocol="pool"))
    with pytest.raises((CheckpointError, FileNotFoundError), match=expected):
        run_pretrain(PretrainParams(arch="tiny", weights=str(path)))


def test_build_is_reproducible_and_records_what_it_reached(tmp_path):
    """The recipe behind the shipped file, at toy size: two builds give the same bytes of weights."""
    settings = BuildSettings(images=6, val=4, epochs=1, threads=1)
    a = build_starting_weights(tmp_path / "a.pt", settings, progress=False)
    b = build_starting_weights(tmp_path / "b.pt", settings, progress=False)
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["settings"] == b["settings"] and a["target_val_mAP50"] == b["target_val_mAP50"]
    assert a["command"] == "alod build-weights --images 6 --val 4 --epochs 1 --threads 1"
    assert a["train_image_iterations"] == 6
    json.loads((tmp_path / "a.json").read_text())
    detector_from_checkpoint(tmp_path / "a.pt")  # loads as any alod checkpoint


def test_models_weights_command_shows_the_shipped_file():
    from entrypoints.models_cmd import models

    result = CliRunner().invoke(models, ["weights"])
    assert result.exit_code == 0, result.output
    assert str(SHIPPED_TINY) in result.output and "rebuild: alod build-weights" in result.output
    assert "target" in result.output and "--weights none" in result.output
    result = CliRunner().invoke(models, ["archs"])
    assert "tiny  (starting weights:" in result.output


def test_pretrain_with_zero_epochs_registers_the_starting_weights(target, tmp_path, monkeypatch):
    """`pretrain --epochs 0`: the starting weights as they are become alod-pretrained (they rank the pool)."""
    import mlflow

    from alod import tracking
    from alod.steps.pretrain import PretrainParams, run_pretrain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    run_id, version = run_pretrain(PretrainParams(data=str(target), arch="tiny", epochs=0, workers=0,
                                                  experiment="alod-zero", work_dir=str(tmp_path / "work")))
    run = tracking.get_run(run_id)
    assert run.data.params["weights"] == str(SHIPPED_TINY) and run.data.params["epochs"] == "0"
    assert run.data.tags["alod.weights"] == str(SHIPPED_TINY)
    assert sorted(tracking.metric_steps(run_id, "mAP50")) == [0]
    registered = tracking.download_registered_checkpoint(f"models:/alod-pretrained/{version.version}",
                                                         tmp_path / "dl")[0]
    a, b = detector_from_checkpoint(registered).state_dict(), detector_from_checkpoint(SHIPPED_TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run_pretrain(PretrainParams(data=str(target), arch="tiny", epochs=0, weights="none"))
