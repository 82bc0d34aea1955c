"""The cycle loop's phases driven in-process with a memory tracker: no MLflow store, no subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alod import annotation, run_folder
from alod.active.protocol import make_ranking, select_from_batches
from alod.data.pool import LabeledState
from alod.params import CycleParams
from alod.steps.cycle_loop import cycles
from alod.steps.hooks import CycleHooks, MemoryTracker, skip_pictures

RUN = "run-1"


def _params(root: Path, work: Path, **kw) -> CycleParams:
    kw = {"protocol": "pool", "sampler": "random", "cycles": 2, "per_cycle": 3, "epochs": 1, "min_iterations": 2,
          "arch": "tiny", "weights": "none", "batch_size": 2, "workers": 0, "eval_batch_size": 4, **kw}
    return CycleParams(data=str(root), work_dir=str(work), run_id=RUN, **kw)


class Run:
    """One run's folder and memory tracker; `go(params)` runs the loop (again: a resume) and returns the
    fault points it passed."""

    def __init__(self, tmp_path: Path, data):
        self.root, self.train, self.val = data
        self.work = tmp_path / "work"
        self.dir = run_folder.RunFolder(self.work, RUN).create()
        self.tracker = MemoryTracker(RUN)

    def params(self, **kw) -> CycleParams:
        return _params(self.root, self.work, **kw)

    def go(self, p: CycleParams, ranking=None, pictures=skip_pictures) -> list[tuple[str, int]]:
        points: list[tuple[str, int]] = []
        hooks = CycleHooks(self.tracker, pictures=pictures, fault=lambda point, cycle: points.append((point, cycle)))
        cycles(p, torch.device("cpu"), self.train, self.val, ranking, self.dir, hooks)
        return points

    def metric(self, key: str, run: str = RUN) -> dict[int, float]:
        return self.tracker.metric_steps(run, key)

    def state(self) -> LabeledState:
        return LabeledState.load(self.dir / run_folder.LABELED.local)


@pytest.fixture
def run(tmp_path, tiny_data) -> Run:
    return Run(tmp_path, tiny_data)


def test_each_cycle_logs_its_metrics_and_passes_the_fault_points_in_order(run):
    points = run.go(run.params())
    order = ["select", "after_select", "evaluate", "after_train", "after_metrics"]
    assert points == [(p, c) for c in (1, 2) for p in order]
    assert set(run.metric("mAP50")) == {1, 2}
    assert run.metric("labeled_images") == {1: 3.0, 2: 6.0}
    assert run.metric("images_scored") == {1: 0.0, 2: 0.0}  # `random` runs no model over the pool
    assert run.metric("train_epochs") == {1: 1.0, 2: 1.0}
    state = run.state()
    assert [len(state.selected_in(c)) for c in (1, 2)] == [3, 3]
    artifacts = run.tracker.artifacts
    assert {"state/labeled.json", "state/cycles/labeled_cycle_001.json", "state/cycles/labeled_cycle_002.json"} \
        <= set(artifacts[RUN])
    # each cycle trains in its own nested run, which holds its epochs and its checkpoint
    children = [run.tracker.find_child_run(RUN, {"alod.cycle": c}) for c in (1, 2)]
    assert None not in children and len(set(children)) == 2
    for cycle, child in zip((1, 2), children):
        assert set(artifacts[child]) == {f"checkpoints/cycle_{cycle:03d}.pt"}
        assert set(run.metric("loss", child)) == {1}
    assert run.tracker.registered and run.tracker.registered[0][1]["cycle"] == "2"


def test_a_resumed_loop_skips_the_completed_cycles(run, capsys):
    run.go(run.params(cycles=2))
    first = dict(run.metric("mAP50"))
    picked = run.state().to_dict()
    points = run.go(run.params(cycles=3))  # one more cycle than before
    assert {c for _, c in points} == {3}
    assert run.metric("mAP50")[1] == first[1] and run.metric("mAP50")[2] == first[2]
    assert set(run.metric("mAP50")) == {1, 2, 3}
    state = run.state()
    assert {n: c for n, c in state.to_dict().items() if c < 3} == picked and len(state.selected_in(3)) == 3
    capsys.readouterr()
    assert run.go(run.params(cycles=3)) == []
    assert "all 3 cycles of run run-1 are already done" in capsys.readouterr().out


def test_the_files_oracle_asks_for_exactly_the_missing_images_and_resumes_when_they_arrive(run):
    store_file = run.dir / run_folder.LABELS.local
    annotation.LabelStore().save(store_file)
    p = run.params(oracle="files", labels_file=str(store_file))
    points = run.go(p)
    assert points == [("select", 1), ("after_select", 1), ("after_export", 1)]  # no training without labels
    asked = run.state().selected_in(1)
    assert run.tracker.waiting[RUN] == 1 and "mAP50" not in run.tracker.metrics.get(RUN, {})
    export = run.dir / "annotation" / "cycle_001"
    assert sorted((export / "images.txt").read_text().split()) == sorted(asked)
    assert {f"annotation/cycle_001/{f}" for f in annotation.EXPORT_FILES} <= set(run.tracker.artifacts[RUN])

    truth = run.train.by_name()
    annotation.LabelStore([truth[n] for n in asked[:-1]]).save(store_file)  # one label still missing
    assert run.go(p) == [("after_select", 1), ("after_export", 1)]  # the pick is kept, not made again
    assert run.state().selected_in(1) == asked

    annotation.LabelStore([truth[n] for n in asked]).save(store_file)
    points = run.go(p)
    assert points[:5] == [("after_select", 1), ("evaluate", 1), ("after_train", 1), ("after_metrics", 1),
                          ("select", 2)]
    assert points[-2:] == [("after_select", 2), ("after_export", 2)]
    assert set(run.metric("mAP50")) == {1} and run.tracker.waiting[RUN] == 2
    asked2 = run.state().selected_in(2)
    assert not set(asked2) & set(asked)
    assert sorted((run.dir / "annotation" / "cycle_002" / "images.txt").read_text().split()) == sorted(asked2)


def test_the_batches_protocol_takes_the_rankings_batches(run):
    names = [f.name for f in run.train.frames]
    ranking = make_ranking(names, [float(i) for i in range(len(names))], batches=2, batch_images=4)
    run.go(run.params(protocol="batches", sampler="entropy", cycles=2), ranking=ranking, pictures=_draw_or_fail)
    state = run.state()
    first = select_from_batches(ranking, 1, 3, seed=0, labeled=set())
    assert state.selected_in(1) == first
    assert state.selected_in(2) == select_from_batches(ranking, 2, 3, seed=0, labeled=set(first))
    assert run.metric("images_scored") == {1: 0.0, 2: 0.0}  # ranked once, before the run
    assert ("run-1", "picked", 0) in run.tracker.images  # batch 1, drawn without a ranking model


def test_the_pool_protocol_scores_the_pool_with_the_current_model(run):
    run.go(run.params(sampler="entropy", cycles=2))
    assert run.metric("images_scored") == {1: 0.0, 2: 9.0}  # cycle 2 scores the 12 - 3 unlabeled images
    scored = run.tracker.artifacts[RUN]
    assert "scores/cycle_002.json" in scored and "scores/cycle_001.json" not in scored


def _draw_or_fail(draw):  # the step's hook only warns; here a broken picture fails the test
    draw()


def test_pictures_of_every_cycle_are_drawn_through_the_hook(run):
    hooks = CycleHooks(run.tracker, pictures=_draw_or_fail, fault=lambda *a: None)
    cycles(run.params(sampler="entropy", cycles=2), torch.device("cpu"), run.train, run.val, None, run.dir, hooks)
    assert sorted(run.tracker.images) == sorted((RUN, key, step) for key in ("picked", "val_gt_vs_pred")
                                                for step in (0, 1, 2))
    figures = set(run.tracker.artifacts[RUN])
    assert "plots/cycle_002/score_histogram.png" in figures and "plots/cycle_001/ap50_per_class.png" in figures


def test_roi_samples_reach_the_trained_detector_and_its_checkpoint(run):
    from alod.models import detector_from_checkpoint

    run.go(run.params(cycles=1, roi_samples=8))
    child = run.tracker.find_child_run(RUN, {"alod.cycle": 1})
    model = detector_from_checkpoint(run.tracker.artifacts[child]["checkpoints/cycle_001.pt"])
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 8
    assert model.alod_config["overrides"] == {"box_batch_size_per_image": 8}


def test_freeze_batchnorm_keeps_the_starting_statistics_through_warm_started_cycles(run, tmp_path):
    """Both cycles (the second warm-started from the first) train the convolutions and leave every BatchNorm
    as the starting weights had it; without the option the statistics move."""
    from alod.models import build_detector, detector_from_checkpoint

    torch.manual_seed(0)
    start = build_detector("tiny")
    weights = tmp_path / "start.pt"
    torch.save(start.state_dict(), weights)

    reference = start.state_dict()
    norm_keys = [k for k in reference if k.endswith(("running_mean", "running_var"))]
    assert norm_keys
    run.go(run.params(cycles=2, reset=False, weights=str(weights), freeze_batchnorm=True))
    for cycle in (1, 2):
        child = run.tracker.find_child_run(RUN, {"alod.cycle": cycle})
        state = detector_from_checkpoint(run.tracker.artifacts[child][f"checkpoints/cycle_{cycle:03d}.pt"]).state_dict()
        assert all(torch.equal(state[k], reference[k]) for k in norm_keys), cycle
        convs = [k for k in reference if k.endswith("weight") and reference[k].dim() == 4]
        assert any(not torch.equal(state[k], reference[k]) for k in convs), cycle  # the convolutions trained

    other = Run(tmp_path / "plain", (run.root, run.train, run.val))
    other.go(other.params(cycles=1, weights=str(weights)))
    child = other.tracker.find_child_run(RUN, {"alod.cycle": 1})
    state = detector_from_checkpoint(other.tracker.artifacts[child]["checkpoints/cycle_001.pt"]).state_dict()
    assert any(not torch.equal(state[k], reference[k]) for k in norm_keys)
