"""Where trials run: one slot = one concurrent child process, pinned to a GPU or the CPU.

``--gpus 0,1`` gives one slot per GPU, ``--per-gpu K`` packs K trials on each,
``--slots N`` gives N CPU slots; by default every visible GPU, else one CPU slot.
Each slot gets cores / slots threads (torch intra-op, OpenMP, MKL, OpenBLAS), so
slots never oversubscribe the cores they share: 2-thread steps on a loaded 2-core
machine took 3x as long as 1-thread ones (benchmarks/bench_sweep_makespan.py).
A GPU slot's child sees only its GPU (``CUDA_VISIBLE_DEVICES``); a CPU slot's child
sees none, so ``train.device=auto`` lands on the CPU. GPU indices count the GPUs
this process sees: under ``CUDA_VISIBLE_DEVICES=4,5``, ``--gpus 1`` is physical GPU 5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from workbench.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    name: str  # "gpu0", "gpu0.1" (second trial packed on GPU 0), "cpu0"
    env: dict[str, str] = field(default_factory=dict)  # set in the child before anything touches CUDA or threads
    threads: int = 1  # torch intra-op threads of the child

    @property
    def device(self) -> str:
        return "cpu" if self.name.startswith("cpu") else "cuda"


def parse_gpus(text: str) -> list[int]:
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. --gpus 0,1,2,3") from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text!r}: expected distinct GPU indices >= 0, e.g. --gpus 0,1,2,3")
    return gpus


def visible_gpu_count() -> int:
    """GPUs this process may use (respects CUDA_VISIBLE_DEVICES); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def usable_cpu_count() -> int:
    """CPUs this process may run on: its affinity (taskset, SLURM, a container's cpuset), not every
    core of the machine, so the slots' threads never oversubscribe a share of a host."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def plan_slots(
    gpus: str | None = None,
    per_gpu: int = 1,
    slots: int | None = None,
    *,
    gpu_count: int | None = None,
    cpu_count: int | None = None,
) -> list[Slot]:
    """The slots a sweep runs on. `gpu_count`/`cpu_count` default to what this process may use."""
    if per_gpu < 1:
        raise ConfigError(f"--per-gpu {per_gpu}: must be >= 1")
    if slots is not None and slots < 1:
        raise ConfigError(f"--slots {slots}: must be >= 1")
    if slots is not None and (gpus is not None or per_gpu != 1):
        raise ConfigError(
            "--slots excludes --gpus and --per-gpu: --slots runs CPU processes, --gpus/--per-gpu GPU ones"
        )
    cores = cpu_count if cpu_count is not None else usable_cpu_count()
    if slots is not None:
        return [_slot(f"cpu{i}", "", max(1, cores // slots)) for i in range(slots)]
    count = gpu_count if gpu_count is not None else visible_gpu_count()
    if gpus is not None:
        indices = parse_gpus(gpus)
        too_high = [g for g in indices if g >= count]
        if too_high:
            raise ConfigError(f"--gpus {gpus}: GPU {too_high[0]} does not exist (this process sees {count} GPU(s))")
    else:
        indices = list(range(count))
    if not indices:
        if per_gpu != 1:
            raise ConfigError(f"--per-gpu {per_gpu}: no GPU is visible; use --slots N for CPU processes")
        return [_slot("cpu0", "", cores)]
    physical = _physical_ids()
    threads = max(1, cores // (len(indices) * per_gpu))
    return [
        _slot(
            f"gpu{i}" if per_gpu == 1 else f"gpu{i}.{k}",
            physical[i] if physical is not None and i < len(physical) else str(i),
            threads,
        )
        for i in indices
        for k in range(per_gpu)
    ]


def _slot(name: str, device: str, threads: int) -> Slot:
    """A child sees only `device` ("" = no GPU) and runs `threads` threads in every library."""
    return Slot(name, {"CUDA_VISIBLE_DEVICES": device, **thread_env(threads)}, threads)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Thread-count variables for a slot's child (and anything it starts, e.g. DataLoader workers)."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def _physical_ids() -> list[str] | None:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
