"""Training loop for torchvision detectors: single process or DDP (torchrun).

Follows torchvision's detection references: SGD with momentum, linear LR
warm-up during epoch 0, a per-epoch main schedule, aspect-ratio grouped
batches, one checkpoint dict per epoch. Every epoch reseeds from
(seed, epoch, rank), so resuming from a checkpoint reproduces the uninterrupted
run exactly (on CPU; GPU kernels may be nondeterministic).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from alod.faults import maybe_fail
from alod.data.dataset import GroupedBatchSampler, aspect_ratio_groups, collate_fn
from alod.engine.distributed import get_env, is_initialized, is_main_process
from alod.models import load_checkpoint, load_state_strict, save_checkpoint, unwrap

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 4  # per process
    lr: float = 0.02  # for a total batch of lr_reference_batch; scaled linearly
    lr_reference_batch: int = 16  # torchvision: 0.02 for 8 GPUs x 2 images
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000  # capped to epoch 0's length
    warmup_factor: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine" | "step"
    lr_steps: list[int] = field(default_factory=list)  # epochs; default 2/3 and 8/9 of the run
    lr_gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: bool = False  # bf16 autocast, CUDA only
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    aspect_grouping: bool = True
    workers: int = 4
    seed: int = 0
    device: str | None = None  # None: cuda (LOCAL_RANK's GPU) if available, else cpu

    def scaled_lr(self, world_size: int = 1) -> float:
        return self.lr * self.batch_size * world_size / self.lr_reference_batch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None -> this rank's GPU if any, else cpu; a bare "cuda" -> this rank's GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", get_env().local_rank)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random follow it.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def epochs_for_min_steps(epochs: int, min_steps: int, num_images: int, batch_size: int,
                         world_size: int = 1) -> int:
    """`epochs`, or more when that many epochs would take fewer than `min_steps` SGD steps.

    Small labeled sets (early active-learning cycles) otherwise get a handful of
    steps and stay untrained, which makes every sampler look like random.
    """
    if min_steps < 0:
        raise ValueError(f"min_steps must be >= 0, got {min_steps}")
    if min_steps == 0 or num_images <= 0:
        return epochs
    steps_per_epoch = math.ceil(num_images / (batch_size * world_size))
    return max(epochs, math.ceil(min_steps / steps_per_epoch))


def build_optimizer(model: nn.Module, config: TrainConfig, world_size: int = 1) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=config.scaled_lr(world_size), momentum=config.momentum, weight_decay=config.weight_decay
    )


class EpochSchedule:
    """LR factor per epoch in closed form: a callable object, so LambdaLR's
    state dict keeps it as plain data (safe for weights_only loading)."""

    def __init__(self, epochs: int, kind: str = "cosine", steps: Iterable[int] = (), gamma: float = 0.1):
        if kind not in ("cosine", "step"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'step', not {kind!r}")
        self.epochs = int(epochs)
        self.kind = kind
        steps = list(steps) or [max(1, round(epochs * 2 / 3)), max(1, round(epochs * 8 / 9))]
        self.steps = sorted(int(s) for s in steps)
        self.gamma = float(gamma)

    def __call__(self, epoch: int) -> float:
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / max(1, self.epochs)))
        return self.gamma ** sum(epoch >= s for s in self.steps)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Main schedule, stepped once per epoch (warm-up is separate, see fit)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, EpochSchedule(config.epochs, config.lr_schedule, config.lr_steps, config.lr_gamma)
    )


def build_warmup(optimizer: torch.optim.Optimizer, iters: int, factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration linear ramp factor -> 1 over `iters` steps (epoch 0 only,
    where the main schedule's factor is 1, so the two never fight)."""
    iters = max(1, iters)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 1.0 if it >= iters else factor + (1.0 - factor) * it / iters
    )


def _to_device(images: Iterable[torch.Tensor], targets: Iterable[dict], device: torch.device) -> tuple[list, list]:
    nb = device.type == "cuda"
    images = [im.to(device, non_blocking=nb) for im in images]
    targets = [
        {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device | str,
    epoch: int,
    *,
    scheduler_warmup: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
    amp: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """One pass over `loader`; returns mean losses (per image, over all ranks),
    images, seconds, images_per_second. `scheduler_warmup` steps per iteration."""
    device = torch.device(device)
    model.train()
    amp = amp and device.type == "cuda"
    # Sums stay on the device: no host sync per iteration, only at display time.
    sums = torch.zeros(len(LOSS_KEYS) + 1, device=device, dtype=torch.float64)
    images_seen = 0
    t0 = time.perf_counter()
    last_show = t0
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    bar = tqdm(total=total, desc=f"epoch {epoch}", unit="it", disable=not (progress and is_main_process()), mininterval=2.0)
    for step, (images, targets) in enumerate(loader):
        maybe_fail("train_step", f"{epoch}.{step}")  # fault-injection tests kill a worker mid-epoch
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss_dict = model(images, targets)
        loss = sum(loss_dict[k] for k in LOSS_KEYS)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        if scheduler_warmup is not None:
            scheduler_warmup.step()
        n = len(images)
        images_seen += n
        sums += torch.stack([loss.detach().double()] + [loss_dict[k].detach().double() for k in LOSS_KEYS]) * n
        bar.update(1)
        now = time.perf_counter()
        if not bar.disable and now - last_show >= bar.mininterval:
            last_show = now
            means = (sums / images_seen).tolist()
            if not math.isfinite(means[0]):
                raise FloatingPointError(f"loss is {means[0]} in epoch {epoch}; lower the lr or enable clip_grad_norm")
            bar.set_postfix(
                loss=f"{means[0]:.3f}", cls=f"{means[1]:.3f}", box=f"{means[2]:.3f}",
                img_s=f"{images_seen / (now - t0):.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
            )
    bar.close()
    counts = torch.tensor([float(images_seen)], device=device, dtype=torch.float64)
    totals = torch.cat([sums, counts])
    if is_initialized():
        dist.all_reduce(totals)
    totals = totals.tolist()
    seconds = time.perf_counter() - t0
    images = int(totals[-1])
    means = [v / max(1, images) for v in totals[:-1]]
    if not math.isfinite(means[0]):
        raise FloatingPointError(f"loss is {means[0]} in epoch {epoch}; lower the lr or enable clip_grad_norm")
    stats = {"loss": means[0], **dict(zip(LOSS_KEYS, means[1:]))}
    stats.update(images=images, seconds=seconds, images_per_second=images / seconds if seconds > 0 else 0.0)
    return stats


def make_loader(dataset: Any, config: TrainConfig, generator: torch.Generator) -> DataLoader:
    """Shuffled (Distributed)Sampler -> aspect-ratio grouped batches."""
    if is_initialized():
        sampler: Any = DistributedSampler(dataset, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    if config.aspect_grouping:
        batches: Any = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset), config.batch_size)
    else:
        batches = BatchSampler(sampler, config.batch_size, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=config.workers,
        collate_fn=collate_fn,
        worker_init_fn=_worker_init,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )


def _changed_settings(saved: dict, config: TrainConfig) -> dict[str, tuple]:
    now = _plain_config(config)
    ignore = {"workers", "device"}  # do not change the maths
    return {k: (saved.get(k), v) for k, v in now.items() if k not in ignore and k in saved and saved[k] != v}


def _plain_config(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def fit(
    model: nn.Module,
    train_dataset: Any,
    config: TrainConfig,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `model` (in place) for config.epochs; returns this call's per-epoch stats.

    With `checkpoint_path`, a checkpoint is written after every epoch (main
    process) and, if `resume` and the file exists, training continues after
    its epoch. Under an initialized process group the model is wrapped in DDP
    and the data sharded. `on_epoch_end(epoch, stats)` runs on every rank (so
    it may run collectives, e.g. sharded evaluation) with the same stats,
    averaged over ranks; guard logging with `is_main_process()`."""
    env = get_env()
    device = resolve_device(config.device)
    if len(train_dataset) == 0:
        raise ValueError("training dataset is empty")
    seed_everything(config.seed)
    bare = unwrap(model).to(device)
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        warnings.warn("amp requested but the device is not CUDA: training in float32", stacklevel=2)

    optimizer = build_optimizer(bare, config, env.world_size if is_initialized() else 1)
    scheduler = build_scheduler(optimizer, config)
    start_epoch = 0
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        arch = getattr(bare, "alod_config", {}).get("arch")
        if arch is not None and ckpt["config"].get("arch") not in (None, arch):
            raise ValueError(f"{ckpt_path} holds a {ckpt['config'].get('arch')} model, not {arch}")
        load_state_strict(bare, ckpt["model"], source=str(ckpt_path))
        if ckpt.get("optimizer") is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("lr_scheduler") is not None:
            schedule = dict(vars(scheduler.lr_lambdas[0]))
            scheduler.load_state_dict(ckpt["lr_scheduler"])
            # The schedule follows this call's config (e.g. more epochs), not the file's.
            vars(scheduler.lr_lambdas[0]).update(schedule)
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
        changed = _changed_settings(ckpt["config"].get("train", {}), config)
        if changed:
            warnings.warn(f"resuming {ckpt_path} with changed settings {changed}: not an exact resume", stacklevel=2)
        start_epoch = int(ckpt["epoch"]) + 1

    train_model: nn.Module = bare
    if is_initialized():
        if config.sync_bn:
            bare = nn.SyncBatchNorm.convert_sync_batchnorm(bare)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(bare, device_ids=ids)

    generator = torch.Generator()
    loader = make_loader(train_dataset, config, generator)
    history: list[dict] = []
    for epoch in range(start_epoch, config.epochs):
        # Reseed per epoch: flips, shuffles and RPN/ROI sampling depend only on
        # (seed, epoch, rank), which is what makes resume exact.
        s = _epoch_seed(config.seed, epoch, env.rank)
        seed_everything(s)
        generator.manual_seed(s)
        index_sampler = loader.batch_sampler.sampler  # type: ignore[union-attr]
        if hasattr(index_sampler, "set_epoch"):
            index_sampler.set_epoch(epoch)  # DistributedSampler reshuffles per epoch
        warmup = None
        if epoch == 0 and config.warmup_iters > 0:
            warmup = build_warmup(optimizer, min(config.warmup_iters, len(loader) - 1), config.warmup_factor)
        stats = train_one_epoch(
            train_model, optimizer, loader, device, epoch,
            scheduler_warmup=warmup, clip_grad_norm=config.clip_grad_norm, amp=amp, progress=progress,
        )
        stats["epoch"] = epoch
        stats["lr"] = optimizer.param_groups[0]["lr"]  # at the epoch's last step
        scheduler.step()
        history.append(stats)
        if env.is_main and ckpt_path is not None:
            save_checkpoint(
                ckpt_path, model=bare, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                config={"train": _plain_config(config), "world_size": env.world_size},
            )
        if is_initialized():
            dist.barrier()  # no rank goes on before the checkpoint exists
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
    return history
