"""The `pretrain` step: train on a seeded fraction of the training split, register the model.

Like `rank` and `cycle`, with nproc > 1 (or nnodes > 1, or max_restarts) the
command is the launcher: it opens the run and starts torchrun workers
(`python -m alod.steps.pretrain`) that attach to it; worker rank 0 logs.
"""

from __future__ import annotations

import contextlib
import json
import os

import torch

from alod import locks, pictures, plots, run_folder, tracking
from alod.data.dataset import DetectionDataset
from alod.data.splits import load_split
from alod.engine import distributed
from alod.engine.distributed import default_device
from alod.engine.evaluate import evaluate
from alod.engine.infer import predict_all
from alod.engine.train import TrainConfig, fit
from alod.models import build_detector, freeze_batchnorm, save_checkpoint, training_overrides
from alod.params import PretrainParams
from alod.run_folder import RunFolder
from alod.starting_weights import model_weights, weights_choice
from alod.steps.common import (
    LOSS_KEYS,
    PER_CLASS_PREFIX,
    THROUGHPUT_KEYS,
    Launch,
    flops_per_image,
    launch_workers,
    pictures_safely,
    subset,
)

PARAMS_ENV = "ALOD_PRETRAIN_PARAMS"


def run_pretrain(p: PretrainParams) -> tuple[str, object]:
    """Returns (run id, registered ModelVersion or None)."""
    p.weights = weights_choice(p.arch, p.weights)  # a bad file fails here, before anything trains
    if p.epochs < 0 or (p.epochs == 0 and model_weights(p.weights) is None):
        raise ValueError(f"epochs must be >= 1 (or 0 with starting weights, to register them as they are), "
                         f"got {p.epochs} with weights {p.weights!r}")
    launch = Launch(p.nproc, p.nnodes, p.rdzv_endpoint, max_restarts=p.max_restarts)
    launched = os.environ.get(tracking.RUN_ID_ENV)  # in a torchrun worker: the run the launcher opened
    if not launched:
        tracking.setup(p.experiment)
    else:
        distributed.init_distributed()
    train = load_split(p.data, "train")
    frames = subset(train.frames, p.fraction, p.seed)
    tags = {"alod.seed": p.seed, "alod.dataset": train.digest, "alod.arch": p.arch, "alod.weights": p.weights,
            "alod.code_version": tracking.code_version()}
    if p.resume_run_id and not launched:
        tracking.get_run(p.resume_run_id)  # fails clearly when unknown
    with contextlib.ExitStack() as held:
        # The process that logs holds the run: the launcher, or the only process (never a worker: the
        # launcher's lock would refuse it).
        lock = distributed.is_main_process() and not launched
        if p.resume_run_id and lock:  # refused here, before the run's status changes, when another process has it
            held.enter_context(locks.run_lock(p.work_dir, p.resume_run_id))
        opened = (tracking.attached(launched) if launched else
                  tracking.run("pretrain", run_name=f"pretrain-{p.arch}-s{p.seed}", tags=tags,
                               run_id=p.resume_run_id))
        with opened as run_id:
            run_id = launched or run_id
            if not p.resume_run_id and lock:
                held.enter_context(locks.run_lock(p.work_dir, run_id))
            if not launched:
                tracking.log_params({**p.logged_params(), "train_images": len(frames)})
            if launch.needed:
                return run_id, _launch_workers(p, launch, run_id)
            return run_id, _pretrain(p, run_id, train, frames, restartable=bool(launched))


def _launch_workers(p: PretrainParams, launch: Launch, run_id: str):
    """Start the torchrun workers on the open run, wait, and return the version they registered."""
    launch_workers(launch, "alod.steps.pretrain", PARAMS_ENV, p, run_id)
    if not p.register:
        return None
    version = tracking.registered_version_of_run(tracking.PRETRAINED_MODEL, run_id)
    return tracking.resolve_model_version(f"models:/{tracking.PRETRAINED_MODEL}/{version}")


def _pretrain(p: PretrainParams, run_id: str, train, frames, *, restartable: bool):
    """Train, evaluate, log and register, on every process of the run (rank 0 logs). `restartable`: a
    torchrun worker, which continues from the checkpoint a failed worker left."""
    device = default_device()
    val = load_split(p.data, "val")
    run_dir = RunFolder(p.work_dir, run_id).path
    ckpt = run_dir / run_folder.PRETRAINED.local
    resume = bool(p.resume_run_id) or (restartable and ckpt.is_file())
    if p.resume_run_id and not ckpt.is_file() and distributed.is_main_process():
        print(f"note: no checkpoint of run {run_id} in {run_dir}: training starts again at epoch 1", flush=True)
    torch.manual_seed(p.seed)
    model = build_detector(p.arch, weights=model_weights(p.weights), finetune=True,
                           **training_overrides(p.roi_samples)).to(device)
    if p.freeze_batchnorm:
        freeze_batchnorm(model)
    config = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed,
                         workers=p.workers, device=str(device), clip_grad_norm=10.0,
                         amp=device.type == "cuda")  # bf16 autocast on GPUs
    last_eval: dict = {}
    vis = pictures.fixed_val_sample(val.frames, 6, seed=0)

    def on_epoch_end(epoch: int, stats: dict) -> None:
        metrics = {k: stats[k] for k in (*LOSS_KEYS, *THROUGHPUT_KEYS) if k in stats}
        if (epoch + 1) % p.eval_every == 0 or epoch + 1 == p.epochs:
            preds = predict_all(model, val.frames, val.images, device=device,
                                batch_size=p.eval_batch_size, workers=p.workers)
            result = evaluate(val.frames, preds)
            last_eval["result"] = result
            if distributed.is_main_process():
                pictures_safely(lambda: tracking.log_image(pictures.cycle_pictures(
                    None, vis, val.images, predictions=preds, title=f"epoch {epoch + 1}")["gt_vs_pred"],
                    key="val_gt_vs_pred", step=epoch + 1))
            metrics.update({"mAP50": result.mAP50, "mAP50_95": result.mAP50_95})
            model.train()
        tracking.log_metrics(metrics, step=epoch + 1)

    def on_resumed_epoch(epoch: int, stats: dict) -> None:
        # Killed between the epoch's checkpoint and its log: log it now, once. Every rank agrees, since
        # the evaluation in on_epoch_end is sharded over them.
        unlogged = (epoch + 1 not in tracking.metric_steps(run_id, "loss")) if distributed.is_main_process() else None
        if distributed.all_gather_object(unlogged)[0]:
            on_epoch_end(epoch, stats)

    if distributed.is_main_process() and not resume:
        # Step 0 of the image slider (where MLflow's image charts start): the starting weights.
        with torch.random.fork_rng(devices=[]):
            pictures_safely(lambda: tracking.log_image(pictures.cycle_pictures(
                model, vis, val.images, device=device)["gt_vs_pred"], key="val_gt_vs_pred", step=0))
    if p.epochs == 0:  # the starting weights as they are (e.g. the source model ranks the target pool)
        if distributed.is_main_process():
            save_checkpoint(ckpt, model=model, epoch=0, config={"weights": p.weights})
        distributed.barrier()
    else:
        fit(model, DetectionDataset(frames, train.images, train=True), config, checkpoint_path=ckpt,
            resume=resume, on_epoch_end=on_epoch_end, on_resumed_epoch=on_resumed_epoch,
            flops_per_image=flops_per_image(model, frames, train.images))
    if "result" not in last_eval:  # resumed after the last epoch: evaluate what the checkpoint holds
        last_eval["result"] = evaluate(val.frames, predict_all(model, val.frames, val.images, device=device,
                                                               batch_size=p.eval_batch_size, workers=p.workers))
    result = last_eval["result"]
    if p.epochs == 0:
        tracking.log_metrics({"mAP50": result.mAP50, "mAP50_95": result.mAP50_95}, step=0)
    tracking.log_metrics({f"{PER_CLASS_PREFIX}{k}": v for k, v in result.ap50_per_class.items()}, step=p.epochs)
    tracking.log_artifact(ckpt, "checkpoints")
    if distributed.is_main_process():
        pictures_safely(lambda: tracking.log_figure(plots.ap_bars(result.ap50_per_class, mean=result.mAP50),
                                              "plots/ap50_per_class.png"))
        print(result.as_table(), flush=True)
    version = None
    if p.register and distributed.is_main_process():
        version = tracking.log_detector(ckpt, registered_name=tracking.PRETRAINED_MODEL, version_tags={
            "arch": p.arch, "mAP50": f"{result.mAP50:.6f}", "seed": p.seed, "run_id": run_id,
            "fraction": p.fraction})
        tracking.set_alias(tracking.PRETRAINED_MODEL, tracking.CHAMPION, version.version)
        tracking.set_tags({"alod.registered_version": version.version})
        print(f"registered {tracking.PRETRAINED_MODEL} version {version.version} as @champion",
              flush=True)
    return version


def _worker_main() -> None:
    run_pretrain(PretrainParams(**json.loads(os.environ[PARAMS_ENV])))
    distributed.cleanup()


if __name__ == "__main__":
    _worker_main()
