"""The benchmark as a plain-text table (``--json`` prints ``BenchResult.to_dict()`` instead)."""

from __future__ import annotations

from workbench.bench.breakdown import ENCODERS, OPTIMIZER, OTHER
from workbench.bench.runner import BenchResult

# targets of the performance issue (benchmark numbers, not tests)
DATA_LOADING_TARGET = 0.05
TRACKING_TARGET = 0.02


def _pct(value: float) -> str:
    return f"{100 * value:5.1f} %"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]]


def _shares(result: BenchResult, title: str, get) -> list[str]:
    """One row per key over all configs (blank where a config lacks it)."""
    per_config = [get(c) for c in result.configs]
    keys = list(dict.fromkeys(k for shares in per_config for k in shares))
    rows = [[k] + [_pct(shares[k]) if k in shares else "" for shares in per_config] for k in keys]
    return ["", *_rows([title] + [c.name for c in result.configs], rows)]


def render(result: BenchResult) -> str:
    before, after = result.load_average
    lines = [
        f"workbench bench on {result.device} ({result.threads} threads, {result.cores} cores), "
        f"torch {result.torch_version}; load average {before:.1f} -> {after:.1f}"
        + (" [quick: tiny widths]" if result.quick else ""),
        "FLOPs: FlopCounterMode over one forward+backward step (matmuls, convolutions, attention; "
        "2 per multiply-add; elementwise ops not counted)",
        f"peak: {'bf16' if result.device.startswith('cuda') else 'fp32'} {result.peak_matrix}x{result.peak_matrix} "
        "matmul timed after each block of steps in this process; MFU best = fastest step / fastest peak "
        "(idle machine), MFU median = median step / median peak (as loaded now)",
        "",
    ]
    header = [
        "config",
        "batch",
        "step s best/median",
        "spread",
        "samples/s best/median",
        "GFLOP/step",
        "peak GFLOP/s best/median",
        "MFU best",
        "MFU median",
        "fusion passes",
    ]
    rows = [
        [
            c.name,
            c.batch_size,
            f"{c.best_step_s:.3f} / {c.step_s:.3f}",
            _pct(c.to_dict()["step_spread"]),
            f"{c.best_samples_per_s:.2f} / {c.samples_per_s:.2f}",
            f"{c.flops_per_step / 1e9:.2f}",
            f"{max(c.peak_flops_per_s) / 1e9:.1f} / {c.peak / 1e9:.1f}",
            _pct(c.best_mfu),
            _pct(c.mfu),
            c.fusion_passes,
        ]
        for c in result.configs
    ]
    lines += _rows(header, rows)
    return "\n".join(lines + _breakdown_lines(result) + _overhead_lines(result))


def _breakdown_lines(result: BenchResult) -> list[str]:
    """Where a step's time goes (fusion passes, objectives, shared parts), from one profiled step."""
    lines: list[str] = []
    if result.configs:
        lines += _shares(result, "fusion pass (fwd+bwd, share of step)", lambda c: c.breakdown.passes)
        lines += _shares(result, "objective (own + even share of passes read)", lambda c: c.breakdown.objectives)
        lines += _shares(
            result,
            "shared",
            lambda c: {k: v for k, v in c.breakdown.components.items() if k in (ENCODERS, OPTIMIZER, OTHER)},
        )
        readers = "; ".join(f"{p}: {', '.join(r)}" for p, r in result.configs[0].breakdown.readers.items())
        lines.append(f"(pass readers: {readers}; shares from one profiled step)")
    return lines


def _overhead_lines(result: BenchResult) -> list[str]:
    """The training loop's data-loading and tracking overheads (none when not measured)."""
    lines: list[str] = []
    if result.overheads is not None:
        o = result.overheads
        lines += [
            "",
            f"training loop, base config on its data, {len(o.blocks)} blocks of {result.loop_steps} steps "
            f"(tracking on/off alternating):",
            f"  data loading            {_pct(o.data_loading_share)} of loop time   (target <= "
            f"{_pct(DATA_LOADING_TARGET).strip()})",
            f"  tracking overhead, A/B  {_pct(o.tracking_ab)}   (untracked step spread {_pct(o.noise).strip()})",
            f"  tracking overhead, direct {_pct(o.tracking_direct)} of loop time (target <= "
            f"{_pct(TRACKING_TARGET).strip()})",
            f"  MLflow run start        {o.run_start_s:.2f} s once per run",
        ]
    return lines
