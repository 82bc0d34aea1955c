"""DDP from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK).

Without WORLD_SIZE everything is a single-process no-op, so the same code runs
under `python` and `torchrun`. Only the main process (rank 0) should log,
write files meant for people, or talk to MLflow: check `is_main_process()`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistEnv:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_env() -> DistEnv:
    """The current process group's view, or the environment's before init."""
    if is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistEnv.from_env()


def init_distributed(backend: str | None = None) -> DistEnv:
    """Join the process group torchrun describes; no-op when WORLD_SIZE is unset.

    nccl when CUDA is available (and the local GPU is selected), gloo otherwise.
    """
    env = DistEnv.from_env()
    if "WORLD_SIZE" not in os.environ or is_initialized():
        return get_env()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None or "MASTER_ADDR" not in os.environ:
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
        return env
    # Under torchrun the agent's store can outlive a restart; keys of the failed attempt
    # (e.g. rank 0's old gloo address) would then be read by the new one. A prefix per
    # attempt keeps restarted workers from connecting to dead peers. The restart count is
    # per node, though: when a worker dies on one node, the other nodes' agents restart
    # theirs without counting, and a prefix per count split one round over two key spaces
    # (both sides waited forever: tests/test_multinode.py). So the prefix is only for the
    # agent's shared store, which alod uses on one node; across nodes alod's torchrun (and
    # the README's command for the other nodes) sets TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1:
    # a new store, hosted by rank 0, every round, empty, so one name for every node.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                          is_master=not agent_store and env.rank == 0, timeout=timedelta(minutes=30))
    prefix = f"alod/attempt_{restart}" if agent_store else "alod/round"
    dist.init_process_group(backend=backend, store=dist.PrefixStore(prefix, store),
                            rank=env.rank, world_size=env.world_size)
    return env


def is_main_process() -> bool:
    return get_env().rank == 0


def world_size() -> int:
    return get_env().world_size if is_initialized() else 1


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """[obj from rank 0, rank 1, ...]; [obj] without a process group."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None -> this process's GPU under torchrun (LOCAL_RANK) if there is one, else the CPU;
    a bare "cuda" -> this process's GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", get_env().local_rank)
    return device


def default_device() -> torch.device:
    """This process's GPU under torchrun (LOCAL_RANK), else the CPU."""
    return resolve_device(None)


def shard(items: Sequence) -> list:
    """This rank's contiguous shard: no item twice, none dropped, whatever the sizes."""
    env = DistEnv.from_env()
    bounds = np.linspace(0, len(items), env.world_size + 1).astype(int)
    return list(items[bounds[env.rank]:bounds[env.rank + 1]])


def gather(mine: list) -> list:
    """Every rank's shard, concatenated in rank order (so in input order)."""
    if world_size() == 1:
        return mine
    return [x for part in all_gather_object(mine) for x in part]


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
