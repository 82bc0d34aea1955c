"""Pieces every step shares: data resolution, devices, sharded inference."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from alod import tracking
from alod.active.samplers import SamplerContext, get_sampler, score_images
from alod.active.scoring import detections_for
from alod.data.dataset import DetectionDataset
from alod.data.frames import Frame
from alod.engine import distributed, train
from alod.engine.distributed import gather, shard
from alod.engine.flops import forward_flops

# What steps log per epoch: the loss terms (means per image) and how fast it went.
LOSS_KEYS = ("loss", *train.LOSS_KEYS)
THROUGHPUT_KEYS = ("images_per_second", "model_tflops_per_second", "mfu")
# Per-class AP50 on val: `val_AP50.<class>`. MLflow 3's chart view sorts a run's unprefixed metrics by
# code point (capitals first) and puts every `prefix/` section *before* them, so `AP50.<class>` or
# `AP50/<class>` would show ten near-zero charts ahead of mAP50; this name sorts after mAP50 and mAP50_95,
# beside the label-efficiency benchmark's `test_AP50.<class>`.
PER_CLASS_PREFIX = "val_AP50."


def subset(frames: Sequence[Frame], fraction: float, seed: int) -> list[Frame]:
    """A seeded fraction of the frames, in their original order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, round(len(frames) * fraction))
    keep = np.sort(np.random.default_rng(seed).choice(len(frames), size=n, replace=False))
    return [frames[i] for i in keep]


def pictures_safely(draw) -> None:
    """Pictures help people judge a step; they must never cost one."""
    try:
        draw()
    except Exception as e:  # noqa: BLE001 - any drawing failure is only a warning
        print(f"warning: pictures not logged: {type(e).__name__}: {e}", flush=True)


def score_pool(sampler_name: str, model: torch.nn.Module | None, frames: Sequence[Frame], images: Path,
               ctx: SamplerContext, *, device: torch.device, batch_size: int,
               workers: int) -> np.ndarray:
    """One sampler score per frame, in input order, on every rank.

    Each rank runs the inference its sampler needs on its shard. Per-image
    samplers also score their shard, so only scores cross ranks; set-based ones
    (coreset, hybrid) need every image's features, so detections are gathered.
    """
    sampler = get_sampler(sampler_name)
    mine = detections_for(sampler, model, shard(frames), images, device=device, batch_size=batch_size,
                          workers=workers, seed=ctx.seed * 1000 + ctx.cycle,
                          progress=distributed.is_main_process())
    if sampler.set_based:
        detections = gather(mine)
        return score_images(sampler_name, detections,
                            dataclasses.replace(ctx, names=[f.name for f in detections]))
    shard_ctx = dataclasses.replace(ctx, names=[f.name for f in mine])
    return np.asarray(gather(list(score_images(sampler_name, mine, shard_ctx))), dtype=np.float64)


@dataclass
class Launch:
    """How to start torchrun workers: processes per node, nodes, rendezvous, restarts."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (node 0), needed for nnodes > 1
    rdzv_id: str = "alod"
    max_restarts: int = 0

    @property
    def needed(self) -> bool:
        """True in the user's process when workers must be started (not inside a worker)."""
        return (self.nproc > 1 or self.nnodes > 1 or self.max_restarts > 0) and "LOCAL_RANK" not in os.environ

    def command(self, module: str) -> list[str]:
        import sys

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}",
               f"--max_restarts={self.max_restarts}"]
        if self.nnodes > 1:
            if not self.rdzv_endpoint:
                raise ValueError("nnodes > 1 needs rdzv_endpoint (host:port of node 0)")
            cmd += [f"--nnodes={self.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={self.rdzv_endpoint}",
                    f"--rdzv_id={self.rdzv_id}"]
        else:
            cmd += ["--standalone"]
        return cmd + ["-m", module]


# For torchrun itself, on every node. By default its c10d rendezvous shares one TCPStore server across
# rendezvous rounds, so the workers' gloo/NCCL rendezvous keys of a failed round stay in it, and the
# restart counts that could tell rounds apart differ between nodes (a node whose worker did not fail
# restarts without counting): across two hosts, restarted workers waited for each other forever
# (torch 2.14.1; tests/test_multinode.py). A store per round, hosted by rank 0, starts empty.
WORKER_AGENT_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def print_worker_command(params_env: str, worker_params: str, run_id: str, launch: Launch, module: str) -> None:
    """What the other nodes need (README: Scaling out): the workers' parameters and run id, one
    `NAME=value` line each, then the whole command to start a node's workers with them."""
    import shlex

    from alod.tracking import RUN_ID_ENV

    agent_env = " ".join(f"{k}={v}" for k, v in WORKER_AGENT_ENV.items())
    command = (f"{agent_env} {RUN_ID_ENV}={run_id} {params_env}={shlex.quote(worker_params)} "
               f"python -m torch.distributed.run "
               f"--nproc_per_node {launch.nproc} --nnodes {launch.nnodes} --rdzv_backend c10d "
               f"--rdzv_endpoint {launch.rdzv_endpoint} --rdzv_id {launch.rdzv_id} "
               f"--max_restarts {launch.max_restarts} -m {module}")
    print(f"{params_env}={worker_params}\n{RUN_ID_ENV}={run_id}\n"
          f"start the workers of every other node with (same code, data path and MLFLOW_TRACKING_URI):\n"
          f"  {command}", flush=True)


def launch_workers(launch: Launch, module: str, params_env: str, params, run_id: str) -> None:
    """The launcher's side of every step under torchrun (pretrain, rank, cycle): start `python -m module`
    workers on the open run `run_id` with `params` (a dataclass) in `params_env`, and wait. With nnodes > 1
    it first prints what the other nodes must start (README: Scaling out)."""
    import dataclasses
    import json

    from alod.tracking import RUN_ID_ENV

    launch.rdzv_id = run_id
    worker_params = json.dumps(dataclasses.asdict(params))
    if launch.nnodes > 1:  # other nodes start their workers with exactly these
        print_worker_command(params_env, worker_params, run_id, launch, module)
    elif os.environ.get("ALOD_DEBUG"):
        print(f"{params_env}={worker_params}\n{RUN_ID_ENV}={run_id}", flush=True)
    run_workers(launch, module, {params_env: worker_params, RUN_ID_ENV: run_id})


def run_workers(launch: Launch, module: str, env_extra: dict[str, str]) -> None:
    """Start torchrun workers running `python -m module` and wait; a failure is an error here."""
    import subprocess

    env = {**os.environ, **WORKER_AGENT_ENV, **env_extra}
    result = subprocess.run(launch.command(module), env=env)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun workers exited with code {result.returncode}")


def flops_per_image(model: torch.nn.Module, frames: Sequence[Frame], images: Path) -> float | None:
    """Forward FLOPs of `model` on one image of this split's size (the first image's), counted once.

    None (and a note) when counting fails: utilisation is a report, never a reason to stop."""
    if not frames:
        return None
    try:
        height, width = DetectionDataset(frames[:1], images).get_height_and_width(0)  # label size, else header
        return forward_flops(model, (width, height))
    except Exception as e:  # noqa: BLE001 - an op the FLOP counter does not know must not stop training
        print(f"note: FLOPs per image not counted ({type(e).__name__}: {e}); no utilisation logged", flush=True)
        return None


def with_logged_params(given: dict, explicit: set[str], params_cls: type,
                       defaults: dict[str, tuple] | None = None) -> dict:
    """For a resume: the run's logged parameters fill in every value not chosen,
    so `alod cycle|pretrain --resume-run-id RUN` continues the run as it was started.

    A value is chosen when it was given explicitly and differs from its defaults
    (`defaults`: name -> the values that mean "not chosen"); `mlflow run` passes
    every MLproject parameter, defaults included, so a value equal to its default
    counts as not chosen. A chosen
    value that contradicts the logged one is refused (ValueError) unless it is
    only about how the run executes (declared `resumable`, see alod.params): one
    run must not mix two experiments' settings."""
    run = tracking.get_run(given["resume_run_id"])
    logged = run.data.params
    if not logged:
        raise ValueError(f"run {given['resume_run_id']} has no logged parameters (it was stopped before it "
                         "logged them, moments after it started): there is nothing to resume; start a new run")
    hints = typing.get_type_hints(params_cls)
    defaults = defaults or {}
    chosen = {n for n in explicit if not any(given.get(n) == d for d in defaults.get(n, ()))}
    out = dict(given)
    if "experiment" not in chosen:
        out["experiment"] = tracking.experiment_name(run.info.experiment_id)
    conflicts = []
    # what defines the run's results; `mlflow run` also logs the rest of the MLproject parameters
    defining = params_cls.defining()
    for name, text in sorted(logged.items()):
        if name not in out or name == "resume_run_id":
            continue
        value = _from_param(text, hints[name], name)
        if name not in chosen:
            out[name] = value
        elif given[name] != value and name in defining:
            conflicts.append(f"{name}={given[name]!r} (the run has {value!r})")
    if conflicts:
        raise ValueError(
            f"run {given['resume_run_id']} was started with other settings; resuming it with "
            f"{', '.join(conflicts)} would mix two experiments in one run. Leave those out to continue "
            f"the run as it was started, or start a new run.")
    return out


def _from_param(text: str, hint, name: str):
    kinds = set(typing.get_args(hint)) or {hint}
    # `mlflow run` logs an unset optional MLproject parameter as "" or "''" (alod itself as "None")
    if text == "None" or (text.strip("'\"") == "" and type(None) in kinds):
        return None
    try:
        if bool in kinds:
            return text.strip().lower() in ("true", "1", "yes")
        if int in kinds:
            return int(float(text))
        if float in kinds:
            return float(text)
    except ValueError:
        raise ValueError(f"logged parameter {name}={text!r} is not a {hint}") from None
    return text
