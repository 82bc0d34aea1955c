"""The MLflow experiment package end to end: `mlflow run` on every entry point,
checked through MlflowClient (runs, tags, metric steps, nested runs, artifacts,
registered versions and aliases) and a pyfunc prediction."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from alod.starting_weights import SHIPPED

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-test"
TRAIN, VAL = 48, 16


@pytest.fixture(scope="module")
def store(tmp_path_factory, sqlite_tracking):
    """A synthetic dataset and an empty SQLite tracking store for this module."""
    from alod.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("pipeline")
    write_dataset(root / "data", train=TRAIN, val=VAL, seed=0)
    with sqlite_tracking(root):
        yield root


def mlflow_run(store: Path, entry: str, env_extra: dict | None = None, check: bool = True, **params):
    params.setdefault("data", str(store / "data"))
    params.setdefault("work_dir", str(store / "work"))
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
           "--experiment-name", EXPERIMENT]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    # `mlflow run --env-manager local` runs `python ...` from PATH: make it this interpreter.
    # In-process steps of earlier tests leave MLflow's own variables behind (set_experiment
    # exports MLFLOW_EXPERIMENT_ID); a real user's shell has none of them.
    inherited = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    env = {**inherited, **(env_extra or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=store, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlflow run -e {entry} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    match = re.findall(r"Run \(ID '([0-9a-f]+)'\)", proc.stdout + proc.stderr)
    return (match[-1] if match else None), proc


TINY = dict(arch="tiny", batch_size=4, workers=0, lr=0.04)


@pytest.fixture(scope="module")
def pipeline(store):
    # a made-up 1 TFLOP/s peak: on CPU there is no known peak, and MFU is logged only with one
    pre_id, _ = mlflow_run(store, "pretrain", env_extra={"ALOD_PEAK_TFLOPS": "1"}, fraction=0.5, epochs=2, **TINY)
    rank_id, _ = mlflow_run(store, "rank", sampler="boxcount", batches=3, batch_images=16, workers=0)
    cycle_id, _ = mlflow_run(store, "cycle", ranking=rank_id, cycles=2, per_cycle=8, epochs=2, **TINY)
    return {"pretrain": pre_id, "rank": rank_id, "cycle": cycle_id}


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_pretrain_run_and_registry(pipeline):
    run = client().get_run(pipeline["pretrain"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["alod.step"] == "pretrain"
    assert run.data.params["arch"] == "tiny" and run.data.params["fraction"] == "0.5"
    assert run.data.tags["alod.weights"] == str(SHIPPED["tiny"])  # tiny starts from the shipped weights
    assert sorted(m.step for m in client().get_metric_history(run.info.run_id, "loss")) == [1, 2]
    assert sorted(m.step for m in client().get_metric_history(run.info.run_id, "mAP50")) == [1, 2]
    achieved = tracking_metric(run.info.run_id, "model_tflops_per_second")
    assert sorted(achieved) == [1, 2] and all(v > 0 for v in achieved.values())
    assert tracking_metric(run.info.run_id, "mfu") == pytest.approx(achieved)  # over a 1 TFLOP/s peak
    assert [a.path for a in client().list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/pretrained.pt"]
    champion = client().get_model_version_by_alias("alod-pretrained", "champion")
    assert champion.run_id == run.info.run_id


def test_rank_loads_from_registry_and_writes_ranking(pipeline, store):
    run = client().get_run(pipeline["rank"])
    tags = run.data.tags
    assert tags["alod.step"] == "rank" and tags["alod.sampler"] == "boxcount"
    champion = client().get_model_version_by_alias("alod-pretrained", "champion")
    assert tags["alod.model_version"] == str(champion.version)
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="ranking/ranking.parquet",
                                               dst_path=str(store / "dl"))
    ranking = pd.read_parquet(path)
    assert list(ranking.columns) == ["image", "score", "rank", "batch"]
    assert len(ranking) == TRAIN and ranking["image"].is_unique
    assert ranking["batch"].value_counts().to_dict() == {1: 16, 2: 16, 3: 16}
    assert ranking["score"].is_monotonic_decreasing
    assert "plots/score_histogram.png" in [a.path for a in client().list_artifacts(run.info.run_id, "plots")]
    assert run.data.metrics["ranking_model_tflops_per_second"] > 0 and "ranking_mfu" not in run.data.metrics


def test_cycle_metrics_children_state_and_registry(pipeline, store):
    run_id = pipeline["cycle"]
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["alod.step"] == "cycle"
    assert run.data.tags["alod.protocol"] == "batches" and run.data.tags["alod.sampler"] == "boxcount"
    for key in ("mAP50", "mAP50_95", "loss", "loss_classifier", "loss_box_reg", "loss_objectness",
                "loss_rpn_box_reg", "labeled_images", "labeled_boxes", "train_seconds", "images_per_second",
                "val_AP50.car"):
        assert sorted(m.step for m in client().get_metric_history(run_id, key)) == [1, 2], key
    # per-class AP50 sorts after mAP50 in MLflow's chart view (capitals first: `AP50.car` came before it)
    assert not [k for k in run.data.metrics if k.startswith("AP50")]
    # every image key starts at step 0, where MLflow's image charts open
    images = [a.path.split("/")[-1] for a in client().list_artifacts(run_id, "images")]
    for key in ("val_gt_vs_pred", "picked"):
        steps = {int(n.split("+step+")[1].split("+")[0]) for n in images if n.startswith(key + "+step+")}
        assert sorted(steps) == [0, 1, 2], key
    labeled = {m.step: m.value for m in client().get_metric_history(run_id, "labeled_images")}
    assert labeled == {1: 8, 2: 16}
    # what the loop cost: 2 epochs over the labeled images; the batches protocol scores nothing per cycle
    assert tracking_metric(run_id, "train_image_iterations") == {1: 16, 2: 32}
    assert tracking_metric(run_id, "images_scored") == {1: 0, 2: 0}
    assert run.data.tags["alod.weights"] == str(SHIPPED["tiny"])  # every cycle resets to the shipped weights

    children = client().search_runs([run.info.experiment_id],
                                    filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(c.data.tags["alod.cycle"] for c in children) == ["1", "2"]
    for child in children:
        assert sorted(m.step for m in client().get_metric_history(child.info.run_id, "loss")) == [1, 2]
        assert sorted(tracking_metric(child.info.run_id, "model_tflops_per_second")) == [1, 2]
        assert "mfu" not in child.data.metrics  # CPU: no known peak, no made-up utilisation

    import mlflow

    state = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="state/labeled.json", dst_path=str(store / "dl2"))).read_text())
    ranking = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=pipeline["rank"], artifact_path="ranking/ranking.parquet", dst_path=str(store / "dl3")))
    cycle1 = [n for n, c in state.items() if c == 1]
    cycle2 = [n for n, c in state.items() if c == 2]
    assert len(cycle1) == 8 and set(cycle1) <= set(ranking[ranking["batch"] == 1]["image"])
    assert cycle2 == ranking[ranking["batch"] == 2]["image"].head(8).tolist()
    for child in children:
        cycle = int(child.data.tags["alod.cycle"])
        assert [a.path for a in client().list_artifacts(child.info.run_id, "checkpoints")] == [
            f"checkpoints/cycle_{cycle:03d}.pt"]

    versions = client().search_model_versions(f"name='alod-detector' and run_id='{run_id}'")
    assert len(versions) == 1
    tags = versions[0].tags
    assert tags["sampler"] == "boxcount" and tags["protocol"] == "batches" and tags["cycle"] == "2"
    mAP = {m.step: m.value for m in client().get_metric_history(run_id, "mAP50")}
    assert float(tags["mAP50"]) == pytest.approx(mAP[2], abs=1e-6)
    assert str(client().get_model_version_by_alias("alod-detector", "champion").version) == str(versions[0].version)


def test_registered_model_loads_as_torch_and_pyfunc(pipeline, store):
    import mlflow
    import torch

    from alod.tracking import load_registered_detector

    model, version = load_registered_detector("models:/alod-detector@champion")
    assert isinstance(model, torch.nn.Module) and version.run_id == pipeline["cycle"]
    image = next((store / "data" / "images" / "100k" / "val").glob("*.jpg"))
    pyfunc = mlflow.pyfunc.load_model("models:/alod-detector@champion")
    out = pyfunc.predict(pd.DataFrame({"image": [base64.b64encode(image.read_bytes()).decode()]}))
    assert list(out.columns) == ["name", "boxes", "labels", "scores"] and len(out) == 1
    row = out.iloc[0]
    assert len(row["boxes"]) == len(row["labels"]) == len(row["scores"])
    model.eval()
    from torchvision.io import decode_image

    with torch.inference_mode():
        direct = model([decode_image(str(image)).float() / 255])[0]
    assert len(direct["boxes"]) == len(row["boxes"])
    # the model carries the alod code its pyfunc imports: serving needs no alod install
    local = Path(mlflow.artifacts.download_artifacts("models:/alod-detector@champion", dst_path=str(store / "m")))
    assert (local / "code" / "alod" / "models.py").is_file()


def test_predict_and_models_list_commands(pipeline, store):
    from entrypoints.cli import cli

    images = sorted((store / "data" / "images" / "100k" / "val").glob("*.jpg"))[:3]
    out = store / "preds.json"
    result = CliRunner().invoke(cli, ["predict", "--model-uri", "models:/alod-detector@champion",
                                      *map(str, images), "--out", str(out), "--score-threshold", "0"])
    assert result.exit_code == 0, result.output
    preds = json.loads(out.read_text())
    assert [p["name"] for p in preds] == [i.name for i in images]
    assert all("score" in label and "box2d" in label for p in preds for label in p["labels"])
    listing = CliRunner().invoke(cli, ["models", "list"])
    assert listing.exit_code == 0 and "alod-detector" in listing.output and "champion" in listing.output


@pytest.mark.parametrize("args,message", [
    (["rank", "--model-uri", "models:/no-such-model@champion"], "not found"),
    (["rank", "--model-uri", "models:/alod-pretrained@nope"], "no such alias"),
    (["cycle", "--cycles", "20", "--per-cycle", "8"], "exceeds the pool"),
    (["cycle", "--cycles", "1", "--per-cycle", "30"], "exceeds the smallest ranking batch"),
    (["cycle", "--cycles", "1", "--per-cycle", "4", "--weights", "no-such-weights.pt"], "not found"),
])
def test_bad_inputs_fail_before_training(pipeline, store, args, message):
    from entrypoints.cli import cli

    if args[0] == "cycle":
        args = args + ["--ranking", pipeline["rank"], "--arch", "tiny"]
    result = CliRunner().invoke(cli, [*args, "--data", str(store / "data"), "--experiment-name", EXPERIMENT,
                                      "--work-dir", str(store / "work")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_ranking_from_another_dataset_is_refused(pipeline, store, tmp_path):
    from alod.data.synthetic import write_dataset
    from entrypoints.cli import cli

    write_dataset(tmp_path / "other", train=TRAIN, val=4, seed=99)
    result = CliRunner().invoke(cli, ["cycle", "--data", str(tmp_path / "other"), "--ranking", pipeline["rank"],
                                      "--cycles", "1", "--per-cycle", "4", "--arch", "tiny",
                                      "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
    assert result.exit_code != 0 and "dataset" in result.output


def _labeled_state(run_id, dst):
    import mlflow

    return json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="state/labeled.json", dst_path=str(dst))).read_text())


@pytest.mark.parametrize("fault", ["select:2", "after_select:2", "train_step:0.1", "epoch_saved:0", "evaluate:2",
                                   "after_train:1", "after_metrics:1"])
def test_killed_cycle_resumes_without_duplicates(pipeline, store, tmp_path, fault):
    """kill -9 (os._exit) at each point of a cycle; resume gives the same labeled set,
    every metric step exactly once, and the child run of the cycle reopened, not doubled."""
    params = dict(ranking=pipeline["rank"], cycles=2, per_cycle=8, epochs=1, register="false", **TINY)
    killed_id, proc = mlflow_run(store, "cycle", env_extra={"ALOD_FAULT": fault}, check=False, **params)
    assert proc.returncode != 0 and "ALOD_FAULT: killing" in proc.stdout + proc.stderr
    # only the run id: the MLproject defaults `mlflow run` passes (data included) give way
    # to the logged values
    mlflow_run(store, "cycle", resume_run_id=killed_id, data="data/bdd100k")
    for key in ("mAP50", "labeled_images", "loss"):
        steps = [m.step for m in client().get_metric_history(killed_id, key)]
        assert sorted(steps) == [1, 2], (key, steps)
    children = client().search_runs([client().get_run(killed_id).info.experiment_id],
                                    filter_string=f"tags.mlflow.parentRunId = '{killed_id}'")
    assert sorted(c.data.tags["alod.cycle"] for c in children) == ["1", "2"]
    for child in children:
        assert [m.step for m in client().get_metric_history(child.info.run_id, "loss")] == [1]
    uninterrupted = _labeled_state(pipeline["cycle"], tmp_path / "a")
    assert _labeled_state(killed_id, tmp_path / "b") == uninterrupted


def test_resume_refuses_settings_that_contradict_the_run(pipeline, store):
    from entrypoints.cli import cli

    result = CliRunner().invoke(cli, ["cycle", "--resume-run-id", pipeline["cycle"], "--epochs", "7",
                                      "--per-cycle", "3", "--work-dir", str(store / "work")])
    assert result.exit_code == 1, result.output
    assert "epochs=7 (the run has 2)" in result.output and "per_cycle=3 (the run has 8)" in result.output
    assert "Traceback" not in result.output


def test_killed_pretrain_resumes_from_its_last_epoch(store):
    from entrypoints.cli import cli

    killed_id, proc = mlflow_run(store, "pretrain", env_extra={"ALOD_FAULT": "train_step:1.0"}, check=False,
                                 fraction=0.5, epochs=2, register="false", **TINY)
    assert proc.returncode != 0 and "ALOD_FAULT: killing" in proc.stdout + proc.stderr
    assert sorted(tracking_metric(killed_id, "loss")) == [1]
    result = CliRunner().invoke(cli, ["pretrain", "--resume-run-id", killed_id, "--work-dir", str(store / "work")])
    assert result.exit_code == 0, result.output
    run = client().get_run(killed_id)
    assert run.info.status == "FINISHED"
    assert sorted(tracking_metric(killed_id, "loss")) == [1, 2]  # epoch 1 not trained twice
    assert sorted(tracking_metric(killed_id, "mAP50")) == [1, 2]
    assert [a.path for a in client().list_artifacts(killed_id, "checkpoints")] == ["checkpoints/pretrained.pt"]


def test_torchrun_two_processes_one_run_same_labels(pipeline, store, tmp_path):
    from entrypoints.cli import cli

    exp_id = client().get_experiment_by_name(EXPERIMENT).experiment_id
    before = {r.info.run_id for r in client().search_runs([exp_id])}
    args = ["cycle", "--data", str(store / "data"), "--ranking", pipeline["rank"], "--cycles", "2",
            "--per-cycle", "8", "--epochs", "3", "--arch", "tiny", "--batch-size", "2", "--workers", "0",
            "--lr", "0.04", "--nproc", "2", "--register", "false", "--experiment-name", EXPERIMENT,
            "--work-dir", str(store / "work")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    new = [r for r in client().search_runs([exp_id]) if r.info.run_id not in before]
    parents = [r for r in new if r.data.tags.get("alod.step") == "cycle"]
    assert len(parents) == 1, [r.data.tags for r in new]
    children = [r for r in new if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2 and len(new) == 3
    assert _labeled_state(parents[0].info.run_id, tmp_path / "a") == _labeled_state(pipeline["cycle"], tmp_path / "b")
    child2 = next(c for c in children if c.data.tags["alod.cycle"] == "2")
    losses = [m.value for m in sorted(client().get_metric_history(child2.info.run_id, "loss"), key=lambda m: m.step)]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_pool_protocol_rescores_with_current_model(pipeline, store, tmp_path):
    """protocol=pool: cycle 1 random, cycle 2 the top-k unlabeled by the sampler's scores;
    --min-iterations gives the small first cycle more epochs."""
    import mlflow

    from entrypoints.cli import cli

    result = CliRunner().invoke(cli, [
        "cycle", "--data", str(store / "data"), "--protocol", "pool", "--sampler", "hybrid",
        "--cycles", "2", "--per-cycle", "6", "--epochs", "1", "--min-iterations", "5", "--batch-size", "4",
        "--arch", "tiny", "--workers", "0",
        "--register", "false", "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
    assert result.exit_code == 0, result.output
    run_id = re.findall(r"cycle run ([0-9a-f]+)", result.output)[-1]
    run = client().get_run(run_id)
    assert run.data.tags["alod.protocol"] == "pool" and run.data.tags["alod.sampler"] == "hybrid"
    state = _labeled_state(run_id, tmp_path / "s")
    scores = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="scores/cycle_002.json", dst_path=str(tmp_path / "c"))).read_text())
    cycle1 = {n for n, c in state.items() if c == 1}
    cycle2 = {n for n, c in state.items() if c == 2}
    assert len(cycle1) == 6 and len(cycle2) == 6 and not cycle1 & set(scores)
    top = sorted(scores, key=lambda n: (-scores[n], n))[:6]
    assert cycle2 == set(top)
    # 6 images / batch 4 = 2 steps an epoch -> 3 epochs for 5 steps; 12 images -> 3 steps -> 2 epochs
    assert tracking_metric(run_id, "train_epochs") == {1: 3, 2: 2}
    children = {c.data.tags["alod.cycle"]: c.info.run_id for c in client().search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")}
    assert sorted(tracking_metric(children["1"], "loss")) == [1, 2, 3]
    assert sorted(tracking_metric(children["2"], "loss")) == [1, 2]


def test_budget_in_boxes(pipeline, store, tmp_path):
    """--budget-boxes: each cycle takes images in selection order until the boxes are spent."""
    from alod.data.bdd100k import load_labels, split_paths
    from entrypoints.cli import cli

    result = CliRunner().invoke(cli, [
        "cycle", "--data", str(store / "data"), "--ranking", pipeline["rank"], "--cycles", "2",
        "--per-cycle", "12", "--budget-boxes", "15", "--epochs", "1", "--arch", "tiny", "--workers", "0",
        "--register", "false", "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
    assert result.exit_code == 0, result.output
    run_id = re.findall(r"cycle run ([0-9a-f]+)", result.output)[-1]
    state = _labeled_state(run_id, tmp_path / "s")
    boxes = {f.name: f.num_trainable for f in load_labels(split_paths(store / "data", "train")[0])[0]}
    ranking = _ranking(pipeline["rank"], tmp_path / "r")
    batch2 = ranking[ranking["batch"] == 2].sort_values("rank")["image"].tolist()
    for cycle in (1, 2):
        picked = [n for n, c in state.items() if c == cycle]
        spent = sum(boxes[n] for n in picked)
        assert 1 <= len(picked) <= 12 and (spent <= 15 or len(picked) == 1), (cycle, spent)
    picked2 = [n for n, c in state.items() if c == 2]
    assert picked2 == batch2[:len(picked2)]  # the top of batch 2, in rank order
    next_cost = boxes[batch2[len(picked2)]] if len(picked2) < 12 else 0
    assert len(picked2) == 12 or sum(boxes[n] for n in picked2) + next_cost > 15  # stopped at the budget
    assert tracking_metric(run_id, "labeled_boxes")[2] == sum(boxes[n] for n in state)


def tracking_metric(run_id: str, key: str) -> dict:
    return {m.step: m.value for m in client().get_metric_history(run_id, key)}


def _ranking(run_id, dst):
    import mlflow

    return pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="ranking/ranking.parquet", dst_path=str(dst)))


def test_distributed_ranking_equals_single_process(pipeline, store, tmp_path):
    """rank under torchrun: each of 2 gloo processes scores a shard; merged ranking == nproc=1."""
    from entrypoints.cli import cli

    ids = {}
    for nproc in (1, 2):
        result = CliRunner().invoke(cli, [
            "rank", "--data", str(store / "data"), "--sampler", "boxcount", "--batches", "3",
            "--batch-images", "16", "--workers", "0", "--eval-batch-size", "8", "--nproc", str(nproc),
            "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
        assert result.exit_code == 0, result.output
        exp = client().get_experiment_by_name(EXPERIMENT).experiment_id
        ids[nproc] = client().search_runs([exp], "tags.`alod.step` = 'rank'",
                                          order_by=["attributes.start_time DESC"])[0].info.run_id
    assert ids[1] != ids[2]
    one, two = _ranking(ids[1], tmp_path / "1"), _ranking(ids[2], tmp_path / "2")
    assert len(two) == TRAIN and two["image"].is_unique
    pd.testing.assert_frame_equal(one, two)


def test_elastic_restart_resumes_same_run(pipeline, store, tmp_path):
    """A worker killed mid-epoch under torchrun --max-restarts: the cycle resumes from its
    checkpoint in the same MLflow run; every epoch and cycle is logged exactly once."""
    from entrypoints.cli import cli

    marker = tmp_path / "fired"
    env = {"ALOD_FAULT": "train_step:1.1", "ALOD_FAULT_ONCE": str(marker)}
    exp = client().get_experiment_by_name(EXPERIMENT).experiment_id
    before = {r.info.run_id for r in client().search_runs([exp])}
    result = CliRunner(env=env).invoke(cli, [
        "cycle", "--data", str(store / "data"), "--ranking", pipeline["rank"], "--cycles", "2",
        "--per-cycle", "8", "--epochs", "3", "--arch", "tiny", "--batch-size", "2", "--workers", "0",
        "--nproc", "2", "--max-restarts", "2", "--register", "false", "--experiment-name", EXPERIMENT,
        "--work-dir", str(store / "work")])
    assert result.exit_code == 0, result.output
    assert marker.exists()  # the fault fired: a worker died in epoch 2 of cycle 1
    new = [r for r in client().search_runs([exp]) if r.info.run_id not in before]
    parents = [r for r in new if r.data.tags.get("alod.step") == "cycle"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    run_id = parents[0].info.run_id
    for key in ("mAP50", "labeled_images"):
        assert [m.step for m in sorted(client().get_metric_history(run_id, key), key=lambda m: m.step)] == [1, 2]
    children = [r for r in new if r.data.tags.get("mlflow.parentRunId") == run_id]
    assert sorted(c.data.tags["alod.cycle"] for c in children) == ["1", "2"]  # the child was reopened
    for child in children:
        steps = [m.step for m in client().get_metric_history(child.info.run_id, "loss")]
        assert sorted(steps) == sorted(set(steps)) and max(steps) == 3
    assert _labeled_state(run_id, tmp_path / "s") == _labeled_state(pipeline["cycle"], tmp_path / "t")


def test_main_chains_steps_reuses_finished_ones_and_compares(store, tmp_path):
    import mlflow

    from entrypoints.cli import cli

    args = ["run", "--data", str(store / "data"), "--arch", "tiny", "--samplers", "random,boxcount",
            "--seeds", "0", "--fraction", "0.5", "--pretrain-epochs", "1", "--epochs", "1", "--lr", "0.04",
            "--cycles", "2", "--per-cycle", "8", "--batches", "3", "--batch-images", "16", "--workers", "0",
            "--experiment-name", "alod-main-test", "--work-dir", str(store / "work")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "reusing" not in first.output
    assert "random" in first.output and "boxcount" in first.output  # the printed comparison table
    assert "labels_to_random_final" in first.output and "ranking model (pretrained on 50% of the pool" in first.output
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("reusing finished pretrain run") == 1
    assert second.output.count("reusing finished rank run") == 2
    assert second.output.count("reusing finished cycle run") == 2
    main_id = re.findall(r"main run ([0-9a-f]+)", second.output)[-1]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=main_id, artifact_path="compare/comparison.csv", dst_path=str(tmp_path)))
    assert sorted(table["sampler"]) == ["boxcount", "random"]
    assert {a.path for a in client().list_artifacts(main_id, "compare")} >= {
        "compare/comparison.csv", "compare/curves.csv", "compare/learning_curve.png"}
    main_run = client().get_run(main_id)  # the decisive numbers are on the main run itself
    assert {"final_mAP50.random", "final_mAP50.boxcount", "AUC.random", "AUC.boxcount"} <= set(main_run.data.metrics)
    assert "| random |" in main_run.data.tags["mlflow.note.content"]
    # main links to its runs: each step run (new or reused) is tagged with it, and its description lists them
    linked = client().search_runs([main_run.info.experiment_id], filter_string=f"tags.`alod.main_run` = '{main_id}'")
    steps = sorted(r.data.tags["alod.step"] for r in linked)
    assert steps == ["cycle", "cycle", "pretrain", "rank", "rank"], steps
    for r in linked:
        assert f"](#/experiments/{main_run.info.experiment_id}/runs/{r.info.run_id})" in \
            main_run.data.tags["mlflow.note.content"]


def test_main_runs_sampler_auto_with_forecasts(store):
    """`alod run --samplers random,auto` on the pool protocol: auto's bandit chooses from cycle 2 on, logs
    why, every cycle from the third carries the forecast, and main prints the forecast per sampler."""
    from entrypoints.cli import cli

    args = ["run", "--data", str(store / "data"), "--arch", "tiny", "--samplers", "random,auto", "--seeds", "0",
            "--pretrain-epochs", "0", "--epochs", "1", "--lr", "0.04", "--protocol", "pool", "--cycles", "3",
            "--per-cycle", "6", "--batches", "3", "--batch-images", "16", "--workers", "0",
            "--auto-samplers", "random,boxcount", "--target-map50", "0.5",
            "--experiment-name", "alod-auto-test", "--work-dir", str(store / "work")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("reusing finished rank run") == 1  # auto ranks as random does
    assert "auto chose" in result.output and "stop rule:" in result.output
    assert "forecast (val mAP50 = a - b*n^-c" in result.output and "labeled_images_to_0.5" in result.output
    runs = client().search_runs([client().get_experiment_by_name("alod-auto-test").experiment_id],
                                filter_string="tags.`alod.step` = 'cycle' and tags.`alod.sampler` = 'auto'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["alod.auto_samplers"] == "random,boxcount"
    chosen = {k: v for k, v in run.data.tags.items() if k.startswith("alod.auto.cycle_")}
    assert sorted(chosen) == ["alod.auto.cycle_002", "alod.auto.cycle_003"]
    assert set(chosen.values()) <= {"random", "boxcount"}
    rid = run.info.run_id
    assert sorted(tracking_metric(rid, "auto.p.boxcount")) == [2, 3]
    assert sorted(tracking_metric(rid, "auto.reward")) == [2, 3]
    assert sorted(tracking_metric(rid, "forecast_mAP50.x2")) == [3]  # three cycles: the first forecast
    assert sorted(tracking_metric(rid, "mAP50")) == [1, 2, 3]


def test_main_runs_samplers_side_by_side_with_jobs(store, tmp_path):
    """`--jobs 2`: the two samplers' rank and cycle runs run at the same time in two processes, each line
    they print says whose it is, and main compares them as it does one after another."""
    args = [sys.executable, "-m", "entrypoints.cli", "run", "--data", str(store / "data"), "--arch", "tiny", "--samplers", "random,boxcount", "--seeds", "0",
            "--pretrain-epochs", "0", "--epochs", "1", "--lr", "0.04", "--cycles", "2", "--per-cycle", "6",
            "--batches", "3", "--batch-images", "16", "--workers", "0", "--jobs", "2",
            "--experiment-name", "alod-jobs-test", "--work-dir", str(store / "work")]
    # a real process: the job processes write to the terminal it inherited, which CliRunner does not capture
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for sampler in ("random", "boxcount"):
        assert f"[{sampler}, seed 0] cycle 2/2: 12 labeled images, mAP50" in result.stdout
    assert "labels_to_random_final" in result.stdout
    experiment = client().get_experiment_by_name("alod-jobs-test").experiment_id
    cycles = client().search_runs([experiment], filter_string="tags.`alod.step` = 'cycle'")
    assert sorted(r.data.tags["alod.sampler"] for r in cycles) == ["boxcount", "random"]
    assert all(r.info.status == "FINISHED" for r in cycles)
    a, b = (r.info for r in cycles)
    assert a.start_time < b.end_time and b.start_time < a.end_time  # side by side, not one after another
    for r in cycles:
        assert sorted(tracking_metric(r.info.run_id, "mAP50")) == [1, 2]
        assert sorted(_labeled_state(r.info.run_id, tmp_path / r.info.run_id).values()) == [1] * 6 + [2] * 6


def test_a_killed_job_process_is_a_clear_error_and_a_rerun_reuses_what_finished(store, tmp_path):
    """`--jobs 2`, one job process killed in cycle 1 (as the kernel's OOM killer would): main ends with an
    error that names the unfinished steps and what to do, no traceback; the same command again reuses
    the finished pretrain and rank runs and completes both cycles."""
    args = [sys.executable, "-m", "entrypoints.cli", "run", "--data", str(store / "data"), "--arch", "tiny",
            "--samplers", "random,boxcount", "--seeds", "0", "--pretrain-epochs", "0", "--epochs", "1",
            "--lr", "0.04", "--cycles", "1", "--per-cycle", "6", "--batches", "3", "--batch-images", "16",
            "--workers", "0", "--jobs", "2", "--experiment-name", "alod-jobs-kill-test",
            "--work-dir", str(store / "work")]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    killed = subprocess.run(args, cwd=REPO, env={**env, "ALOD_FAULT": "after_train:1",
                                                 "ALOD_FAULT_ONCE": str(tmp_path / "fired")},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 1, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "a cycle job process ended abruptly" in killed.stderr
    assert "unfinished cycle steps: " in killed.stderr and "seed 0" in killed.stderr
    assert "Run the same command again" in killed.stderr and "Traceback" not in killed.stderr
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert rerun.stdout.count("reusing finished rank run") == 2
    assert "reusing finished pretrain run" in rerun.stdout
    experiment = client().get_experiment_by_name("alod-jobs-kill-test").experiment_id
    finished = client().search_runs([experiment], filter_string="tags.`alod.step` = 'cycle' and status = 'FINISHED'")
    assert sorted(r.data.tags["alod.sampler"] for r in finished) == ["boxcount", "random"]

def test_jobs_and_nproc_together_are_refused(store):
    from entrypoints.cli import cli

    result = CliRunner().invoke(cli, ["run", "--data", str(store / "data"), "--arch", "tiny", "--jobs", "2",
                                      "--nproc", "2", "--experiment-name", "alod-jobs-test",
                                      "--work-dir", str(store / "work")])
    assert result.exit_code != 0
    assert "choose one of the two" in result.output and "Traceback" not in result.output


def test_auto_choices_and_an_early_stop_survive_a_kill(pipeline, store):
    """killed after auto chose cycle 3's sampler but before it picked: the resume keeps that choice;
    stop_when_flat (a threshold nothing passes) ends the run after cycle 4, the first with a band, and
    says so; resuming the stopped run runs no more cycles."""
    params = dict(protocol="pool", sampler="auto", auto_samplers="random,boxcount", cycles=5, per_cycle=4,
                  epochs=1, register="false", stop_when_flat="true", stop_min_gain=1e6, **TINY)
    killed_id, proc = mlflow_run(store, "cycle", env_extra={"ALOD_FAULT": "select:3"}, check=False, **params)
    assert proc.returncode != 0 and "ALOD_FAULT: killing" in proc.stdout + proc.stderr
    before = client().get_run(killed_id).data.tags["alod.auto.cycle_003"]
    _, proc = mlflow_run(store, "cycle", resume_run_id=killed_id, data="data/bdd100k")
    out = proc.stdout + proc.stderr
    assert f"auto chose {before} for cycle 3" in out and "[recorded before the interruption]" in out
    run = client().get_run(killed_id)
    assert run.data.tags["alod.auto.cycle_003"] == before
    assert sorted(tracking_metric(killed_id, "mAP50")) == [1, 2, 3, 4]  # stopped before cycle 5
    assert run.data.tags["alod.stopped_early"].startswith("after cycle 4 of 5 (stop_when_flat): stop:")
    assert "stopping early after cycle 4" in out and "no band yet" in out  # cycle 3 waited for a band
    _, proc = mlflow_run(store, "cycle", resume_run_id=killed_id, data="data/bdd100k")
    assert "stopped early after cycle 4" in proc.stdout + proc.stderr
    assert sorted(tracking_metric(killed_id, "mAP50")) == [1, 2, 3, 4]


def test_sampler_auto_needs_the_pool_protocol(pipeline, store):
    from entrypoints.cli import cli

    result = CliRunner().invoke(cli, ["cycle", "--data", str(store / "data"), "--ranking", pipeline["rank"],
                                      "--sampler", "auto", "--cycles", "1", "--per-cycle", "4", "--arch", "tiny",
                                      "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
    assert result.exit_code == 1 and "needs protocol 'pool'" in result.output, result.output
    result = CliRunner().invoke(cli, ["cycle", "--data", str(store / "data"), "--protocol", "pool",
                                      "--sampler", "auto", "--auto-samplers", "random,nosuch", "--cycles", "1",
                                      "--per-cycle", "4", "--arch", "tiny",
                                      "--experiment-name", EXPERIMENT, "--work-dir", str(store / "work")])
    assert result.exit_code == 1 and "nosuch" in result.output, result.output


def write_cvat_for_images(frames, path) -> None:
    """Frames as CVAT's dumper writes a task in "CVAT for images 1.1" (cvat/apps/dataset_manager/formats/cvat.py):
    an <image> per frame, <box> xtl/ytl/xbr/ybr with two decimals; ignore regions under the labels a BDD100K
    CVAT project has for them (other person / other vehicle / trailer)."""
    from xml.sax.saxutils import quoteattr

    from alod.data.categories import ID_TO_NAME

    ignore_names = {"pedestrian": "other person", "car": "other vehicle", "truck": "trailer"}
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>"]
    for i, frame in enumerate(frames):
        lines.append(f'  <image id="{i}" name={quoteattr(frame.name)} width="{frame.width or 320}" '
                     f'height="{frame.height or 180}">')
        for box, label, ignore in zip(frame.boxes.tolist(), frame.labels.tolist(), frame.ignore.tolist()):
            name = ID_TO_NAME[int(label)]
            name = ignore_names[name] if ignore else name
            lines.append(f'    <box label={quoteattr(name)} source="manual" occluded="0" xtl="{box[0]:.2f}" '
                         f'ytl="{box[1]:.2f}" xbr="{box[2]:.2f}" ybr="{box[3]:.2f}" z_order="0">\n    </box>')
        lines.append("  </image>")
    lines.append("</annotations>")
    Path(path).write_text("\n".join(lines) + "\n")


def test_files_oracle_exports_waits_imports_and_resumes(pipeline, store, tmp_path):
    """--oracle files: the batch is exported with pre-annotations, the run waits, partial, refused,
    repeated and killed imports lose nothing, and training uses exactly the imported labels."""
    import mlflow

    from alod.data.bdd100k import load_labels, save_frames, split_paths
    from alod.data.coco import write_coco
    from alod.data.frames import Frame
    from entrypoints.cli import cli

    work = store / "work-files"
    cycle_args = ["cycle", "--data", str(store / "data"), "--ranking", pipeline["rank"], "--oracle", "files",
                  "--preannotation-threshold", "0",
                  "--cycles", "2", "--per-cycle", "4", "--epochs", "1", "--arch", "tiny", "--workers", "0",
                  "--register", "false", "--experiment-name", EXPERIMENT, "--work-dir", str(work)]

    def cli_ok(args):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return result.output

    def import_labels(frames, name, *extra, fmt="bdd"):
        path = tmp_path / name
        if fmt == "coco":
            write_coco(frames, path)
        elif fmt == "cvat":
            write_cvat_for_images(frames, path)
        else:
            save_frames(frames, path)
        return CliRunner().invoke(cli, ["import-labels", run_id, str(path), "--work-dir", str(work), *extra])

    out = cli_ok(cycle_args)
    run_id = re.findall(r"cycle run ([0-9a-f]+)", out)[-1]
    assert "waits for the labels of cycle 1" in out
    run = client().get_run(run_id)
    assert run.info.status == "SCHEDULED" and run.data.tags["alod.waiting_for_labels"] == "1"
    assert "mAP50" not in run.data.metrics
    exported = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="annotation/cycle_001",
                                                        dst_path=str(tmp_path / "a1")))
    batch1 = exported.joinpath("images.txt").read_text().split()
    assert sorted(batch1) == sorted(n for n, c in _labeled_state(run_id, tmp_path / "s1").items() if c == 1)
    tasks = json.loads(exported.joinpath("label_studio.json").read_text())
    assert len(tasks) == 4
    # cycle 1 has no model of its own: the registered model that ranked the pool pre-annotates
    assert any(t.get("predictions") for t in tasks)
    assert {p["model_version"] for t in tasks for p in t.get("predictions", [])} == {
        f"models:/alod-pretrained/{client().get_run(pipeline['rank']).data.tags['alod.model_version']}"}
    assert exported.joinpath("coco.json").is_file()

    truth = {f.name: f for f in load_labels(split_paths(store / "data", "train")[0])[0]}
    other = next(n for n in truth if n not in batch1)
    result = import_labels([truth[batch1[0]], truth[other]], "bad.json")
    assert result.exit_code == 1 and other in result.output and "nothing was imported" in result.output
    assert "Traceback" not in result.output

    result = import_labels([truth[n] for n in batch1[:2]], "part.json", fmt="coco")
    assert result.exit_code == 0, result.output
    assert "2 image(s) added" in result.output and "2 selected image(s) still without labels" in result.output
    out = cli_ok(cycle_args + ["--resume-run-id", run_id])
    assert "waits for the labels of cycle 1" in out and "mAP50" not in client().get_run(run_id).data.metrics

    # killed after the local write, before the upload: importing again loses nothing
    rest = tmp_path / "rest.json"
    save_frames([truth[n] for n in batch1], rest)
    proc = subprocess.run([sys.executable, "-m", "entrypoints.cli", "import-labels", run_id, str(rest),
                           "--work-dir", str(work)], env={**os.environ, "ALOD_FAULT": "import_after_local:import"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stdout + proc.stderr
    # the same labels as CVAT exports them (CVAT for images 1.1 XML): equal to the stored ones, so a no-op
    # (an image without boxes cannot be said in CVAT: its frame would read as not annotated)
    boxed = [n for n in batch1 if len(truth[n])]
    result = import_labels([truth[n] for n in boxed], "annotations.xml", fmt="cvat")
    assert result.exit_code == 0 and f"0 image(s) added, {len(boxed)} already imported" in result.output, \
        result.output
    assert "resume the run" in result.output

    cli_ok(cycle_args + ["--resume-run-id", run_id])
    run = client().get_run(run_id)
    assert run.data.tags["alod.waiting_for_labels"] == "2"
    assert sorted(tracking_metric(run_id, "mAP50")) == [1]
    batch2 = [n for n, c in _labeled_state(run_id, tmp_path / "s2").items() if c == 2]
    conflicting = Frame(name=batch1[0], boxes=[[0, 0, 20, 20]], labels=[3])
    result = import_labels([conflicting], "conflict.json")
    assert result.exit_code == 1 and "different labels" in result.output and batch1[0] in result.output
    # annotators found nothing in two of the images: empty frames are labels too
    result = import_labels([truth[batch2[0]], truth[batch2[1]], Frame(name=batch2[2]), Frame(name=batch2[3])],
                           "batch2.json")
    assert result.exit_code == 0, result.output

    # the run's own parameters are reused: no need to repeat the command line
    cli_ok(["cycle", "--resume-run-id", run_id, "--work-dir", str(work)])
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED" and "alod.waiting_for_labels" not in run.data.tags
    assert sorted(tracking_metric(run_id, "mAP50")) == [1, 2]
    boxes1 = sum(truth[n].num_trainable for n in batch1)
    assert tracking_metric(run_id, "labeled_boxes") == {
        1: boxes1, 2: boxes1 + truth[batch2[0]].num_trainable + truth[batch2[1]].num_trainable}
    stored = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="labels/labels.json",
                                                      dst_path=str(tmp_path / "l")))
    assert sorted(f.name for f in load_labels(stored)[0]) == sorted(batch1 + batch2)
