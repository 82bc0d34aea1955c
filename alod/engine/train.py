"""Training loop for torchvision detectors: single process or DDP (torchrun).

Follows torchvision's detection references: SGD with momentum, linear LR
warm-up during epoch 0, a per-epoch main schedule, aspect-ratio grouped
batches, one checkpoint dict per epoch. Every epoch reseeds from
(seed, epoch, rank), so resuming from a checkpoint reproduces the uninterrupted
run exactly (on CPU; GPU kernels may be nondeterministic).

SIGTERM (torchrun, batch schedulers, spot preemption: sent before SIGKILL)
stops `fit` at the end of the current step on every rank; it writes a
mid-epoch checkpoint (`step_in_epoch`, RNG states) and raises `Preempted`
(a SystemExit with status 143). Resuming skips the epoch's finished batches at
the batch-sampler level (no image is read) and continues exactly where it stopped,
with or without loader workers: each image's flip is drawn from (seed, epoch,
image), not from the RNG of the worker that reads it. A checkpoint written at an
epoch's end is unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm.auto import tqdm

from alod.faults import maybe_fail
from alod.data.dataset import GroupedBatchSampler, aspect_ratio_groups, collate_fn
from alod.engine.distributed import all_gather_object, get_env, is_initialized, is_main_process, resolve_device
from alod.engine.flops import peak_flops, throughput_stats
from alod.models import checkpoint_safe, load_checkpoint, load_state_strict, save_checkpoint, unwrap
from alod.engine import progress_bars

# The loss terms torchvision's Faster R-CNN returns. Training sums whatever dict a detector returns;
# these names only stand in until the first step has shown the detector's own.
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
_SHORT = {"loss_classifier": "cls", "loss_box_reg": "box"}  # what the progress bar shows beside the total


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
    channels_last: bool = True  # NHWC weights and activations on CUDA (tensor-core friendly convs); ignored on CPU
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    aspect_grouping: bool = True
    workers: int = 4
    seed: int = 0
    device: str | None = None  # None: cuda (LOCAL_RANK's GPU) if available, else cpu

    def scaled_lr(self, world_size: int = 1) -> float:
        return self.lr * self.batch_size * world_size / self.lr_reference_batch


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
    start_step: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """One pass over `loader`; returns mean losses (per image, over all ranks),
    images, seconds, images_per_second. `scheduler_warmup` steps per iteration.

    `start_step`: steps of this epoch done before `loader`'s first batch (a
    resumed epoch). `should_stop()` is asked after every step and must answer
    the same on every rank; on True the pass ends there and the stats add
    "stopped_at" (steps of the epoch done, counting `start_step`)."""
    device = torch.device(device)
    model.train()
    amp = amp and device.type == "cuda"
    # Sums stay on the device: no host sync per iteration, only at display time.
    keys = LOSS_KEYS  # the detector's own loss names once the first step returns them (sorted: same on every rank)
    sums = torch.zeros(len(keys) + 1, device=device, dtype=torch.float64)
    images_seen = 0
    bar = _ProgressBar(loader, epoch, enabled=progress and is_main_process())
    stopped_at = None
    for step, (images, targets) in enumerate(loader, start=start_step):
        maybe_fail("train_step", f"{epoch}.{step}")  # fault-injection tests kill a worker mid-epoch
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss_dict = model(images, targets)
        if step == start_step:
            keys = tuple(sorted(loss_dict))
            sums = torch.zeros(len(keys) + 1, device=device, dtype=torch.float64)
        loss = sum(loss_dict[k] for k in keys)
        _optimizer_step(loss, model, optimizer, scaler, clip_grad_norm)
        if scheduler_warmup is not None:
            scheduler_warmup.step()
        n = len(images)
        images_seen += n
        sums += torch.stack([loss.detach().double()] + [loss_dict[k].detach().double() for k in keys]) * n
        bar.step(sums, images_seen, keys, optimizer)
        # Checked after the step, never inside it: the stop point is a clean state to checkpoint.
        if should_stop is not None and should_stop():
            stopped_at = step + 1
            break
    bar.close()
    stats = _epoch_stats(sums, images_seen, keys, device, epoch, started=bar.t0)
    if stopped_at is not None:
        stats["stopped_at"] = stopped_at
    return stats


def _optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, clip_grad_norm: float | None) -> None:
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


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss is {loss} in epoch {epoch}; lower the lr or enable clip_grad_norm")


class _ProgressBar:
    """The epoch's tqdm bar (rank 0): the running mean losses, images/s and lr, read from the device at
    most every `mininterval` seconds."""

    def __init__(self, loader: Iterable, epoch: int, *, enabled: bool):
        try:
            total = len(loader)  # type: ignore[arg-type]
        except TypeError:
            total = None
        self.epoch = epoch
        self.t0 = self.last_show = time.perf_counter()
        self.bar = tqdm(total=total, desc=f"epoch {epoch}", unit="it", disable=not progress_bars(enabled),
                        mininterval=2.0)

    def step(self, sums: torch.Tensor, images_seen: int, keys: tuple[str, ...], optimizer) -> None:
        self.bar.update(1)
        now = time.perf_counter()
        if self.bar.disable or now - self.last_show < self.bar.mininterval:
            return
        self.last_show = now
        means = (sums / images_seen).tolist()
        _check_finite(means[0], self.epoch)
        self.bar.set_postfix(
            loss=f"{means[0]:.3f}", **{_SHORT.get(k, k.removeprefix("loss_")): f"{v:.3f}"
                                       for k, v in zip(keys, means[1:]) if k in _SHORT},
            img_s=f"{images_seen / (now - self.t0):.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
        )

    def close(self) -> None:
        self.bar.close()


def _epoch_stats(sums: torch.Tensor, images_seen: int, keys: tuple[str, ...], device: torch.device, epoch: int,
                 *, started: float) -> dict[str, float]:
    """Mean losses per image over every rank (one all_reduce), images, and the seconds since `started`."""
    counts = torch.tensor([float(images_seen)], device=device, dtype=torch.float64)
    totals = torch.cat([sums, counts])
    if is_initialized():
        dist.all_reduce(totals)
    totals = totals.tolist()
    seconds = time.perf_counter() - started
    images = int(totals[-1])
    means = [v / max(1, images) for v in totals[:-1]]
    _check_finite(means[0], epoch)
    stats = {"loss": means[0], **dict(zip(keys, means[1:]))}
    stats.update(images=images, seconds=seconds, images_per_second=images / seconds if seconds > 0 else 0.0)
    return stats


class SkipBatches(Sampler[list[int]]):
    """A batch sampler without its first `skip` batches, for resuming mid-epoch.

    The inner sampler still draws the epoch's whole shuffle (same generator
    calls as the uninterrupted epoch), but skipped batches are only index
    lists: no image is read. `after_skip()` then runs once per pass, before
    the first remaining batch is loaded (fit restores the RNG states there)."""

    def __init__(self, batches: Sampler[list[int]], skip: int, after_skip: Callable[[], None] | None = None):
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.batches = batches
        self.skip = skip
        self.after_skip = after_skip
        self.sampler = getattr(batches, "sampler", None)  # fit calls sampler.set_epoch

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.batches)
        for _ in itertools.islice(it, self.skip):
            pass
        if self.after_skip is not None:
            self.after_skip()
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.skip)  # type: ignore[arg-type]


def make_loader(dataset: Any, config: TrainConfig, generator: torch.Generator, *, skip_batches: int = 0,
                after_skip: Callable[[], None] | None = None) -> DataLoader:
    """Shuffled (Distributed)Sampler -> aspect-ratio grouped batches.

    `skip_batches` > 0 leaves out the first batches of the pass (see SkipBatches)."""
    if is_initialized():
        sampler: Any = DistributedSampler(dataset, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    if config.aspect_grouping:
        batches: Any = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset), config.batch_size)
    else:
        batches = BatchSampler(sampler, config.batch_size, drop_last=False)
    if skip_batches:
        batches = SkipBatches(batches, skip_batches, after_skip)
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


# --------------------------------------------------------------------------- preemption

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a SIGTERM'd process


class Preempted(SystemExit):
    """`fit` stopped on SIGTERM, after writing a checkpoint that resumes it.

    A SystemExit rather than an Exception: `except Exception` handlers let it
    pass, and left uncaught it ends the process quietly with status 143
    (128 + SIGTERM), which torchrun and schedulers read as "terminated", so the
    job is retried and `fit` resumes from `checkpoint`. Catch it to clean up,
    then re-raise. `step_in_epoch` is 0 when the stop fell between epochs."""

    def __init__(self, message: str, epoch: int, step_in_epoch: int, checkpoint: Path | None = None):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message
        self.epoch = epoch
        self.step_in_epoch = step_in_epoch
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # picklable (multiprocessing) despite the extra arguments
        return type(self), (self.message, self.epoch, self.step_in_epoch, self.checkpoint)


class _StopRequest:
    """SIGTERM -> a flag, and one answer for all ranks on whether to stop.

    The handler only sets the flag (no I/O in a signal handler). Per step the
    ranks OR their flags with a 1-element all_reduce that is read one step
    later, so the check never waits for the step just queued on a GPU; every
    rank reads the same reduced value after the same step, so all stop together.
    """

    def __init__(self, device: torch.device):
        self.requested = False
        self._previous: Any = None
        self._installed = False
        self._device = device
        self._pending: tuple[Any, torch.Tensor, torch.Tensor | None, Any] | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        # signal.signal only works in the main thread; elsewhere SIGTERM keeps its handler
        # (the flag stays False, but the collectives below still run, so ranks stay in step).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            # None: a handler not set from Python, which cannot be put back; the default is closest.
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _flag_device(self) -> torch.device:
        return self._device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _read_pending(self) -> bool:
        if self._pending is None:
            return False
        work, flag, host, event = self._pending
        self._pending = None
        if event is None:
            work.wait()
            return bool(flag.item() > 0)
        event.synchronize()  # waits for the reduce and the copy, not for later steps' kernels
        return bool(host.item() > 0)  # type: ignore[union-attr]

    def poll(self) -> bool:
        """After each step: stop now? (One step late under DDP.)"""
        if not is_initialized():
            return self.requested
        if self._read_pending():
            return True  # nothing left in flight: the stop path runs other collectives
        device = self._flag_device()
        # torch.full launches a fill kernel; torch.tensor([...], device=cuda) would copy from
        # the host and wait for every queued step.
        flag = torch.full((1,), float(self.requested), device=device)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True)
        host = event = None
        if device.type == "cuda":
            work.wait()  # NCCL: makes the compute stream wait, not the host
            host = torch.empty(1, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            work = None
        self._pending = (work, flag, host, event)
        return False

    def agreed(self) -> bool:
        """Between epochs (synchronous): has any rank been asked to stop?"""
        if not is_initialized():
            return self.requested
        self._read_pending()  # the last step's reduce; its answer is included below
        flag = torch.full((1,), float(self.requested), device=self._flag_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states as tensors and plain data (weights_only loadable)."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _save_mid_epoch(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    warmup: Any, epoch: int, step_in_epoch: int, rng: list[dict], epoch_stats: dict,
                    config: dict[str, Any]) -> Path:
    """The epoch checkpoint plus what resuming inside an epoch needs.

    step_in_epoch: steps of `epoch` done; rng: each rank's RNG states at the stop;
    warmup_scheduler: the warm-up's state (epoch 0); epoch_stats: the epoch's stats so far."""
    return save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                           config=config, extra={
                               "step_in_epoch": int(step_in_epoch),
                               "warmup_scheduler": warmup.state_dict() if warmup is not None else None,
                               "rng": rng,
                               "epoch_stats": checkpoint_safe(epoch_stats),
                           })


def _plain_stats(stats: dict) -> dict:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()
            if isinstance(v, (int, float, str, bool)) or v is None}


def _merge_epoch_stats(before: dict, after: dict) -> dict:
    """Stats of an epoch trained in two parts (before and after a preemption)."""
    n0, n1 = before["images"], after["images"]
    n = n0 + n1
    merged = {k: (before[k] * n0 + after[k] * n1) / max(1, n) for k in before
              if k.startswith("loss") and k in after}
    seconds = before["seconds"] + after["seconds"]  # training time only, not the restart
    merged.update(images=int(n), seconds=seconds, images_per_second=n / seconds if seconds > 0 else 0.0)
    return merged


def fit(
    model: nn.Module,
    train_dataset: Any,
    config: TrainConfig,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    flops_per_image: float | None = None,
    on_resumed_epoch: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train `model` (in place) for config.epochs; returns this call's per-epoch stats.

    With `checkpoint_path`, a checkpoint is written after every epoch (main
    process) and, if `resume` and the file exists, training continues after
    its epoch (or inside it, for a checkpoint written on SIGTERM). Under an
    initialized process group the model is wrapped in DDP and the data
    sharded. `on_epoch_end(epoch, stats)` runs on every rank (so it may run
    collectives, e.g. sharded evaluation) with the same stats, averaged over
    ranks; guard logging with `is_main_process()`.

    SIGTERM during the call stops every rank after the same step, writes a
    mid-epoch checkpoint and raises `Preempted` (see the module docstring);
    the previous SIGTERM handler is back when fit returns or raises.

    `flops_per_image` (forward FLOPs, e.g. from `alod.engine.flops.forward_flops`,
    counted once by the caller: it costs a forward pass) adds
    "model_tflops_per_second" (all ranks together, training = 3x forward) and,
    when the device's peak is known, "mfu" (against the peak x world size).

    `on_resumed_epoch(epoch, stats)`: on a resume from an end-of-epoch checkpoint, called once with that
    epoch's stats (saved in the checkpoint), so a caller can log what a kill between the checkpoint
    and `on_epoch_end` left unlogged."""
    run = _Training.set_up(model, train_dataset, config, checkpoint_path, resume=resume, progress=progress,
                           flops_per_image=flops_per_image)
    start = run.start
    if start.finished_stats is not None and on_resumed_epoch is not None:
        on_resumed_epoch(start.epoch - 1, dict(start.finished_stats))
    history: list[dict] = []
    stop = _StopRequest(run.device)
    stop.install()
    try:
        for epoch in range(start.epoch, config.epochs):
            if stop.agreed():  # SIGTERM between epochs (setup, on_epoch_end): the last checkpoint stands
                raise _preempted(epoch, 0, run.ckpt_path, written=False)
            stats = run.train_epoch(epoch, stop.poll)  # SIGTERM inside it: saved there, raises Preempted
            history.append(stats)
            run.save_epoch(epoch, stats)
            if stop.agreed():  # SIGTERM in the epoch's last step: its checkpoint is complete
                raise _preempted(epoch + 1, 0, run.ckpt_path, written=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
        if stop.agreed():  # SIGTERM during the last on_epoch_end: training is done, still honour it
            raise _preempted(config.epochs, 0, run.ckpt_path, written=True, finished=True)
    finally:
        stop.uninstall()
    return history


@dataclass
class _StartPoint:
    """Where a `fit` call starts: its first epoch, and what the checkpoint it resumes left for it."""

    epoch: int = 0
    mid_epoch: dict | None = None  # a SIGTERM checkpoint's resume state (step_in_epoch, warm-up, RNGs, stats)
    finished_stats: dict | None = None  # the stats of the epoch an end-of-epoch checkpoint closed

    def steps_done(self, epoch: int) -> int:
        """Steps of `epoch` a mid-epoch checkpoint has already trained."""
        if self.mid_epoch is None or epoch != self.epoch:
            return 0
        return int(self.mid_epoch["step_in_epoch"])


def _resume_from(path: Path, bare: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 config: TrainConfig, world_size: int, device: torch.device) -> _StartPoint:
    """Load a checkpoint's model, optimizer and schedule; the schedule follows `config` (e.g. more epochs)."""
    ckpt = load_checkpoint(path, map_location=device)
    arch = getattr(bare, "alod_config", {}).get("arch")
    if arch is not None and ckpt["config"].get("arch") not in (None, arch):
        raise ValueError(f"{path} holds a {ckpt['config'].get('arch')} model, not {arch}")
    load_state_strict(bare, ckpt["model"], source=str(path))
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
    if ckpt.get("step_in_epoch") is not None:
        start = _StartPoint(int(ckpt["epoch"]), mid_epoch=ckpt)
        saved_world = ckpt["config"].get("world_size", 1)
        if saved_world != world_size:
            changed["world_size"] = (saved_world, world_size)  # another split of the epoch's batches
    else:
        start = _StartPoint(int(ckpt["epoch"]) + 1, finished_stats=ckpt.get("finished_epoch_stats"))
    if changed:
        # stacklevel: the warning points at fit's caller
        warnings.warn(f"resuming {path} with changed settings {changed}: not an exact resume", stacklevel=4)
    return start


@dataclass
class _Training:
    """What `fit`'s epochs share: the model (bare, and as trained: DDP under a process group), its
    optimizer and schedules, the loader, where checkpoints go and where this call starts."""

    config: TrainConfig
    dataset: Any
    device: torch.device
    env: Any
    bare: nn.Module  # what checkpoints hold
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start: _StartPoint
    ckpt_path: Path | None
    generator: torch.Generator
    loader: DataLoader
    amp: bool
    progress: bool
    flops_per_image: float | None
    peak: float | None

    @property
    def world(self) -> int:
        return self.env.world_size if is_initialized() else 1

    @property
    def ckpt_config(self) -> dict[str, Any]:
        return {"train": _plain_config(self.config), "world_size": self.env.world_size}

    @classmethod
    def set_up(cls, model: nn.Module, dataset: Any, config: TrainConfig, checkpoint_path: str | Path | None, *,
              resume: bool, progress: bool, flops_per_image: float | None) -> "_Training":
        env = get_env()
        device = resolve_device(config.device)
        if len(dataset) == 0:
            raise ValueError("training dataset is empty")
        seed_everything(config.seed)
        bare = unwrap(model).to(device)
        amp = config.amp and device.type == "cuda"
        if config.channels_last and device.type == "cuda":
            bare.to(memory_format=torch.channels_last)
        if config.amp and not amp:
            warnings.warn("amp requested but the device is not CUDA: training in float32", stacklevel=3)
        world = env.world_size if is_initialized() else 1
        optimizer = build_optimizer(bare, config, world)
        scheduler = build_scheduler(optimizer, config)
        ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
        start = _StartPoint()
        if ckpt_path is not None and resume and ckpt_path.exists():
            start = _resume_from(ckpt_path, bare, optimizer, scheduler, config, env.world_size, device)
        train_model: nn.Module = bare
        if is_initialized():
            if config.sync_bn:
                bare = nn.SyncBatchNorm.convert_sync_batchnorm(bare)
            ids = [device.index] if device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(bare, device_ids=ids)
        peak = peak_flops(device) if flops_per_image else None
        generator = torch.Generator()
        loader = make_loader(dataset, config, generator)
        return cls(config, dataset, device, env, bare, train_model, optimizer, scheduler, start, ckpt_path,
                   generator, loader, amp, progress, flops_per_image, peak)

    def epoch_loader(self, epoch: int) -> tuple[Any, int]:
        """The epoch's loader, reseeded, and the steps of the epoch it skips (a mid-epoch resume)."""
        # Reseed per epoch: flips, shuffles and RPN/ROI sampling depend only on
        # (seed, epoch, rank), which is what makes resume exact.
        s = _epoch_seed(self.config.seed, epoch, self.env.rank)
        seed_everything(s)
        self.generator.manual_seed(s)
        if hasattr(self.dataset, "augment_seed"):
            self.dataset.augment_seed = s  # flips per (epoch, image): exact resume with loader workers too
        skip = self.start.steps_done(epoch)
        loader = self.loader
        if skip:
            rng = self.start.mid_epoch["rng"]  # type: ignore[index]
            # The skipped batches' flips and RPN/ROI draws are not replayed: the RNGs are
            # set to the saved stop point instead, once the shuffle has been drawn.
            rank = self.env.rank
            after_skip = functools.partial(_set_rng_state, rng[rank], self.device) if rank < len(rng) else None
            loader = make_loader(self.dataset, self.config, self.generator, skip_batches=skip, after_skip=after_skip)
        index_sampler = loader.batch_sampler.sampler  # type: ignore[union-attr]
        if hasattr(index_sampler, "set_epoch"):
            index_sampler.set_epoch(epoch)  # DistributedSampler reshuffles per epoch
        return loader, skip

    def warmup(self, epoch: int, skip: int) -> Any:
        """Epoch 0's linear warm-up (as it was at the stop, for a mid-epoch resume); None after epoch 0."""
        config = self.config
        if epoch != 0 or config.warmup_iters <= 0:
            return None
        warmup = build_warmup(self.optimizer, min(config.warmup_iters, len(self.loader) - 1), config.warmup_factor)
        mid_epoch = self.start.mid_epoch
        if skip and mid_epoch.get("warmup_scheduler") is not None:  # type: ignore[union-attr]
            warmup.load_state_dict(mid_epoch["warmup_scheduler"])  # type: ignore[index]
            for group, base in zip(self.optimizer.param_groups, warmup.base_lrs):
                group["lr"] = base * warmup.lr_lambdas[0](warmup.last_epoch)
        return warmup

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool]) -> dict:
        """One epoch (or its rest); its stats with epoch, lr and throughput. A stop inside it writes the
        mid-epoch checkpoint and raises Preempted."""
        loader, skip = self.epoch_loader(epoch)
        warmup = self.warmup(epoch, skip)
        stats = train_one_epoch(
            self.train_model, self.optimizer, loader, self.device, epoch,
            scheduler_warmup=warmup, clip_grad_norm=self.config.clip_grad_norm, amp=self.amp,
            progress=self.progress, start_step=skip, should_stop=should_stop,
        )
        stopped_at = stats.pop("stopped_at", None)
        if skip:
            stats = _merge_epoch_stats(self.start.mid_epoch["epoch_stats"], stats)  # type: ignore[index]
        if stopped_at is not None and stopped_at < len(self.loader):
            raise self.save_mid_epoch(epoch, stopped_at, warmup, stats)
        stats["epoch"] = epoch
        stats["lr"] = self.optimizer.param_groups[0]["lr"]  # at the epoch's last step
        # images/s sums every rank, so the peak is every rank's
        stats.update(throughput_stats(stats["images_per_second"], self.flops_per_image, self.peak,
                                      devices=self.world))
        self.scheduler.step()
        return stats

    def save_mid_epoch(self, epoch: int, stopped_at: int, warmup: Any, stats: dict) -> Preempted:
        """Every rank's RNG states into a checkpoint that resumes after step `stopped_at`; the Preempted to raise."""
        rng_states = all_gather_object(_rng_state(self.device))  # each rank resumes its own RNGs
        if self.env.is_main and self.ckpt_path is not None:
            _save_mid_epoch(self.ckpt_path, model=self.bare, optimizer=self.optimizer, scheduler=self.scheduler,
                            warmup=warmup, epoch=epoch, step_in_epoch=stopped_at, rng=rng_states,
                            epoch_stats=stats, config=self.ckpt_config)
        if is_initialized():
            dist.barrier()  # no rank exits before the checkpoint exists
        return _preempted(epoch, stopped_at, self.ckpt_path, written=True, steps=len(self.loader))

    def save_epoch(self, epoch: int, stats: dict) -> None:
        if self.env.is_main and self.ckpt_path is not None:
            save_checkpoint(self.ckpt_path, model=self.bare, optimizer=self.optimizer, scheduler=self.scheduler,
                            epoch=epoch, config=self.ckpt_config, extra={"finished_epoch_stats": _plain_stats(stats)})
            maybe_fail("epoch_saved", epoch)  # checkpointed, not yet logged
        if is_initialized():
            dist.barrier()  # no rank goes on before the checkpoint exists


def _preempted(epoch: int, step: int, path: Path | None, *, written: bool, steps: int | None = None,
               finished: bool = False) -> Preempted:
    """The Preempted to raise; its message also goes to stderr (rank 0), as SystemExit(143) prints nothing."""
    if finished:
        where, saved = f"after its last epoch ({epoch - 1})", f"{path} is complete" if path else "nothing to save"
    else:
        where = f"in epoch {epoch} after step {step} of {steps}" if step else f"before epoch {epoch}"
        if path is None:
            saved = "no checkpoint_path, so this call's training is lost"
        elif written:
            saved = f"checkpoint {path} resumes there"
        else:
            saved = f"{path} (if any) holds the last finished epoch"
    message = f"SIGTERM: training stopped {where}; {saved}"
    if is_main_process():
        print(f"alod: {message}", file=sys.stderr, flush=True)
    return Preempted(message, epoch, step, path)
