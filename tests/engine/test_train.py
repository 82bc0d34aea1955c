"""Training loop: schedules, checkpoints, exact resume (also after SIGTERM), and that it learns."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, SequentialSampler

from alod.data.dataset import DetectionDataset
from alod.engine.train import (
    LOSS_KEYS,
    PREEMPTED_EXIT_CODE,
    EpochSchedule,
    Preempted,
    SkipBatches,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    epochs_for_min_steps,
    fit,
)
from alod.models import build_detector, load_checkpoint


def _config(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 2, "lr": 0.08, "warmup_iters": 2, "workers": 0, "seed": 3, "device": "cpu"}
    return TrainConfig(**{**base, "clip_grad_norm": 5.0, **kw})


def test_lr_scaling_and_schedules() -> None:
    cfg = TrainConfig(lr=0.02, batch_size=2)
    assert cfg.scaled_lr(world_size=8) == pytest.approx(0.02)
    assert cfg.scaled_lr() == pytest.approx(0.0025)
    cos = EpochSchedule(10, "cosine")
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.5) and cos(9) > 0
    step = EpochSchedule(26, "step", [16, 22])
    assert [step(e) for e in (0, 15, 16, 22)] == pytest.approx([1, 1, 0.1, 0.01])
    assert EpochSchedule(9, "step").steps == [6, 8]
    with pytest.raises(ValueError):
        EpochSchedule(3, "linear")
    cfg16 = TrainConfig(epochs=4, lr_schedule="cosine", batch_size=16)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg16)
    sched = build_scheduler(opt, cfg16)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02) and lrs == sorted(lrs, reverse=True)


def test_min_steps_add_epochs_only_when_needed() -> None:
    assert epochs_for_min_steps(3, 0, 10, 4) == 3
    assert epochs_for_min_steps(3, 30, 10, 4) == 10  # 3 steps an epoch
    assert epochs_for_min_steps(3, 30, 10, 4, world_size=2) == 15  # 2 steps an epoch on each rank
    assert epochs_for_min_steps(3, 6, 100, 4) == 3  # 25 steps an epoch already
    assert epochs_for_min_steps(3, 30, 0, 4) == 3
    with pytest.raises(ValueError):
        epochs_for_min_steps(3, -1, 10, 4)


def test_fit_stats_checkpoint_and_callback(scenes, tmp_path: Path) -> None:
    frames, root = scenes
    torch.manual_seed(0)
    model = build_detector("tiny")
    seen = []
    ckpt = tmp_path / "ckpt" / "last.pth"
    hist = fit(model, DetectionDataset(frames[:4], root, train=True), _config(epochs=1),
               checkpoint_path=ckpt, on_epoch_end=lambda e, s: seen.append((e, s)), progress=False)
    assert len(hist) == 1 and seen == [(0, hist[0])]
    stats = hist[0]
    assert stats["images"] == 4 and stats["seconds"] > 0 and stats["images_per_second"] > 0
    assert stats["loss"] == pytest.approx(sum(stats[k] for k in LOSS_KEYS), rel=1e-5)
    assert all(math.isfinite(stats[k]) for k in LOSS_KEYS)
    c = load_checkpoint(ckpt)
    assert c["epoch"] == 0 and c["config"]["arch"] == "tiny" and c["config"]["train"]["batch_size"] == 2
    # a finished run resumes to nothing
    assert fit(model, DetectionDataset(frames[:4], root, train=True), _config(epochs=1),
               checkpoint_path=ckpt, progress=False) == []


class _Stop(Exception):
    pass


def _stop_after_first_epoch(epoch: int, stats: dict) -> None:
    raise _Stop  # the checkpoint is written before the callback runs: a crash here loses nothing


def test_resume_is_exact(scenes, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, interruption, fresh model resumed for epoch 2."""
    frames, root = scenes
    ds = DetectionDataset(frames[:4], root, train=True)

    torch.manual_seed(0)
    straight = build_detector("tiny")
    fit(straight, ds, _config(epochs=2), checkpoint_path=tmp_path / "a.pth", progress=False)

    torch.manual_seed(0)
    with pytest.raises(_Stop):
        fit(build_detector("tiny"), ds, _config(epochs=2), checkpoint_path=tmp_path / "b.pth",
            on_epoch_end=_stop_after_first_epoch, progress=False)
    assert load_checkpoint(tmp_path / "b.pth")["epoch"] == 0
    torch.manual_seed(123)  # a new process starts from another init: resume must not care
    resumed = build_detector("tiny")
    hist = fit(resumed, ds, _config(epochs=2), checkpoint_path=tmp_path / "b.pth", progress=False)
    assert [h["epoch"] for h in hist] == [1]

    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(tmp_path / "b.pth")["epoch"] == 1


def test_resume_with_more_epochs_warns_and_follows_new_schedule(scenes, tmp_path: Path) -> None:
    frames, root = scenes
    ds = DetectionDataset(frames[:2], root, train=True)
    fit(build_detector("tiny"), ds, _config(epochs=1), checkpoint_path=tmp_path / "c.pth", progress=False)
    with pytest.warns(UserWarning, match="epochs"):
        hist = fit(build_detector("tiny"), ds, _config(epochs=2), checkpoint_path=tmp_path / "c.pth",
                   progress=False)
    assert [h["epoch"] for h in hist] == [1]
    # epoch 1 of a 2-epoch cosine run trains at half the base lr (the 1-epoch file said 0)
    assert hist[0]["lr"] == pytest.approx(0.5 * 0.08 * 2 / 16)


def test_resume_refuses_other_architecture(scenes, tmp_path: Path) -> None:
    frames, root = scenes
    ds = DetectionDataset(frames[:2], root, train=True)
    fit(build_detector("tiny"), ds, _config(epochs=1), checkpoint_path=tmp_path / "c.pth", progress=False)
    other = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    with pytest.raises(ValueError, match="holds a tiny model"):
        fit(other, ds, _config(epochs=2), checkpoint_path=tmp_path / "c.pth", progress=False)


def test_tiny_detector_overfits(scenes, trained_tiny) -> None:
    """The whole loop learns: six generated scenes, ~190 SGD steps, mAP50 >= 0.9.

    Float reductions differ across CPUs, so the exact run differs by machine (CI's
    CPU once got 0.67 where this machine got 0.98, at lr 0.16). At lr 0.08 the
    schedule is steadier: 8 seeds here, 1 and 2 threads, all reached 0.975-1.0.
    """
    evaluate = pytest.importorskip("alod.engine.evaluate").evaluate
    from alod.engine.infer import predict

    frames, root = scenes
    model, hist = trained_tiny
    assert hist[-1]["loss"] < hist[0]["loss"] / 4
    preds = list(predict(model, DetectionDataset(frames, root), batch_size=6))
    result = evaluate(frames, preds)
    assert result.mAP50 >= 0.9, result.as_table()


# --------------------------------------------------------------------------- SIGTERM / preemption

_PREEMPT_SCRIPT = """
import json, os, signal, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # tests/engine, for make_scenes
import torch
from conftest import make_scenes

import alod.engine.train as train
from alod.data.dataset import DetectionDataset
from alod.models import build_detector


def sigterm_as_first_step_begins(point, where):
    if point == "train_step" and where == "0.0":
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would; fit stops after this step


train.maybe_fail = sigterm_as_first_step_begins
root = Path(sys.argv[2])
frames = make_scenes(root)
torch.manual_seed(0)
train.fit(build_detector("tiny"), DetectionDataset(frames, root, train=True),
          train.TrainConfig(**json.loads(sys.argv[4])), checkpoint_path=sys.argv[3], progress=False)
sys.exit("fit returned despite SIGTERM")
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_writes_mid_epoch_checkpoint_and_resume_is_exact(scenes, tmp_path: Path, workers: int) -> None:
    """A SIGTERM'd process exits 143 after one step with a mid-epoch checkpoint;
    resuming it (another process, another init) equals the uninterrupted run,
    also with loader workers (flips depend on the image and epoch, not the worker)."""
    frames, root = scenes
    ds = DetectionDataset(frames, root, train=True)  # 6 images: 3 steps an epoch, warm-up over 2
    config = _config(epochs=2, workers=workers)
    script = tmp_path / "preempt.py"
    script.write_text(_PREEMPT_SCRIPT)
    ckpt = tmp_path / "b.pth"
    proc = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent), str(tmp_path / "scenes"), str(ckpt),
         json.dumps(asdict(config))],
        check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == PREEMPTED_EXIT_CODE == 143, proc.stderr[-3000:]
    assert "SIGTERM: training stopped in epoch 0 after step 1 of 3" in proc.stderr
    c = load_checkpoint(ckpt)
    assert c["epoch"] == 0 and c["step_in_epoch"] == 1
    assert c["warmup_scheduler"]["last_epoch"] == 1  # stopped inside the warm-up ramp
    assert len(c["rng"]) == 1 and c["epoch_stats"]["images"] == 2

    torch.manual_seed(0)
    straight = build_detector("tiny")
    expected = fit(straight, ds, config, progress=False)

    torch.manual_seed(123)  # a new process starts from another init: resume must not care
    resumed = build_detector("tiny")
    hist = fit(resumed, ds, config, checkpoint_path=ckpt, progress=False)
    assert [h["epoch"] for h in hist] == [0, 1]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the interrupted epoch's stats cover both of its parts
    assert hist[0]["images"] == 6
    for k in ("loss", *LOSS_KEYS, "lr"):
        assert hist[0][k] == pytest.approx(expected[0][k], rel=1e-5), k
    c = load_checkpoint(ckpt)
    assert c["epoch"] == 1 and "step_in_epoch" not in c  # epoch ends write the usual checkpoint


def _sigterm_at(step: str) -> Callable[[str, str], None]:
    """A train-step hook that sends this process SIGTERM, but only to fit's own handler."""

    def hook(point: str, where: str) -> None:
        if point == "train_step" and where == step:
            handler = signal.getsignal(signal.SIGTERM)
            # never let a missing handler kill the test runner
            assert type(getattr(handler, "__self__", None)).__name__ == "_StopRequest", handler
            signal.raise_signal(signal.SIGTERM)

    return hook


def test_sigterm_in_last_step_keeps_epoch_checkpoint_and_restores_handler(scenes, tmp_path: Path,
                                                                          monkeypatch) -> None:
    frames, root = scenes
    ds = DetectionDataset(frames[:4], root, train=True)  # 2 steps an epoch
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("alod.engine.train.maybe_fail", _sigterm_at("0.1"))
    ckpt = tmp_path / "c.pth"
    seen = []
    with pytest.raises(Preempted) as info:
        fit(build_detector("tiny"), ds, _config(epochs=2), checkpoint_path=ckpt, progress=False,
            on_epoch_end=lambda e, s: seen.append(e))
    assert signal.getsignal(signal.SIGTERM) is previous
    e = info.value
    assert isinstance(e, SystemExit) and e.code == 143
    assert (e.epoch, e.step_in_epoch, e.checkpoint) == (1, 0, ckpt)
    assert seen == []  # stopping promptly beats the callback (e.g. a long evaluation)
    c = load_checkpoint(ckpt)
    assert c["epoch"] == 0 and "step_in_epoch" not in c  # the whole epoch ran: a normal checkpoint
    monkeypatch.setattr("alod.engine.train.maybe_fail", lambda *a: None)
    hist = fit(build_detector("tiny"), ds, _config(epochs=2), checkpoint_path=ckpt, progress=False)
    assert [h["epoch"] for h in hist] == [1]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_without_checkpoint_path_still_stops(scenes, monkeypatch) -> None:
    frames, root = scenes
    monkeypatch.setattr("alod.engine.train.maybe_fail", _sigterm_at("0.0"))
    with pytest.raises(Preempted, match="no checkpoint_path") as info:
        fit(build_detector("tiny"), DetectionDataset(frames[:4], root, train=True), _config(epochs=1),
            progress=False)
    assert (info.value.epoch, info.value.step_in_epoch, info.value.checkpoint) == (0, 1, None)
    assert pickle.loads(pickle.dumps(info.value)).step_in_epoch == 1  # crosses process boundaries


def test_skip_batches_reads_no_skipped_batch() -> None:
    events: list = []
    batches = BatchSampler(SequentialSampler(range(10)), 3, drop_last=False)
    skip = SkipBatches(batches, 2, after_skip=lambda: events.append("after_skip"))
    assert len(skip) == 2 and skip.sampler is batches.sampler
    events.extend(skip)
    assert events == ["after_skip", [6, 7, 8], [9]]
    assert list(SkipBatches(batches, 0)) == list(batches)
    assert list(SkipBatches(batches, 9)) == [] and len(SkipBatches(batches, 9)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_preempt_worker(rank: int, world: int, port: int, frames: list, root: str, out: str,
                        sigterm_rank1_at: str | None) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from alod.engine import distributed, train

    distributed.init_distributed()
    ds = DetectionDataset(frames * 2, Path(root), train=True)  # 6 images a rank: 3 steps an epoch
    config = _config(epochs=2, lr=0.04)
    ckpt = Path(out) / "ckpt.pth"
    result: dict = {}
    if sigterm_rank1_at is not None:
        if rank == 1:
            train.maybe_fail = _sigterm_at(sigterm_rank1_at)
        torch.manual_seed(0)
        try:
            fit(build_detector("tiny"), ds, config, checkpoint_path=ckpt, progress=False)
        except Preempted as e:
            result["stopped"] = (e.epoch, e.step_in_epoch)
        train.maybe_fail = lambda *a: None
    torch.manual_seed(7 if sigterm_rank1_at is not None else 0)
    model = build_detector("tiny")
    result["epochs"] = [h["epoch"] for h in fit(model, ds, config, checkpoint_path=ckpt, progress=False)]
    result["state"] = model.state_dict()
    torch.save(result, Path(out) / f"rank{rank}.pt")
    distributed.cleanup()


@pytest.mark.slow
def test_sigterm_on_one_ddp_rank_stops_all_at_one_step_and_resumes_exactly(scenes, tmp_path: Path) -> None:
    frames, root = scenes
    runs = {"straight": None, "preempted": "0.0"}
    for name, at in runs.items():
        (tmp_path / name).mkdir()
        mp.spawn(_ddp_preempt_worker, args=(2, _free_port(), frames, str(root), str(tmp_path / name), at),
                 nprocs=2, join=True)
    ckpt = load_checkpoint(tmp_path / "preempted" / "ckpt.pth")
    assert ckpt["epoch"] == 1 and "step_in_epoch" not in ckpt  # finished after the resume
    for rank in (0, 1):
        straight = torch.load(tmp_path / "straight" / f"rank{rank}.pt")
        resumed = torch.load(tmp_path / "preempted" / f"rank{rank}.pt")
        # only rank 1 got SIGTERM (as its first step began); the ranks agree one step late
        assert resumed["stopped"] == (0, 2)
        assert straight["epochs"] == [0, 1] and resumed["epochs"] == [0, 1]
        a, b = straight["state"], resumed["state"]
        for k in a:
            assert torch.equal(a[k], b[k]), (rank, k)


def test_training_sums_whatever_losses_the_detector_returns() -> None:
    """Another detector's loss names (not Faster R-CNN's four) are trained on and reported as they come."""
    from alod.engine.train import train_one_epoch

    class TwoLosses(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, images, targets):
            return {"loss_focal": self.w ** 2, "loss_giou": 3 * self.w.abs()}

    model = TwoLosses()
    batches = [([torch.zeros(3, 4, 4)] * 2, [{}, {}]) for _ in range(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = train_one_epoch(model, opt, batches, "cpu", 0, progress=False)
    assert {"loss", "loss_focal", "loss_giou"} <= set(stats) and "loss_classifier" not in stats
    assert stats["loss"] == pytest.approx(stats["loss_focal"] + stats["loss_giou"])
    assert model.w.item() < 2.0  # both terms pulled the weight down
