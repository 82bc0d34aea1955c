"""The `cycle` step: N active-learning cycles; the oracle unveils ground truth or asks people.

The launcher (always rank 0 of the user's process) validates every input,
opens the MLflow run and, for nproc > 1, starts `torchrun` workers that read the
run id from the environment. Worker rank 0 is the only process that logs.
Each cycle: select -> record the labeled state (locally first, then as an
artifact) -> reset or warm-start the detector -> train -> evaluate -> log all
cycle metrics in one batch. A cycle counts as done once its `mAP50` is logged,
which is what `resume_run_id` resumes from.

With `oracle="files"` the labels come from people: after selecting, the run
exports the batch (`annotation/cycle_NNN/`: image list, COCO and Label Studio
tasks with the model's predictions as pre-annotations), tags itself
`alod.waiting_for_labels` and ends with status SCHEDULED. `alod import-labels`
merges what comes back into the run's label store (`labels/labels.json`);
resuming the run trains on exactly those labels once every selected image has one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd
import torch

from alod import annotation, forecast, locks, pictures, run_folder, tracking
from alod.active import protocol as protocols
from alod.active.bandit import AUTO, Exp3, parse_arms
from alod.active.samplers import SamplerContext, get_sampler, labeled_class_counts
from alod.active.scoring import frames_to_score
from alod.data.dataset import DetectionDataset
from alod.data.pool import LabeledState
from alod.engine import distributed
from alod.engine.distributed import default_device
from alod.engine.evaluate import evaluate
from alod.engine.flops import peak_flops, throughput_stats
from alod.engine.infer import predict_all
from alod.engine.train import TrainConfig, epochs_for_min_steps, fit
from alod.faults import maybe_fail
from alod.models import build_detector
from alod.params import ORACLES, CycleParams
from alod.run_folder import RunFolder
from alod.starting_weights import model_weights, weights_choice
from alod.steps.common import (
    LOSS_KEYS,
    PER_CLASS_PREFIX,
    THROUGHPUT_KEYS,
    Launch,
    flops_per_image,
    load_split,
    pictures_safely,
    print_worker_command,
    run_workers,
    score_pool,
)

PARAMS_ENV = "ALOD_CYCLE_PARAMS"
STOPPED_TAG = "alod.stopped_early"  # set when stop_when_flat ended the run before `cycles`: when and why


class CycleInputError(ValueError):
    """Bad cycle input found before any training starts."""


# --- launcher ----------------------------------------------------------------


def run_cycles(p: CycleParams) -> str:
    """Validate, open (or reopen) the run, then run the cycles here or under torchrun."""
    if p.protocol not in protocols.PROTOCOLS:
        raise CycleInputError(f"protocol must be one of {protocols.PROTOCOLS}, got {p.protocol!r}")
    if p.oracle not in ORACLES:
        raise CycleInputError(f"oracle must be one of {ORACLES}, got {p.oracle!r}")
    try:  # a bad file fails here, before anything trains
        p.weights = weights_choice(p.arch, p.weights)
    except (OSError, ValueError) as e:
        raise CycleInputError(str(e)) from None
    if p.budget_boxes < 0:
        raise CycleInputError(f"budget_boxes must be >= 0, got {p.budget_boxes}")
    if p.budget_boxes and p.oracle == "files":
        raise CycleInputError("budget_boxes needs the box count of an image before it is labeled: "
                              "use it with the simulated oracle, or budget in images (per_cycle) with files")
    tracking.setup(p.experiment)
    train = load_split(p.data, "train")
    work = Path(p.work_dir)
    ranking, ranking_tags = _resolve_ranking(p, train, work)
    if p.sampler is None:
        p.sampler = ranking_tags.get("alod.sampler") or ("boxcount" if p.protocol == "pool" else "unknown")
    if p.sampler == AUTO:
        if p.protocol != "pool":
            raise CycleInputError("sampler 'auto' chooses a sampler every cycle, so it needs protocol 'pool' "
                                  "(under 'batches' one ranking, made by one sampler, fixes every cycle's batch)")
        try:
            Exp3(parse_arms(p.auto_samplers), seed=p.seed)
        except ValueError as e:
            raise CycleInputError(str(e)) from None
        for arm in parse_arms(p.auto_samplers):
            get_sampler(arm)  # fail now on an unknown sampler
    elif p.protocol == "pool":
        get_sampler(p.sampler)  # fail now on an unknown sampler
    if not 0 <= p.target_map50 < 1:
        raise CycleInputError(f"target_map50 must be in [0, 1) (0: no target), got {p.target_map50}")
    if p.stop_min_gain < 0:
        raise CycleInputError(f"stop_min_gain must be >= 0, got {p.stop_min_gain}")
    _check_budget(p, len(train.frames), ranking)

    tags = {"alod.sampler": p.sampler, "alod.protocol": p.protocol, "alod.seed": p.seed,
            "alod.dataset": train.digest, "alod.code_version": tracking.code_version(), "alod.weights": p.weights,
            **({"alod.auto_samplers": ",".join(parse_arms(p.auto_samplers))} if p.sampler == AUTO else {}),
            **ranking_tags.get("lineage", {}), **p.extra_tags}
    resume_state = None
    if p.resume_run_id:
        tracking.get_run(p.resume_run_id)  # fails clearly when unknown
    with contextlib.ExitStack() as held:
        if p.resume_run_id:
            # Before the run's status changes: a second command on a run that is being worked on is
            # refused here, and never trains it twice.
            held.enter_context(locks.run_lock(work, p.resume_run_id))
            _remove_stale_temp_files(work, p.resume_run_id)
            held.enter_context(_run_tempdir(RunFolder(work, p.resume_run_id).path))
        with tracking.run("cycle", run_name=f"{p.sampler}-{p.protocol}-s{p.seed}", tags=tags,
                          run_id=p.resume_run_id) as run_id:
            if p.resume_run_id:
                resume_state = labeled_state_of_run(run_id, work)
            else:
                held.enter_context(locks.run_lock(work, run_id))  # a new run: nobody else knows its id yet
                held.enter_context(_run_tempdir(RunFolder(work, run_id).path))
                tracking.log_params(p.logged_params())
            p.run_id = run_id
            folder = RunFolder(work, run_id)
            folder.create()
            if ranking is not None:
                p.ranking_file = str(folder / run_folder.RANKING)
                ranking.to_parquet(p.ranking_file)
            if resume_state is not None:
                p.state_file = str(resume_state)
            if p.resume_run_id and p.sampler == AUTO:
                auto_state = auto_state_of_run(run_id, work)
                p.auto_state_file = str(auto_state) if auto_state else None
            if p.oracle == "files":
                with locks.labels_lock(work, run_id):
                    p.labels_file = str(sync_label_store(run_id, work))
                if ranking_tags.get("ranking_model"):  # cycle 1 has no model of its own yet
                    ckpt, _ = tracking.download_registered_checkpoint(ranking_tags["ranking_model"], work / "downloads")
                    p.ranking_checkpoint, p.ranking_model = str(ckpt), ranking_tags["ranking_model"]
            elif p.protocol == "batches" and ranking_tags.get("ranking_model"):
                try:  # only for pictures: without it, `picked` shows the ranking's scores alone
                    ckpt, _ = tracking.download_registered_checkpoint(ranking_tags["ranking_model"], work / "downloads")
                    p.ranking_checkpoint, p.ranking_model = str(ckpt), ranking_tags["ranking_model"]
                except (tracking.TrackingError, OSError) as e:
                    print(f"warning: the ranking model {ranking_tags['ranking_model']} is not available ({e}); "
                          "the picked sheets show scores without detections", flush=True)
            launch = Launch(p.nproc, p.nnodes, p.rdzv_endpoint, rdzv_id=run_id, max_restarts=p.max_restarts)
            if launch.needed:
                worker_params = json.dumps(dataclasses.asdict(p))
                if p.nnodes > 1:  # other nodes start their workers with exactly these (README: Scaling out)
                    print_worker_command(PARAMS_ENV, worker_params, run_id, launch, "alod.steps.cycle")
                elif os.environ.get("ALOD_DEBUG"):
                    print(f"{PARAMS_ENV}={worker_params}\n{tracking.RUN_ID_ENV}={run_id}", flush=True)
                run_workers(launch, "alod.steps.cycle", {PARAMS_ENV: worker_params, tracking.RUN_ID_ENV: run_id})
            else:
                cycle_worker(p)
            _describe(p, run_id)
        waiting = tracking.waiting_cycle(run_id)
        if waiting is not None:
            tracking.set_status(run_id, "SCHEDULED")
            print(f"run {run_id} waits for the labels of cycle {waiting}: the batch is in its artifacts under "
                  f"annotation/cycle_{waiting:03d}/ ({', '.join(annotation.EXPORT_FILES)}).\n"
                  f"Import them with `alod import-labels {run_id} LABELS`, then continue with "
                  f"`alod cycle --resume-run-id {run_id}` (the run's parameters are reused).", flush=True)
    return run_id


@contextlib.contextmanager
def _run_tempdir(run_dir: Path):
    """Temporary files of this command (MLflow stages every logged image, figure and dict in one) go to
    the run's `tmp/` folder, which the next resume empties: a `kill -9` leaves nothing in /tmp."""
    import tempfile

    tmp = run_dir / run_folder.TMP
    tmp.mkdir(parents=True, exist_ok=True)
    before, env_before = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)  # TMPDIR: for the torchrun workers too
    try:
        yield tmp
    finally:
        tempfile.tempdir = before
        if env_before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env_before


def _remove_stale_temp_files(work: Path, run_id: str) -> None:
    """What atomic writes a kill interrupted left in the run's folder, and what the killed command had
    in its temporary folder (the run lock is held: no other command of this run is writing)."""
    import shutil

    with locks.labels_lock(work, run_id):
        folder = RunFolder(work, run_id)
        removed = locks.remove_stale_temp_files(folder.path)
        tmp = folder / run_folder.TMP
        for entry in (tmp.iterdir() if tmp.is_dir() else []):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        print(f"removed {len(removed)} temporary file(s) of interrupted writes in {work / 'runs' / run_id}",
              flush=True)


def _describe(p: CycleParams, run_id: str) -> None:
    """A short description for the MLflow UI: what ran, on what, and the curve so far."""
    curve = tracking.metric_steps(run_id, "mAP50")
    labeled = tracking.metric_steps(run_id, "labeled_images")
    points = ", ".join(f"{int(labeled.get(c, 0))}: {v:.4f}" for c, v in sorted(curve.items()))
    start = Path(p.weights).name if p.weights not in (None, "none") else "random init"
    stopped = tracking.get_run(run_id).data.tags.get(STOPPED_TAG)
    tracking.set_tags({"mlflow.note.content": (
        f"**{p.sampler}**, protocol {p.protocol}, seed {p.seed}: {len(curve)} of {p.cycles} cycles x "
        f"{p.per_cycle} images on `{p.data}`, {p.arch} from {start}"
        f"{', reset every cycle' if p.reset else ', warm-started'}.\n\nval mAP50 by labeled images: "
        f"{points or 'no cycle finished yet'}" + (f"\n\nStopped early {stopped}" if stopped else ""))})


def label_store_path(run_id: str, work: Path) -> Path:
    return RunFolder(work, run_id) / run_folder.LABELS


def sync_label_store(run_id: str, work: Path) -> Path:
    """The run's bought labels as a local file: the artifact's, plus anything only here.

    The local copy is written before every upload, so it is never older than the
    artifact from this machine; labels only in the local copy (an upload that
    failed) win and are uploaded again.
    """
    local = label_store_path(run_id, work)
    store = annotation.LabelStore()
    try:
        remote = tracking.download_run_artifact(run_id, run_folder.LABELS.artifact, RunFolder(work, run_id).downloads)
        store = annotation.LabelStore.load(remote)
    except tracking.TrackingError:
        pass  # nothing imported yet (or only locally)
    mine = annotation.LabelStore.load(local) if local.is_file() else annotation.LabelStore()
    unsent = [n for n in mine.frames if n not in store or not annotation.same_labels(mine.frames[n], store.frames[n])]
    store.frames.update(mine.frames)
    store.save(local)
    if unsent:
        tracking.log_artifact_to(run_id, local, run_folder.LABELS.artifact_dir)
    return local


def _resolve_ranking(p: CycleParams, train, work: Path) -> tuple[pd.DataFrame | None, dict]:
    if p.ranking is None:
        if p.protocol == "batches":
            raise CycleInputError("protocol 'batches' needs a ranking: a rank run id or a parquet path")
        return None, {}
    tags: dict = {}
    source = p.ranking
    if Path(p.ranking).suffix == ".parquet" or Path(p.ranking).exists():
        if not Path(p.ranking).is_file():
            raise CycleInputError(f"ranking file {p.ranking} not found")
        frame = pd.read_parquet(p.ranking)
    else:
        run = tracking.get_run(p.ranking)
        if run.data.tags.get("alod.step") != "rank":
            raise CycleInputError(f"run {p.ranking} is a {run.data.tags.get('alod.step')!r} run, not a rank run")
        if run.data.tags.get("alod.dataset") not in (None, train.digest):
            raise CycleInputError(
                f"ranking run {p.ranking} was made on dataset {run.data.tags['alod.dataset']}, "
                f"but the training labels here have digest {train.digest}: rank this dataset first")
        path = tracking.download_run_artifact(p.ranking, "ranking/ranking.parquet", work / "downloads")
        frame = pd.read_parquet(path)
        tags["alod.sampler"] = run.data.tags.get("alod.sampler")
        tags["lineage"] = {"alod.rank_run": p.ranking}
        if run.data.tags.get("alod.model_name") and run.data.tags.get("alod.model_version"):
            tags["ranking_model"] = f"models:/{run.data.tags['alod.model_name']}/{run.data.tags['alod.model_version']}"
        source = f"run {p.ranking}"
    frame = protocols.validate_ranking(frame, source)
    pool = {f.name for f in train.frames}
    foreign = [n for n in frame["image"] if n not in pool]
    if foreign:
        raise CycleInputError(
            f"ranking ({source}) names {len(foreign)} image(s) that are not in the training labels, "
            f"e.g. {foreign[0]!r}: it was made on another dataset")
    return frame, tags


def _check_budget(p: CycleParams, pool_size: int, ranking: pd.DataFrame | None) -> None:
    if p.cycles < 1 or p.per_cycle < 1:
        raise CycleInputError("cycles and per_cycle must be >= 1")
    if p.cycles * p.per_cycle > pool_size:
        raise CycleInputError(
            f"budget {p.cycles} cycles x {p.per_cycle} images = {p.cycles * p.per_cycle} "
            f"exceeds the pool of {pool_size} training images")
    if p.protocol == "batches" and ranking is not None:
        batches = int(ranking["batch"].max())
        if p.cycles > batches:
            raise CycleInputError(f"{p.cycles} cycles but the ranking has only {batches} batch(es)")
        smallest = int(ranking[ranking["batch"] > 0].groupby("batch").size().min())
        if p.per_cycle > smallest:
            raise CycleInputError(
                f"per_cycle {p.per_cycle} exceeds the smallest ranking batch ({smallest} images)")


def labeled_state_of_run(run_id: str, work: Path) -> Path | None:
    """The labeled state of an interrupted run: local copy first, else its artifact."""
    return RunFolder(work, run_id).local_or_artifact(run_folder.LABELED)


def auto_state_of_run(run_id: str, work: Path) -> Path | None:
    """The bandit's recorded choices of an interrupted `auto` run: local copy first, else its artifact."""
    return RunFolder(work, run_id).local_or_artifact(run_folder.AUTO)


# --- worker (every rank) -----------------------------------------------------


def cycle_worker(p: CycleParams) -> None:
    distributed.init_distributed()
    device = default_device()
    train = load_split(p.data, "train")
    val = load_split(p.data, "val")
    ranking = pd.read_parquet(p.ranking_file) if p.ranking_file else None
    run_dir = RunFolder(p.work_dir, p.run_id).path

    with tracking.attached(p.run_id):
        _cycles(p, device, train, val, ranking, run_dir)
    distributed.cleanup()


def _cycles(p: CycleParams, device, train, val, ranking, run_dir: Path) -> None:
    main = distributed.is_main_process()
    by_name = train.by_name()
    done = tracking.metric_steps(p.run_id, "mAP50") if main else {}
    completed = max(distributed.all_gather_object(done)[0], default=0)
    # A restarted worker (torchrun --max-restarts) finds the state it wrote locally;
    # a resumed run on another machine gets it from the launcher (artifact).
    local_state = run_dir / run_folder.LABELED.local
    state_file = local_state if local_state.is_file() else p.state_file
    state = LabeledState.load(state_file) if state_file else LabeledState()
    # Keep labels bought in an unfinished cycle (the oracle was paid); drop nothing else.
    state = state.truncated(completed + 1)
    store = annotation.LabelStore.load(p.labels_file) if p.oracle == "files" and p.labels_file else None
    model, result, flops = None, None, None
    if completed and (not p.reset or p.protocol == "pool"):
        model = _load_cycle_checkpoint(run_dir, completed, p)
    # The same val images every cycle, so the UI's image slider shows progress.
    vis = pictures.fixed_val_sample(val.frames, 6, seed=0)
    pool_counts = pictures.class_counts(train.frames) if main else None
    ranker: dict = {}  # the ranking model, loaded for the first picture that needs it
    # The run's curve so far (rank 0): what the forecast, the stopping rule and `auto` read.
    curve = dict(done)
    history = {k: tracking.metric_steps(p.run_id, k) for k in ("labeled_images", "labeled_boxes")} if main else {}
    bandit = _load_bandit(p, run_dir) if p.sampler == AUTO else None
    stopped = _stopped_before(p, completed, curve, history) if main else None
    stopped = distributed.all_gather_object(stopped)[0]
    if stopped:
        print(f"run {p.run_id} stopped early {stopped}; nothing left to do", flush=True)
    elif completed >= p.cycles:
        print(f"all {p.cycles} cycles of run {p.run_id} are already done", flush=True)
    last_cycle = completed

    for cycle in range(completed + 1, p.cycles + 1):
        if stopped:
            break
        sampler = _cycle_sampler(p, cycle, bandit, curve, run_dir, main)
        picked = state.selected_in(cycle)
        if not picked:
            picked, scores = _select(p, cycle, ranking, train, state, model, device,
                                     store.frames if store is not None else by_name, sampler)
            maybe_fail("select", cycle)  # scored and chosen, not yet recorded
            state.add(picked, cycle)
            if main:
                pictures_safely(lambda: _log_selection(p, cycle, picked, scores, train, state,
                                                       _scorer(p, scores, model, ranker), device, sampler))
        if main:
            for entry in (run_folder.LABELED, run_folder.cycle_state(cycle)):
                state.save(run_dir / entry.local)
                tracking.log_artifact(run_dir / entry.local, entry.artifact_dir)
        maybe_fail("after_select", cycle)

        if store is not None:
            missing = annotation.missing_labels(store, state.to_dict())
            if missing:
                if main:
                    _request_labels(p, cycle, picked, missing, model, train, run_dir, device)
                maybe_fail("after_export", cycle)
                distributed.barrier()
                return
            tracking.set_waiting(p.run_id, None)
            labeled = [store.frames[n] for n in state.labeled()]
        else:
            labeled = [by_name[n] for n in state.labeled()]

        if model is None or p.reset:
            torch.manual_seed(p.seed)  # the same initial weights every cycle
            model = build_detector(p.arch, weights=model_weights(p.weights), finetune=True)
        model.to(device)
        if main and cycle == 1:
            # Step 0 of the image slider (where MLflow's image charts start): the starting weights on the
            # val sample, and what cycle 1 picked from.
            pictures_safely(lambda: _log_start_pictures(p, vis, val, model, ranking, train, ranker, device))
        train_epochs = epochs_for_min_steps(p.epochs, p.min_iterations, len(labeled), p.batch_size,
                                            distributed.get_env().world_size)
        config = TrainConfig(epochs=train_epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed + cycle,
                             workers=p.workers, device=str(device), clip_grad_norm=10.0,
                             amp=device.type == "cuda")  # bf16 autocast on GPUs
        # The checkpoint of an interrupted cycle resumes its training where it stopped.
        ckpt = run_dir / run_folder.cycle_checkpoint(cycle).local
        child_id = tracking.find_child_run(p.run_id, {"alod.cycle": cycle}) if main else None

        with tracking.run("cycle-epoch", run_name=f"{p.sampler}-s{p.seed}-cycle-{cycle}", nested=True, run_id=child_id,
                          tags={"alod.cycle": cycle, "alod.sampler": p.sampler,
                                "alod.protocol": p.protocol, "alod.seed": p.seed,
                                **({"alod.auto_choice": sampler} if bandit is not None else {})}) as child_id:
            def on_epoch_end(epoch: int, stats: dict) -> None:
                tracking.log_metrics({**{k: stats[k] for k in (*LOSS_KEYS, *THROUGHPUT_KEYS) if k in stats},
                                      "epoch_seconds": stats["seconds"], "epoch_images": stats["images"]},
                                     step=epoch + 1)

            def on_resumed_epoch(epoch: int, stats: dict) -> None:
                # killed between the epoch's checkpoint and its log: log it now, once
                if main and epoch + 1 not in tracking.metric_steps(child_id, "loss"):
                    on_epoch_end(epoch, stats)

            if flops is None:  # the same architecture every cycle: count once per run
                flops = flops_per_image(model, labeled, train.images) or 0.0
            fit(model, DetectionDataset(labeled, train.images, train=True), config,
                checkpoint_path=ckpt, resume=True, on_epoch_end=on_epoch_end, flops_per_image=flops or None,
                on_resumed_epoch=on_resumed_epoch)
            preds = predict_all(model, val.frames, val.images, device=device,
                                batch_size=p.eval_batch_size, workers=p.workers)
            maybe_fail("evaluate", cycle)  # trained, predicted, not yet scored or logged
            if main:
                result = evaluate(val.frames, preds)
                tracking.log_artifact(ckpt, "checkpoints")
        maybe_fail("after_train", cycle)
        if main:
            # From the child's per-epoch history, so a restarted cycle counts every epoch once.
            epochs = {key: tracking.metric_steps(child_id, key)
                      for key in (*LOSS_KEYS, "epoch_seconds", "epoch_images")}
            last_epoch = max(epochs["loss"], default=None)
            seconds = sum(epochs["epoch_seconds"].values())
            metrics = {k: epochs[k][last_epoch] for k in LOSS_KEYS if last_epoch in epochs[k]}
            metrics.update({
                "mAP50": result.mAP50, "mAP50_95": result.mAP50_95,
                "labeled_images": len(labeled), "train_epochs": train_epochs,
                # What the loop costs: images through a training step, and pool images scored to choose.
                "train_image_iterations": sum(epochs["epoch_images"].values()),
                "images_scored": _images_scored(p, cycle, train, state, sampler),
                "labeled_boxes": sum(f.num_trainable for f in labeled),
                "train_seconds": seconds,
                "images_per_second": sum(epochs["epoch_images"].values()) / max(seconds, 1e-9),
            })
            metrics.update(throughput_stats(metrics["images_per_second"], flops, peak_flops(device),
                                            devices=distributed.world_size()))
            metrics.update({f"{PER_CLASS_PREFIX}{name}": ap for name, ap in result.ap50_per_class.items()})
            pictures_safely(lambda: _log_cycle_pictures(cycle, vis, val, preds, result, labeled, pool_counts))
            curve[cycle] = result.mAP50
            history["labeled_images"][cycle] = metrics["labeled_images"]
            history["labeled_boxes"][cycle] = metrics["labeled_boxes"]
            if bandit is not None and cycle in bandit.choices:
                metrics.update(_auto_metrics(bandit, cycle, curve))
            # In the same batch as mAP50: a cycle is done with its forecast, or not at all.
            extra, decision, said = _forecast(p, curve, history)
            metrics.update(extra)
            tracking.log_metrics(metrics, step=cycle)
            print(f"cycle {cycle}/{p.cycles}: {len(labeled)} labeled images, mAP50 {result.mAP50:.4f}",
                  flush=True)
            print(said, flush=True)
            print(f"stop rule: {decision.reason}", flush=True)
            if p.stop_when_flat and decision.stop and cycle < p.cycles:
                stopped = _stop(p, cycle, decision)
        last_cycle = cycle
        maybe_fail("after_metrics", cycle)
        distributed.barrier()
        stopped = distributed.all_gather_object(stopped)[0]

    if main and p.register and result is not None:
        _register_final(p, run_dir, model, result, last_cycle)


def _request_labels(p: CycleParams, cycle: int, picked, missing: dict, model, train, run_dir: Path,
                    device) -> None:
    """Export the batch for annotators (pre-annotated by the latest model) and mark the run waiting."""
    from alod.engine.infer import predict
    from alod.models import detector_from_checkpoint

    version = f"{p.run_id}/cycle-{cycle - 1}"
    if model is None and cycle > 1:
        try:
            model = _load_cycle_checkpoint(run_dir, cycle - 1, p)
        except (tracking.TrackingError, OSError, ValueError) as e:
            print(f"no model for pre-annotations ({e}); exporting without them", flush=True)
    if model is None and p.ranking_checkpoint:  # the model that ranked the pool
        model, version = detector_from_checkpoint(p.ranking_checkpoint), str(p.ranking_model)
    predictions = None
    if model is not None:
        by_name = train.by_name()
        model.to(device).eval()
        preds = predict(model, DetectionDataset([by_name[n] for n in picked], train.images), device=device,
                        batch_size=p.eval_batch_size, progress=False)
        predictions = {f.name: f.scoring_at_least(p.preannotation_threshold) for f in preds}
    out = run_dir / "annotation" / f"cycle_{cycle:03d}"
    annotation.export_batch(picked, train.images, out, predictions=predictions,
                            url_prefix=p.annotation_url_prefix, model_version=version)
    if not p.annotation_url_prefix:
        print(annotation.empty_prefix_warning(train.images, p.data), flush=True)
    tracking.log_artifacts(out, f"annotation/cycle_{cycle:03d}")
    tracking.set_waiting(p.run_id, cycle)
    for waiting_cycle, names in sorted(missing.items()):
        print(f"cycle {waiting_cycle}: {len(names)} selected image(s) need labels", flush=True)


def _load_bandit(p: CycleParams, run_dir: Path) -> Exp3:
    """`auto`'s bandit with the choices this run recorded (local copy first, else the launcher's download)."""
    for path in (run_dir / run_folder.AUTO.local, p.auto_state_file):
        if path and Path(path).is_file():
            return Exp3.load(path)
    return Exp3(parse_arms(p.auto_samplers), seed=p.seed)


def _cycle_sampler(p: CycleParams, cycle: int, bandit: Exp3 | None, curve: dict, run_dir: Path, main: bool) -> str:
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
            tracking.log_artifact(run_dir / run_folder.AUTO.local, run_folder.AUTO.artifact_dir)
            tracking.set_tags({f"alod.auto.cycle_{cycle:03d}": choice.arm})
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


def _stop(p: CycleParams, cycle: int, decision: forecast.StopDecision) -> str:
    reason = f"after cycle {cycle} of {p.cycles} (stop_when_flat): {decision.reason}"
    tracking.set_tags({STOPPED_TAG: reason})
    print(f"stopping early {reason}", flush=True)
    return reason


def _stopped_before(p: CycleParams, completed: int, curve: dict, history: dict) -> str | None:
    """A resumed run that the rule stopped (or would have: a kill between the cycle's metrics and the tag)."""
    said = tracking.get_run(p.run_id).data.tags.get(STOPPED_TAG)
    if said or not p.stop_when_flat or not completed or completed >= p.cycles:
        return said
    _, decision, _ = _forecast(p, curve, history)
    return _stop(p, completed, decision) if decision.stop else None


def _select(p: CycleParams, cycle: int, ranking, train, state: LabeledState, model,
            device, labels_of: dict, sampler: str) -> tuple[list[str], dict[str, float] | None]:
    """The images to unveil, and the scores they were chosen by (None: a random pick).

    `labels_of` maps labeled image names to their labels (ground truth, or the imported ones)."""
    labeled = set(state.labeled())
    if p.protocol == "batches":
        if p.budget_boxes:
            order = protocols.order_from_batches(ranking, cycle, seed=p.seed, labeled=labeled)
            picked = _within_box_budget(p, order, labels_of)
        else:
            picked = protocols.select_from_batches(ranking, cycle, p.per_cycle, seed=p.seed, labeled=labeled)
        return picked, (None if cycle == 1 else dict(zip(ranking["image"], ranking["score"].astype(float))))
    names = [f.name for f in train.frames]
    scores = None
    if cycle > 1:
        to_score = frames_to_score(sampler, train.frames, labeled)
        ctx = SamplerContext(seed=p.seed, cycle=cycle, score_threshold=p.score_threshold,
                             names=[f.name for f in to_score], labeled=frozenset(labeled),
                             budget=p.per_cycle, horizon=p.per_cycle,
                             class_counts=labeled_class_counts([labels_of[n] for n in labeled]))
        model.to(device)
        pool_scores = dict(zip(ctx.names, score_pool(sampler, model, to_score, train.images, ctx,
                                                     device=device, batch_size=p.eval_batch_size,
                                                     workers=p.workers)))
        scores = [pool_scores.get(n, float("-inf")) for n in names]
        if distributed.is_main_process():
            tracking.log_dict({n: v for n, v in pool_scores.items() if n not in labeled},
                              f"scores/cycle_{cycle:03d}.json")
    if p.budget_boxes:
        order = protocols.order_from_pool(names, scores, cycle, seed=p.seed, labeled=labeled)
        picked = _within_box_budget(p, order, labels_of)
    else:
        picked = protocols.select_from_pool(names, scores, cycle, p.per_cycle, seed=p.seed, labeled=labeled)
    return picked, (pool_scores if scores is not None else None)


def _images_scored(p: CycleParams, cycle: int, train, state: LabeledState, sampler: str) -> int:
    """Pool images the cycle's selection ran the model on (the batches protocol ranks once, in `rank`)."""
    if p.protocol != "pool" or cycle == 1 or not get_sampler(sampler).needs_predictions:
        return 0
    return len(frames_to_score(sampler, train.frames, set(state.labeled(cycle - 1))))


def _within_box_budget(p: CycleParams, order: list[str], labels_of) -> list[str]:
    """Images in selection order until `budget_boxes` boxes: the simulated annotator is paid per box."""
    head = order[: p.per_cycle]
    return protocols.select_by_box_budget(head, {n: labels_of[n].num_trainable for n in head}, p.budget_boxes)


def _scorer(p: CycleParams, scores, model, ranker: dict):
    """The model whose detections a cycle's scores came from: the current one under `pool`, the one that
    ranked the pool under `batches` (None: a random pick, or no ranking model at hand)."""
    if scores is None:
        return None
    if p.protocol == "pool":
        return model
    return _ranking_model(p, ranker)


def _ranking_model(p: CycleParams, ranker: dict):
    if "model" not in ranker:
        from alod.models import detector_from_checkpoint

        ranker["model"] = detector_from_checkpoint(p.ranking_checkpoint) if p.ranking_checkpoint else None
    return ranker["model"]


def _log_start_pictures(p: CycleParams, vis, val, model, ranking, train, ranker: dict, device) -> None:
    """Step 0 of `val_gt_vs_pred` (the starting weights, zero labels) and of `picked` (what cycle 1
    draws from: batch 1 as ranked under `batches`, a sample of the pool under `pool`)."""
    import numpy as np

    with torch.random.fork_rng(devices=[]):  # pictures must not change the training's random stream
        tracking.log_image(pictures.cycle_pictures(model, vis, val.images, device=device)["gt_vs_pred"],
                           key="val_gt_vs_pred", step=0)
    if p.protocol == "batches" and ranking is not None:
        batch1 = ranking[ranking["batch"] == 1].sort_values("rank")
        scores = dict(zip(batch1["image"], batch1["score"].astype(float)))
        names, scorer = list(batch1["image"]), _ranking_model(p, ranker)
        what = f"in batch 1 as ranked by {p.sampler} (cycle 1 takes {p.per_cycle} of them at random)"
    else:
        rng = np.random.default_rng(p.seed)
        names = [train.frames[i].name for i in rng.permutation(len(train.frames))[:8]]
        scores, scorer, what = None, None, f"of the pool (cycle 1 takes {p.per_cycle} at random)"
    with torch.random.fork_rng(devices=[]):
        sheet = pictures.selection_pictures(
            names, scores, train.frames, train.images, sampler=p.sampler, model=scorer, device=device, low_n=0,
            seed=p.seed * 1000, cycle=0, score_threshold=p.score_threshold, batch_size=p.eval_batch_size,
            what=what)
    if scorer is not None:
        scorer.to("cpu")  # kept for later cycles' sheets, off the accelerator while training
    tracking.log_image(sheet["picked"], key="picked", step=0)


def _log_selection(p: CycleParams, cycle: int, picked, scores, train, state: LabeledState, model, device,
                   sampler: str) -> None:
    what = None
    if scores is None:
        what = "random from batch 1" if p.protocol == "batches" else "random"
    sheet = pictures.selection_pictures(
        picked, scores, train.frames, train.images, sampler=sampler, model=model, device=device,
        labeled=state.labeled(cycle - 1), seed=p.seed * 1000 + cycle, cycle=cycle,
        score_threshold=p.score_threshold, batch_size=p.eval_batch_size, what=what)
    if model is not None and p.protocol == "batches":
        model.to("cpu")  # the ranking model, kept for later cycles' sheets, off the accelerator while training
    tracking.log_image(sheet["picked"], key="picked", step=cycle)
    if "score_histogram" in sheet:
        tracking.log_figure(sheet["score_histogram"], f"plots/cycle_{cycle:03d}/score_histogram.png")


def _log_cycle_pictures(cycle: int, vis, val, preds, result, labeled, pool_counts) -> None:
    pics = pictures.cycle_pictures(None, vis, val.images, predictions=preds,
                                   ap50_per_class=result.ap50_per_class, map50=result.mAP50,
                                   labeled=labeled, pool=pool_counts, title=f"cycle {cycle}")
    tracking.log_image(pics["gt_vs_pred"], key="val_gt_vs_pred", step=cycle)
    for name in ("ap50_per_class", "class_histogram"):
        if name in pics:
            tracking.log_figure(pics[name], f"plots/cycle_{cycle:03d}/{name}.png")


def _load_cycle_checkpoint(run_dir: Path, cycle: int, p: CycleParams):
    from alod.models import detector_from_checkpoint

    folder, entry = RunFolder(p.work_dir, p.run_id), run_folder.cycle_checkpoint(cycle)
    path = folder / entry
    if not path.is_file():  # another machine: fetch it from the cycle's child run
        child = tracking.child_run(p.run_id, {"alod.cycle": cycle})
        path = tracking.download_run_artifact(child, entry.artifact, folder.downloads)
    return detector_from_checkpoint(path)


def _register_final(p: CycleParams, run_dir: Path, model, result, cycle: int) -> None:
    ckpt = run_dir / f"cycle_{cycle:03d}.pt"
    version = tracking.log_detector(ckpt, registered_name=tracking.DETECTOR_MODEL, version_tags={
        "sampler": p.sampler, "protocol": p.protocol, "cycle": cycle, "mAP50": f"{result.mAP50:.6f}",
        "seed": p.seed, "run_id": p.run_id})
    promoted = tracking.promote_if_better(tracking.DETECTOR_MODEL, version.version, "mAP50", result.mAP50)
    print(f"registered {tracking.DETECTOR_MODEL} version {version.version}"
          f"{' (now @champion)' if promoted else ''}", flush=True)


def _worker_main() -> None:
    params = json.loads(os.environ[PARAMS_ENV])
    cycle_worker(CycleParams(**params))


if __name__ == "__main__":
    _worker_main()
