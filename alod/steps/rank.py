"""The `rank` step: score the pool with a registered model, sort, cut into batches."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from alod import pictures, tracking
from alod.active.protocol import make_ranking
from alod.active.samplers import SamplerContext, get_sampler
from alod.data.splits import load_split
from alod.engine import distributed
from alod.engine.distributed import default_device
from alod.engine.flops import peak_flops, throughput_stats
from alod.models import detector_from_checkpoint
from alod.params import RankParams
from alod.run_folder import RunFolder
from alod.plots import score_histogram
from alod.steps.common import (
    Launch,
    flops_per_image,
    launch_workers,
    pictures_safely,
    score_pool,
)

PARAMS_ENV = "ALOD_RANK_PARAMS"


def run_rank(p: RankParams) -> str:
    sampler = get_sampler(p.sampler)  # unknown sampler: fail before anything else
    launch = Launch(nproc=p.nproc, nnodes=p.nnodes, rdzv_endpoint=p.rdzv_endpoint)
    if "LOCAL_RANK" not in os.environ:
        tracking.setup(p.experiment)
    if sampler.needs_predictions and p.checkpoint_file is None:
        ckpt, version = tracking.download_registered_checkpoint(p.model_uri, Path(p.work_dir) / "downloads")
        p.checkpoint_file = str(ckpt)
        p.model_tags = {"alod.model_name": version.name, "alod.model_version": str(version.version),
                        "alod.model_run": version.run_id}
    if launch.needed:
        # The launcher opens the run and the workers attach to it (ALOD_RUN_ID), wherever global rank 0
        # lands: on another node too (README: Scaling out).
        pool = load_split(p.data, "train")
        with tracking.run("rank", run_name=f"rank-{p.sampler}-s{p.seed}", tags=_tags(p, pool)) as run_id:
            tracking.log_params(p.logged_params())
            launch_workers(launch, "alod.steps.rank", PARAMS_ENV, p, run_id)
        return run_id
    distributed.init_distributed()
    tracking.setup(p.experiment)
    pool = load_split(p.data, "train")
    if p.batches * p.batch_images > len(pool.frames):
        print(f"note: {p.batches} batches x {p.batch_images} images exceed the pool of "
              f"{len(pool.frames)}; the last batches are short or empty", flush=True)
    model = detector_from_checkpoint(p.checkpoint_file) if p.checkpoint_file else None
    tags = _tags(p, pool)
    launched = os.environ.get(tracking.RUN_ID_ENV)
    opened = (tracking.attached(launched) if launched else
              tracking.run("rank", run_name=f"rank-{p.sampler}-s{p.seed}", tags=tags))
    with opened as run_id:
        run_id = launched or run_id
        if not launched:
            tracking.log_params(p.logged_params())
        device = default_device()
        if model is not None:
            model.to(device)
        names = [f.name for f in pool.frames]
        ctx = SamplerContext(seed=p.seed, score_threshold=p.score_threshold, names=names,
                             budget=p.batch_images, horizon=p.batches * p.batch_images)
        started = time.perf_counter()
        scores = score_pool(p.sampler, model, pool.frames, pool.images, ctx, device=device,
                            batch_size=p.eval_batch_size, workers=p.workers)
        seconds = time.perf_counter() - started
        ranking = make_ranking(names, scores, batches=p.batches, batch_images=p.batch_images)
        if distributed.is_main_process():
            out = RunFolder(p.work_dir, run_id) / "ranking"
            out.mkdir(parents=True, exist_ok=True)
            ranking.to_parquet(out / "ranking.parquet", index=False)
            tracking.log_artifact(out / "ranking.parquet", "ranking")
            per_second = len(names) / max(seconds, 1e-9)
            # one forward pass per image counted: samplers with several passes (mc_dropout, TTA) use more
            flops = flops_per_image(model, pool.frames, pool.images) if model is not None else None
            tracking.log_metrics({"pool_images": len(names), "ranking_seconds": seconds,
                                  "ranking_images_per_second": per_second,
                                  "score_mean": float(scores.mean()) if len(scores) else 0.0,
                                  **throughput_stats(per_second, flops, peak_flops(device), train=False,
                                                     devices=distributed.world_size(), prefix="ranking_")})
            tracking.log_figure(score_histogram(scores, title=f"{p.sampler} scores over the pool"),
                                "plots/score_histogram.png")
            if model is not None:
                pictures_safely(lambda: tracking.log_image(pictures.selection_pictures(
                    ranking["image"].head(8).tolist(), dict(zip(names, scores)), pool.frames, pool.images,
                    sampler=p.sampler, model=model, device=device, seed=p.seed * 1000,
                    score_threshold=p.score_threshold, what="ranked first")["picked"], key="ranking_top", step=0))
            print(f"ranked {len(names)} images with {p.sampler} in {seconds:.1f}s "
                  f"({distributed.world_size()} process(es)); run {run_id}", flush=True)
    return run_id


def _tags(p: RankParams, pool) -> dict:
    return {"alod.sampler": p.sampler, "alod.seed": p.seed, "alod.dataset": pool.digest,
            "alod.code_version": tracking.code_version(), **(p.model_tags or {})}


if __name__ == "__main__":  # a torchrun worker
    run_rank(RankParams(**json.loads(os.environ[PARAMS_ENV])))
    distributed.cleanup()
