"""Performance benchmark of the pre-training step: samples/s, MFU, time per objective,
per fusion pass, data loading and tracking overhead (`workbench bench`)."""

from workbench.bench.report import render
from workbench.bench.runner import BenchOptions, BenchResult, run_bench

__all__ = ["BenchOptions", "BenchResult", "render", "run_bench"]
