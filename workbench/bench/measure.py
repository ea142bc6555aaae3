"""Clocks, FLOP counting and the matmul peak the MFU is measured against.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one real
forward + backward step: matrix products (mm, addmm, bmm, baddbmm), convolutions
and attention (2 FLOPs per multiply-add); elementwise ops, norms and softmax are
not counted (the usual "model FLOPs" convention). torch has no formula for the
CPU flash-attention kernels, so we register one (the same as its CUDA ones).
The peak is a large square matmul timed in the same process on the same device
(fp32 on CPU, bf16 on CUDA), so MFU = achieved FLOP/s / that peak.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils import flop_counter

aten = torch.ops.aten


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a wall clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds `fn()` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """(max - min) / median of repeated timings: how noisy the machine was."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


# ------------------------------------------------------------------- FLOPs
def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _extra_formulas() -> dict:
    """Formulas torch lacks: the CPU flash-attention kernels SDPA dispatches to on CPU."""
    formulas = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_backward
    return formulas


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per aten op) of one call of `fn`."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with counter:
        fn()
    per_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), per_op


# -------------------------------------------------------------------- peak
def peak_operands(device: torch.device, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random [size, size] matrices: fp32 on CPU, bf16 on CUDA (the dtype training runs in)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    return a, b


def matmul_flops_per_s(a: torch.Tensor, b: torch.Tensor, device: torch.device, calls: int = 1) -> float:
    """FLOP/s of `calls` products a @ b (2 n^3 FLOPs each)."""
    seconds = timed(lambda: [torch.mm(a, b) for _ in range(calls)], device)
    return calls * 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds
