"""pretrain under torchrun: the command is the launcher, as for rank and cycle (one run, rank 0 logs)."""

from __future__ import annotations

import mlflow
import torch

from alod import tracking
from alod.models import detector_from_checkpoint
from alod.params import PretrainParams
from alod.steps.pretrain import run_pretrain


def _params(root, tmp_path, **kw) -> PretrainParams:
    kw = {"weights": "none", **kw}
    return PretrainParams(data=str(root), arch="tiny", fraction=1.0, batch_size=2, workers=0, eval_batch_size=4,
                          experiment="alod-pretrain-launch", work_dir=str(tmp_path / "work"), **kw)


def test_two_processes_train_one_run_and_register_its_model(tmp_path, tiny_data, sqlite_tracking):
    root, train, _ = tiny_data
    with sqlite_tracking(tmp_path):
        run_id, version = run_pretrain(_params(root, tmp_path, epochs=2, nproc=2, roi_samples=8))
        run = tracking.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["nproc"] == "2" and run.data.params["train_images"] == str(len(train.frames))
        # every epoch logged once, by rank 0 only
        assert sorted(tracking.metric_steps(run_id, "loss")) == [1, 2]
        assert sorted(tracking.metric_steps(run_id, "mAP50")) == [1, 2]
        assert version.run_id == run_id
        champion = tracking.resolve_model_version(f"models:/{tracking.PRETRAINED_MODEL}@{tracking.CHAMPION}")
        assert champion.version == version.version
        registered, _ = tracking.download_registered_checkpoint(
            f"models:/{tracking.PRETRAINED_MODEL}/{version.version}", tmp_path / "dl")
        model = detector_from_checkpoint(registered)
        # --roi-samples reaches the workers torchrun starts, and the registered model remembers it
        assert run.data.params["roi_samples"] == "8"
        assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 8
        assert model.alod_config["overrides"] == {"box_batch_size_per_image": 8}


def test_two_processes_register_the_starting_weights_as_they_are(tmp_path, tiny_data, sqlite_tracking):
    from alod.starting_weights import SHIPPED

    root, _, _ = tiny_data
    with sqlite_tracking(tmp_path):
        run_id, version = run_pretrain(_params(root, tmp_path, epochs=0, nproc=2, weights=str(SHIPPED["tiny"])))
        assert sorted(tracking.metric_steps(run_id, "mAP50")) == [0]
        registered, _ = tracking.download_registered_checkpoint(
            f"models:/{tracking.PRETRAINED_MODEL}/{version.version}", tmp_path / "dl")
        a = detector_from_checkpoint(registered).state_dict()
        b = detector_from_checkpoint(SHIPPED["tiny"]).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_worker_killed_mid_epoch_restarts_and_the_run_resumes_from_its_checkpoint(
        tmp_path, tiny_data, sqlite_tracking, monkeypatch):
    """--max-restarts 1, a worker killed in epoch 2: torchrun restarts both, they continue from epoch 1's
    checkpoint in the same run, every epoch is logged once, and the model is registered once."""
    root, _, _ = tiny_data
    marker = tmp_path / "fired"
    monkeypatch.setenv("ALOD_FAULT", "train_step:1.1")
    monkeypatch.setenv("ALOD_FAULT_ONCE", str(marker))
    with sqlite_tracking(tmp_path):
        run_id, version = run_pretrain(_params(root, tmp_path, epochs=3, nproc=2, max_restarts=1))
        assert marker.exists()  # the fault fired
        run = tracking.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("loss", "mAP50"):  # a restart from scratch would log epoch 1 twice
            history = mlflow.MlflowClient().get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == [1, 2, 3]
        assert version.run_id == run_id and str(version.version) == "1"  # registered once
