"""The active-learning cycles as named phases, on every rank of a cycle run.

Each cycle: choose the sampler (`auto`) -> select -> record the labeled state
(locally first, then as an artifact) -> ask the oracle (a `files` run without
every label exports the batch and returns) -> reset or warm-start the detector
-> train (in the cycle's nested run) -> evaluate -> log all cycle metrics in one
batch, with the forecast and the stopping rule. A cycle counts as done once its
`mAP50` is logged, which is what a resumed run starts after.

What varies is an object, not a branch: the protocol (`alod.active.protocol`),
the oracle (`alod.oracles`) and where the loop reports (`alod.steps.hooks`: the
tracker, pictures and fault points). Only rank 0 logs; the collectives
(all_gather, barrier, and those inside scoring, training and prediction) run
on every rank in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alod import forecast, pictures, run_folder, tracking
from alod.active.bandit import AUTO, Exp3, parse_arms
from alod.active.protocol import Protocol, protocol_for
from alod.active.samplers import SamplerContext, get_sampler, labeled_class_counts
from alod.active.scoring import frames_to_score
from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.data.pool import LabeledState
from alod.engine import distributed
from alod.engine.evaluate import evaluate
from alod.engine.flops import peak_flops, throughput_stats
from alod.engine.infer import predict_all
from alod.engine.train import TrainConfig, epochs_for_min_steps, fit
from alod.models import build_detector, freeze_batchnorm, training_overrides
from alod.oracles import oracle_for
from alod.params import CycleParams
from alod.run_folder import RunFolder
from alod.starting_weights import model_weights
from alod.steps.common import LOSS_KEYS, PER_CLASS_PREFIX, THROUGHPUT_KEYS, flops_per_image, score_pool
from alod.steps.hooks import CycleHooks

STOPPED_TAG = "alod.stopped_early"  # set when stop_when_flat ended the run before `cycles`: when and why


def cycles(p: CycleParams, device: torch.device, train, val, ranking, run_dir: Path,
           hooks: CycleHooks | None = None) -> None:
    """Cycles `completed + 1 .. p.cycles` of run `p.run_id` (or until the stopping rule, or a `files`
    cycle that waits for labels). `train`, `val`: the splits (`alod.data.splits.load_split`)."""
    loop = CycleLoop.resume(p, device, train, val, ranking, run_dir, hooks or CycleHooks())
    stopped, last_cycle = loop.stopped_before(), loop.completed
    for cycle in range(loop.completed + 1, p.cycles + 1):
        if stopped:
            break
        sampler = loop.choose_sampler(cycle)
        picked = loop.select(cycle, sampler)
        loop.record(cycle)
        labeled = loop.ask_oracle(cycle, picked)
        if labeled is None:
            return  # the run waits for people's labels
        loop.prepare_model(cycle)
        with loop.cycle_run(cycle, sampler) as child_id:
            train_epochs = loop.train(cycle, labeled, child_id)
            preds = loop.evaluate(cycle)
        loop.hooks.fault("after_train", cycle)
        if loop.main:
            stopped = loop.log(cycle, sampler, labeled, preds, child_id, train_epochs)
        last_cycle = cycle
        loop.hooks.fault("after_metrics", cycle)
        distributed.barrier()
        stopped = distributed.all_gather_object(stopped)[0]
    if loop.main and p.register and loop.result is not None:
        loop.register_final(last_cycle)


@dataclass
class CycleLoop:
    """The state the phases share: the run's inputs, what it labeled, its model and its curve so far."""

    p: CycleParams
    device: torch.device
    train_split: Any
    val_split: Any
    ranking: Any
    run_dir: Path
    hooks: CycleHooks
    protocol: Protocol
    oracle: Any
    state: LabeledState
    completed: int  # cycles with a logged mAP50
    main: bool
    model: torch.nn.Module | None = None
    result: Any = None  # the last cycle's evaluation (rank 0)
    flops: float | None = None
    curve: dict = field(default_factory=dict)  # cycle -> mAP50 (rank 0): forecast, stop rule and `auto` read it
    history: dict = field(default_factory=dict)  # labeled_images / labeled_boxes -> cycle -> value (rank 0)
    bandit: Exp3 | None = None
    vis: list = field(default_factory=list)  # the same val images every cycle: the UI's image slider shows progress
    pool_counts: Any = None
    ranker: dict = field(default_factory=dict)  # the ranking model, loaded for the first picture that needs it

    @property
    def tracker(self):
        return self.hooks.tracker

    # --- resume ------------------------------------------------------------------

    @classmethod
    def resume(cls, p: CycleParams, device, train, val, ranking, run_dir: Path, hooks: CycleHooks) -> "CycleLoop":
        main = distributed.is_main_process()
        done = hooks.tracker.metric_steps(p.run_id, "mAP50") if main else {}
        completed = max(distributed.all_gather_object(done)[0], default=0)
        # A restarted worker (torchrun --max-restarts) finds the state it wrote locally;
        # a resumed run on another machine gets it from the launcher (artifact).
        local_state = run_dir / run_folder.LABELED.local
        state_file = local_state if local_state.is_file() else p.state_file
        state = LabeledState.load(state_file) if state_file else LabeledState()
        # Keep labels bought in an unfinished cycle (the oracle was paid); drop nothing else.
        state = state.truncated(completed + 1)
        oracle = oracle_for(p.oracle, ground_truth=train.by_name(), labels_file=p.labels_file)
        protocol = protocol_for(p.protocol, ranking=ranking, names=[f.name for f in train.frames])
        loop = cls(p, device, train, val, ranking, run_dir, hooks, protocol, oracle, state, completed, main,
                   curve=dict(done))
        if completed and protocol.keeps_model(p.reset):
            loop.model = loop.load_cycle_checkpoint(completed)
        loop.vis = pictures.fixed_val_sample(val.frames, 6, seed=0)
        loop.pool_counts = pictures.class_counts(train.frames) if main else None
        loop.history = {k: hooks.tracker.metric_steps(p.run_id, k)
                        for k in ("labeled_images", "labeled_boxes")} if main else {}
        loop.bandit = _load_bandit(p, run_dir) if p.sampler == AUTO else None
        return loop

    def stopped_before(self) -> str | None:
        """Why a resumed run has nothing left to do (the stopping rule ended it), on every rank; prints
        that, or that every cycle is done."""
        stopped = _stopped_before(self.p, self.completed, self.curve, self.history, self.tracker) if self.main else None
        stopped = distributed.all_gather_object(stopped)[0]
        if stopped:
            print(f"run {self.p.run_id} stopped early {stopped}; nothing left to do", flush=True)
        elif self.completed >= self.p.cycles:
            print(f"all {self.p.cycles} cycles of run {self.p.run_id} are already done", flush=True)
        return stopped

    def load_cycle_checkpoint(self, cycle: int):
        from alod.models import detector_from_checkpoint

        folder, entry = RunFolder(self.p.work_dir, self.p.run_id), run_folder.cycle_checkpoint(cycle)
        path = folder / entry
        if not path.is_file():  # another machine: fetch it from the cycle's child run
            path = self.tracker.download_child_artifact(self.p.run_id, {"alod.cycle": cycle}, entry.artifact,
                                                        folder.downloads)
        return detector_from_checkpoint(path)

    # --- select and record -------------------------------------------------------------

    def choose_sampler(self, cycle: int) -> str:
        return _cycle_sampler(self.p, cycle, self.bandit, self.curve, self.run_dir, self.main, self.tracker)

    def select(self, cycle: int, sampler: str) -> list[str]:
        """The images cycle `cycle` unveils; chosen once (a resumed cycle keeps its recorded pick)."""
        picked = self.state.selected_in(cycle)
        if picked:
            return picked
        scores = self.score_pool(cycle, sampler)
        labeled = set(self.state.labeled())
        labels_of = self.oracle.labels_of
        picked = self.protocol.select(cycle, self.p.per_cycle, seed=self.p.seed, labeled=labeled, scores=scores,
                                      budget_boxes=self.p.budget_boxes,
                                      box_count=lambda n: labels_of[n].num_trainable)  # the annotator is paid per box
        shown = self.protocol.shown_scores(cycle, scores)
        self.hooks.fault("select", cycle)  # scored and chosen, not yet recorded
        self.state.add(picked, cycle)
        if self.main:
            self.hooks.pictures(lambda: _log_selection(self, cycle, picked, shown, self._scorer(shown), sampler))
        return picked

    def score_pool(self, cycle: int, sampler: str) -> dict[str, float] | None:
        """The current model's scores of the pool images the sampler looks at (None: the protocol does
        not score this cycle). Every rank scores its shard."""
        if not self.protocol.scores_pool(cycle):
            return None
        p, labeled = self.p, set(self.state.labeled())
        to_score = frames_to_score(sampler, self.train_split.frames, labeled)
        ctx = SamplerContext(seed=p.seed, cycle=cycle, score_threshold=p.score_threshold,
                             names=[f.name for f in to_score], labeled=frozenset(labeled),
                             budget=p.per_cycle, horizon=p.per_cycle,
                             class_counts=labeled_class_counts([self.oracle.labels_of[n] for n in labeled]))
        self.model.to(self.device)  # type: ignore[union-attr]
        scores = dict(zip(ctx.names, score_pool(sampler, self.model, to_score, self.train_split.images, ctx,
                                                device=self.device, batch_size=p.eval_batch_size,
                                                workers=p.workers)))
        if self.main:
            self.tracker.log_dict({n: v for n, v in scores.items() if n not in labeled},
                                  f"scores/cycle_{cycle:03d}.json")
        return scores

    def record(self, cycle: int) -> None:
        """The labeled state, locally first, then as the run's artifacts (the latest and this cycle's)."""
        if self.main:
            for entry in (run_folder.LABELED, run_folder.cycle_state(cycle)):
                self.state.save(self.run_dir / entry.local)
                self.tracker.log_artifact(self.run_dir / entry.local, entry.artifact_dir)
        self.hooks.fault("after_select", cycle)

    # --- ask the oracle ------------------------------------------------------------

    def ask_oracle(self, cycle: int, picked: list[str]) -> list[Frame] | None:
        """The labels of every selected image, or None once the oracle has been asked for the missing ones."""
        missing = self.oracle.missing(self.state)
        if missing:
            if self.main:
                self.request_labels(cycle, picked, missing)
            self.hooks.fault("after_export", cycle)
            distributed.barrier()
            return None
        self.oracle.labels_arrived(self.tracker, self.p.run_id)
        return self.oracle.labeled_frames(self.state)

    def request_labels(self, cycle: int, picked: list[str], missing: dict) -> None:
        """Export the batch for annotators, pre-annotated by the latest model, and mark the run waiting."""
        p = self.p
        model, version = self.preannotation_model(cycle)
        predictions = None
        if model is not None:
            from alod.engine.infer import predict

            by_name = self.train_split.by_name()
            model.to(self.device).eval()
            preds = predict(model, DetectionDataset([by_name[n] for n in picked], self.train_split.images),
                            device=self.device, batch_size=p.eval_batch_size, progress=False)
            predictions = {f.name: f.scoring_at_least(p.preannotation_threshold) for f in preds}
        self.oracle.request(cycle, picked, missing, images=self.train_split.images,
                            out=self.run_dir / "annotation" / f"cycle_{cycle:03d}", predictions=predictions,
                            model_version=version, url_prefix=p.annotation_url_prefix, data=p.data,
                            tracker=self.tracker, run_id=p.run_id)

    def preannotation_model(self, cycle: int) -> tuple[Any, str]:
        """The model whose detections pre-annotate the batch (the last cycle's, else the ranking's) and
        its version label."""
        from alod.models import detector_from_checkpoint

        model, version = self.model, f"{self.p.run_id}/cycle-{cycle - 1}"
        if model is None and cycle > 1:
            try:
                model = self.load_cycle_checkpoint(cycle - 1)
            except (tracking.TrackingError, OSError, ValueError) as e:
                print(f"no model for pre-annotations ({e}); exporting without them", flush=True)
        if model is None and self.p.ranking_checkpoint:  # the model that ranked the pool
            model, version = detector_from_checkpoint(self.p.ranking_checkpoint), str(self.p.ranking_model)
        return model, version

    # --- train and evaluate --------------------------------------------------------

    def prepare_model(self, cycle: int) -> None:
        """A fresh detector (every cycle with `reset`, the same initial weights) or the last one, on the device."""
        p = self.p
        if self.model is None or p.reset:
            torch.manual_seed(p.seed)  # the same initial weights every cycle
            self.model = build_detector(p.arch, weights=model_weights(p.weights), finetune=True,
                                        **training_overrides(p.roi_samples))
        if p.freeze_batchnorm:  # also a warm-started model reloaded from its checkpoint on resume
            freeze_batchnorm(self.model)
        self.model.to(self.device)
        if self.main and cycle == 1:
            # Step 0 of the image slider (where MLflow's image charts start): the starting weights on the
            # val sample, and what cycle 1 picked from.
            self.hooks.pictures(lambda: _log_start_pictures(self))

    def cycle_run(self, cycle: int, sampler: str):
        """The cycle's nested run (reopened when an interrupted cycle resumes): its epochs and checkpoint."""
        p = self.p
        child_id = self.tracker.find_child_run(p.run_id, {"alod.cycle": cycle}) if self.main else None
        return self.tracker.nested_run(
            "cycle-epoch", run_name=f"{p.sampler}-s{p.seed}-cycle-{cycle}", run_id=child_id,
            tags={"alod.cycle": cycle, "alod.sampler": p.sampler, "alod.protocol": p.protocol, "alod.seed": p.seed,
                  **({"alod.auto_choice": sampler} if self.bandit is not None else {})})

    def checkpoint(self, cycle: int) -> Path:
        return self.run_dir / run_folder.cycle_checkpoint(cycle).local

    def train(self, cycle: int, labeled: list[Frame], child_id: str | None) -> int:
        """Train on the labeled images (resuming an interrupted cycle's checkpoint), logging each epoch to
        the cycle's run; returns the epochs trained."""
        p, tracker, main = self.p, self.tracker, self.main
        train_epochs = epochs_for_min_steps(p.epochs, p.min_iterations, len(labeled), p.batch_size,
                                            distributed.get_env().world_size)
        config = TrainConfig(epochs=train_epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed + cycle,
                             workers=p.workers, device=str(self.device), clip_grad_norm=10.0,
                             amp=self.device.type == "cuda")  # bf16 autocast on GPUs

        def on_epoch_end(epoch: int, stats: dict) -> None:
            tracker.log_metrics({**{k: stats[k] for k in (*LOSS_KEYS, *THROUGHPUT_KEYS) if k in stats},
                                 "epoch_seconds": stats["seconds"], "epoch_images": stats["images"]}, step=epoch + 1)

        def on_resumed_epoch(epoch: int, stats: dict) -> None:
            # killed between the epoch's checkpoint and its log: log it now, once
            if main and epoch + 1 not in tracker.metric_steps(child_id, "loss"):
                on_epoch_end(epoch, stats)

        images = self.train_split.images
        if self.flops is None:  # the same architecture every cycle: count once per run
            self.flops = flops_per_image(self.model, labeled, images) or 0.0
        fit(self.model, DetectionDataset(labeled, images, train=True), config,
            checkpoint_path=self.checkpoint(cycle), resume=True, on_epoch_end=on_epoch_end,
            flops_per_image=self.flops or None, on_resumed_epoch=on_resumed_epoch)
        return train_epochs

    def evaluate(self, cycle: int) -> list[Frame]:
        """Val predictions on every rank; rank 0 scores them and uploads the cycle's checkpoint."""
        p, val = self.p, self.val_split
        preds = predict_all(self.model, val.frames, val.images, device=self.device,
                            batch_size=p.eval_batch_size, workers=p.workers)
        self.hooks.fault("evaluate", cycle)  # trained, predicted, not yet scored or logged
        if self.main:
            self.result = evaluate(val.frames, preds)
            self.tracker.log_artifact(self.checkpoint(cycle), "checkpoints")
        return preds

    # --- log (rank 0) --------------------------------------------------------------------

    def log(self, cycle: int, sampler: str, labeled: list[Frame], preds, child_id: str,
            train_epochs: int) -> str | None:
        """Every metric of the cycle in one batch (with the forecast: a cycle is done with it, or not at
        all), its pictures, and the stopping rule's verdict (the reason, when it stops the run)."""
        p, result = self.p, self.result
        metrics = self.cycle_metrics(cycle, sampler, labeled, child_id, train_epochs)
        self.hooks.pictures(lambda: _log_cycle_pictures(self, cycle, preds, labeled))
        self.curve[cycle] = result.mAP50
        self.history["labeled_images"][cycle] = metrics["labeled_images"]
        self.history["labeled_boxes"][cycle] = metrics["labeled_boxes"]
        if self.bandit is not None and cycle in self.bandit.choices:
            metrics.update(_auto_metrics(self.bandit, cycle, self.curve))
        extra, decision, said = _forecast(p, self.curve, self.history)
        metrics.update(extra)
        self.tracker.log_metrics(metrics, step=cycle)
        print(f"cycle {cycle}/{p.cycles}: {len(labeled)} labeled images, mAP50 {result.mAP50:.4f}", flush=True)
        print(said, flush=True)
        print(f"stop rule: {decision.reason}", flush=True)
        if p.stop_when_flat and decision.stop and cycle < p.cycles:
            return _stop(p, cycle, decision, self.tracker)
        return None

    def cycle_metrics(self, cycle: int, sampler: str, labeled: list[Frame], child_id: str,
                      train_epochs: int) -> dict[str, float]:
        # From the child's per-epoch history, so a restarted cycle counts every epoch once.
        epochs = {key: self.tracker.metric_steps(child_id, key) for key in (*LOSS_KEYS, "epoch_seconds", "epoch_images")}
        last_epoch = max(epochs["loss"], default=None)
        seconds = sum(epochs["epoch_seconds"].values())
        result = self.result
        metrics = {k: epochs[k][last_epoch] for k in LOSS_KEYS if last_epoch in epochs[k]}
        metrics.update({
            "mAP50": result.mAP50, "mAP50_95": result.mAP50_95,
            "labeled_images": len(labeled), "train_epochs": train_epochs,
            # What the loop costs: images through a training step, and pool images scored to choose.
            "train_image_iterations": sum(epochs["epoch_images"].values()),
            "images_scored": self.images_scored(cycle, sampler),
            "labeled_boxes": sum(f.num_trainable for f in labeled),
            "train_seconds": seconds,
            "images_per_second": sum(epochs["epoch_images"].values()) / max(seconds, 1e-9),
        })
        metrics.update(throughput_stats(metrics["images_per_second"], self.flops, peak_flops(self.device),
                                        devices=distributed.world_size()))
        metrics.update({f"{PER_CLASS_PREFIX}{name}": ap for name, ap in result.ap50_per_class.items()})
        return metrics

    def images_scored(self, cycle: int, sampler: str) -> int:
        """Pool images the cycle's selection ran the model on (the batches protocol ranks once, in `rank`)."""
        if not self.protocol.scores_pool(cycle) or not get_sampler(sampler).needs_predictions:
            return 0
        return len(frames_to_score(sampler, self.train_split.frames, set(self.state.labeled(cycle - 1))))

    def register_final(self, cycle: int) -> None:
        p, result = self.p, self.result
        ckpt = self.run_dir / f"cycle_{cycle:03d}.pt"
        version, promoted = self.tracker.register_detector(ckpt, {
            "sampler": p.sampler, "protocol": p.protocol, "cycle": cycle, "mAP50": f"{result.mAP50:.6f}",
            "seed": p.seed, "run_id": p.run_id}, result.mAP50)
        print(f"registered {self.tracker.detector_model} version {version}"
              f"{' (now @champion)' if promoted else ''}", flush=True)

    # --- the models behind the pictures -----------------------------------------------

    def _scorer(self, scores):
        """The model whose detections a cycle's scores came from: the current one when the protocol scores
        the pool, the one that ranked it otherwise (None: a random pick, or no ranking model at hand)."""
        if scores is None:
            return None
        return self.model if self.protocol.scores_each_cycle else self.ranking_model()

    def ranking_model(self):
        if "model" not in self.ranker:
            from alod.models import detector_from_checkpoint

            ckpt = self.p.ranking_checkpoint
            self.ranker["model"] = detector_from_checkpoint(ckpt) if ckpt else None
        return self.ranker["model"]


# --- `auto`: a bandit chooses the sampler -------------------------------------------


def _load_bandit(p: CycleParams, run_dir: Path) -> Exp3:
    """`auto`'s bandit with the choices this run recorded (local copy first, else the launcher's download)."""
    for path in (run_dir / run_folder.AUTO.local, p.auto_state_file):
        if path and Path(path).is_file():
            return Exp3.load(path)
    return Exp3(parse_arms(p.auto_samplers), seed=p.seed)


def _cycle_sampler(p: CycleParams, cycle: int, bandit: Exp3 | None, curve: dict, run_dir: Path, main: bool,
                   tracker) -> str:
    """The sampler that picks this cycle's images: `p.sampler`, or under `auto` the bandit's choice (cycle 1
    picks at random: there is no model to score with yet). A choice is recorded before anything is picked."""
    if bandit is None:
        return p.sampler
    if cycle == 1:
        return "random"
    arm = None
    if main:
        known = cycle in bandit.choices
        choice = bandit.choose(cycle, curve)
        if not known:
            bandit.save(run_dir / run_folder.AUTO.local)
            tracker.log_artifact(run_dir / run_folder.AUTO.local, run_folder.AUTO.artifact_dir)
            tracker.set_tags({f"alod.auto.cycle_{cycle:03d}": choice.arm})
        print(bandit.explain(choice, curve) + (" [recorded before the interruption]" if known else ""), flush=True)
        arm = choice.arm
    return distributed.all_gather_object(arm)[0]


def _metric_safe(name: str) -> str:
    return name.replace(":", "_")


def _auto_metrics(bandit: Exp3, cycle: int, curve: dict) -> dict[str, float]:
    """Why `auto` chose what it chose in `cycle`, and what it brought: `auto.arm` (index in the arms),
    `auto.p.<sampler>` (the probabilities it drew from), `auto.gain` and `auto.reward`."""
    ch = bandit.choices[cycle]
    out = {"auto.arm": float(bandit.arms.index(ch.arm)),
           **{f"auto.p.{_metric_safe(a)}": v for a, v in ch.probs.items()}}
    if cycle - 1 in curve:
        gain = curve[cycle] - curve[cycle - 1]
        out.update({"auto.gain": gain, "auto.reward": bandit.reward(gain)})
    return out


# --- the forecast and the stopping rule -----------------------------------------------------


def _forecast(p: CycleParams, curve: dict, history: dict) -> tuple[dict, forecast.StopDecision, str]:
    """Forecast metrics of the run's curve so far (against labeled images, and boxes), the stopping rule's
    decision and a printable summary. Fewer than three cycles: no metrics, and the reason."""
    cycles = sorted(curve)
    y = [curve[c] for c in cycles]
    images = [history["labeled_images"].get(c, float("nan")) for c in cycles]
    target = p.target_map50 or None
    try:
        fc = forecast.forecast(images, y, target=target, seed=p.seed)
    except forecast.NotEnoughPoints as e:
        return {}, forecast.StopDecision(False, f"keep labeling: {e}"), f"forecast: {e}"
    metrics = fc.metrics("forecast_")
    decision = forecast.stop_rule(images, y, min_gain=p.stop_min_gain, horizon=p.per_cycle, fc=fc)
    metrics["forecast_gain_per_1000"] = decision.gain_per_1000
    if math.isfinite(decision.gain_high):
        metrics["forecast_gain_per_1000.high"] = decision.gain_high
    said = fc.describe("labeled images")
    try:
        boxes = [history["labeled_boxes"].get(c, float("nan")) for c in cycles]
        fcb = forecast.forecast(boxes, y, target=target, seed=p.seed)
        metrics.update(fcb.metrics("forecast_boxes_", "forecast_boxes_to_target"))
    except forecast.NotEnoughPoints:
        pass
    return {k: v for k, v in metrics.items() if math.isfinite(v)}, decision, said


def _stop(p: CycleParams, cycle: int, decision: forecast.StopDecision, tracker) -> str:
    reason = f"after cycle {cycle} of {p.cycles} (stop_when_flat): {decision.reason}"
    tracker.set_tags({STOPPED_TAG: reason})
    print(f"stopping early {reason}", flush=True)
    return reason


def _stopped_before(p: CycleParams, completed: int, curve: dict, history: dict, tracker) -> str | None:
    """A resumed run that the rule stopped (or would have: a kill between the cycle's metrics and the tag)."""
    said = tracker.run_tags(p.run_id).get(STOPPED_TAG)
    if said or not p.stop_when_flat or not completed or completed >= p.cycles:
        return said
    _, decision, _ = _forecast(p, curve, history)
    return _stop(p, completed, decision, tracker) if decision.stop else None


# --- pictures (rank 0, through hooks.pictures: a drawing failure is only a warning) ------------------


def _log_start_pictures(loop: CycleLoop) -> None:
    """Step 0 of `val_gt_vs_pred` (the starting weights, zero labels) and of `picked` (what cycle 1
    draws from: batch 1 as ranked under `batches`, a sample of the pool under `pool`)."""
    p, train, device, tracker = loop.p, loop.train_split, loop.device, loop.tracker
    with torch.random.fork_rng(devices=[]):  # pictures must not change the training's random stream
        tracker.log_image(pictures.cycle_pictures(loop.model, loop.vis, loop.val_split.images,
                                                  device=device)["gt_vs_pred"], key="val_gt_vs_pred", step=0)
    names, scores, what = loop.protocol.first_draw(p.seed, sampler=p.sampler, k=p.per_cycle)
    scorer = loop.ranking_model() if scores is not None else None
    with torch.random.fork_rng(devices=[]):
        sheet = pictures.selection_pictures(
            names, scores, train.frames, train.images, sampler=p.sampler, model=scorer, device=device, low_n=0,
            seed=p.seed * 1000, cycle=0, score_threshold=p.score_threshold, batch_size=p.eval_batch_size,
            what=what)
    if scorer is not None:
        scorer.to("cpu")  # kept for later cycles' sheets, off the accelerator while training
    tracker.log_image(sheet["picked"], key="picked", step=0)


def _log_selection(loop: CycleLoop, cycle: int, picked, scores, model, sampler: str) -> None:
    p, train = loop.p, loop.train_split
    what = loop.protocol.random_pick_label if scores is None else None
    sheet = pictures.selection_pictures(
        picked, scores, train.frames, train.images, sampler=sampler, model=model, device=loop.device,
        labeled=loop.state.labeled(cycle - 1), seed=p.seed * 1000 + cycle, cycle=cycle,
        score_threshold=p.score_threshold, batch_size=p.eval_batch_size, what=what)
    if model is not None and not loop.protocol.scores_each_cycle:
        model.to("cpu")  # the ranking model, kept for later cycles' sheets, off the accelerator while training
    loop.tracker.log_image(sheet["picked"], key="picked", step=cycle)
    if "score_histogram" in sheet:
        loop.tracker.log_figure(sheet["score_histogram"], f"plots/cycle_{cycle:03d}/score_histogram.png")


def _log_cycle_pictures(loop: CycleLoop, cycle: int, preds, labeled) -> None:
    result = loop.result
    pics = pictures.cycle_pictures(None, loop.vis, loop.val_split.images, predictions=preds,
                                   ap50_per_class=result.ap50_per_class, map50=result.mAP50,
                                   labeled=labeled, pool=loop.pool_counts, title=f"cycle {cycle}")
    loop.tracker.log_image(pics["gt_vs_pred"], key="val_gt_vs_pred", step=cycle)
    for name in ("ap50_per_class", "class_histogram"):
        if name in pics:
            loop.tracker.log_figure(pics[name], f"plots/cycle_{cycle:03d}/{name}.png")
