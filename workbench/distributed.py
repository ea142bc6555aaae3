"""One run on many processes (DDP): the process group, who does what, cross-rank gathers.

`torchrun --nproc_per_node=N -m workbench run ...` (or `workbench run --nproc N`,
which starts that) gives every process RANK / WORLD_SIZE / LOCAL_RANK and a
rendezvous address in its environment; `setup` joins the group (NCCL on CUDA,
Gloo on CPU). Roles: every rank trains on its slice of each step's global batch
(`train.batch_size` is the global batch); rank 0 alone logs to MLflow, writes
checkpoints and evaluates. Contrastive losses gather every rank's features with
gradient (`gather_with_grad`, as ALBEF / open_clip do), so the negatives are the
whole global batch. Without a process group every helper is the identity, so
single-process code pays nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed._functional_collectives import all_gather_single_autograd, wait_tensor
from torch.nn.parallel import DistributedDataParallel

from workbench.device import resolve_device
from workbench.errors import ConfigError

# what torchrun puts into every worker's environment
ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank (global), world size and rank on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, checkpoints and evaluates."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1


def ranks_from_env(env: dict[str, str] | None = None) -> Ranks:
    """The Ranks torchrun described in the environment; one process when it did not."""
    env = os.environ if env is None else env
    if ENV_WORLD_SIZE not in env:
        return Ranks()
    try:
        return Ranks(int(env[ENV_RANK]), int(env[ENV_WORLD_SIZE]), int(env.get(ENV_LOCAL_RANK, env[ENV_RANK])))
    except (KeyError, ValueError):
        shown = {k: env.get(k) for k in (ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK)}
        raise ConfigError(f"distributed launch: bad torchrun environment {shown} — start with torchrun") from None


def device_for(device_name: str, ranks: Ranks) -> torch.device:
    """`train.device` of one rank: 'auto'/'cuda' become this rank's own GPU (cuda:LOCAL_RANK)."""
    if not ranks.active:
        return resolve_device(device_name)
    if device_name not in ("auto", "cuda", "cpu"):
        raise ConfigError(
            f"train.device: {device_name!r} with {ranks.world_size} processes — allowed: auto, cuda "
            "(each rank takes cuda:LOCAL_RANK; pick GPUs with CUDA_VISIBLE_DEVICES) or cpu"
        )
    device = resolve_device(device_name)
    if device.type == "cpu":
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"--nproc: local rank {ranks.local_rank} has no GPU (this host has {torch.cuda.device_count()}) — "
            "start at most one process per GPU, or use train.device=cpu"
        )
    return torch.device("cuda", ranks.local_rank)


def setup(device_name: str, env: dict[str, str] | None = None) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun described (if any) and pick this rank's device."""
    ranks = ranks_from_env(env)
    device = device_for(device_name, ranks)
    if ranks.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return ranks, device


def teardown(ranks: Ranks, *, synchronize: bool = True) -> None:
    """Leave the process group `setup` joined; `synchronize` first waits for every rank (not on an error path)."""
    if not ranks.active or not dist.is_initialized():
        return
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()


def is_active() -> bool:
    """Inside a process group of more than one rank (so losses must gather across ranks)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def row_offset(local_rows: int) -> int:
    """Index of this rank's first row in a gathered batch (ranks hold equal slices, in rank order)."""
    return dist.get_rank() * local_rows if is_active() else 0


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's `tensor` concatenated along dim 0; gradients flow back to the rank that made each part.

    The functional autograd all-gather sums the incoming gradients over ranks in
    backward; with DDP's gradient averaging, each rank's mean loss over its own
    rows against all gathered columns trains exactly like one process on the
    global batch. (The deprecated torch.distributed.nn.functional.all_gather
    returned wrong gradients on Gloo for the gathered [B, T, D] frame features
    in tests/test_distributed.py.)
    """
    if not is_active():
        return tensor
    return wait_tensor(all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD))


@torch.no_grad()
def gather(tensor: Tensor) -> Tensor:
    """Every rank's `tensor` concatenated along dim 0, without gradient (targets, ids, queues)."""
    if not is_active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_ranks(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Scalar metrics averaged over ranks (one all-reduce); a NaN on any rank shows on every rank."""
    if not is_active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked)  # SUM: Gloo has no AVG
    return dict(zip(values, stacked / dist.get_world_size(), strict=True))


def agreed_signal(signum: int | None, device: torch.device) -> int | None:
    """A stop signal any rank received, seen by every rank at the same step (one MAX all-reduce).

    torchrun forwards SIGTERM to each worker separately: one rank may see it a step
    before another, stop, and leave the other blocked in the next step's all-reduce
    (which then fails, and the run ends FAILED instead of KILLED). Acting on the
    agreed value makes every rank stop after the same step.
    """
    if not is_active():
        return signum
    flag = torch.tensor([signum or 0], dtype=torch.int64, device=device)  # NCCL: on the rank's GPU
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank (e.g. the MLflow run id)."""
    if not is_active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (e.g. RNG states for a checkpoint)."""
    if not is_active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def local_batch_size(global_batch: int, world: int) -> int:
    """This rank's share of `train.batch_size`, which must split evenly over the ranks."""
    if global_batch % world:
        raise ConfigError(
            f"train.batch_size: {global_batch} does not split over {world} processes — it is the global "
            f"batch; use a multiple of {world}"
        )
    return global_batch // world


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank `rank`'s own random stream (masks, negatives, dropout); rank 0 keeps `seed`.

    Ranks must not share one stream: sample i of every rank would get the same mask.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def wrap(module: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """DDP around `module` when there are several ranks (else `module` itself).

    `find_unused_parameters`: a toggle may leave parameters out of the loss (e.g.
    the text stream's last fusion layer when only ITC and MVSC are on).
    `forward_sync_buffers=False`: there is no BatchNorm, and the momentum queues
    (ITC) are kept equal on every rank by enqueuing gathered features.
    """
    if not ranks.active:
        return module
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        forward_sync_buffers=False,
    )


def check_nproc(nproc: int) -> None:
    """--nproc is a process count this machine can run, checked before any config is read."""
    if nproc < 1:
        raise ConfigError(f"--nproc: {nproc} is not a process count — allowed: >= 1")
    most = 8 * max(torch.cuda.device_count(), os.cpu_count() or 1)  # beyond this it only thrashes
    if nproc > most:
        raise ConfigError(
            f"--nproc: {nproc} processes is far more than this machine's GPUs or CPU cores (allowed: 1..{most})"
        )


def torchrun_command(nproc: int, cli_args: list[str]) -> list[str]:
    """The argument list that starts `workbench <cli_args>` on `nproc` local processes via torchrun."""
    if nproc < 1:
        raise ConfigError(f"--nproc: {nproc} is not a process count — allowed: >= 1")
    return [
        sys.executable,
        "-m",
        "workbench.launch.torchrun",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "workbench",
        *cli_args,
    ]
