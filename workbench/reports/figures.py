"""Sweep figures: metric vs image/text mask ratio, and training curves per variant.

The numbers behind each figure are computed by a plain function (`mask_ratio_stats`,
`curve_stats`) that tests check; the plotting functions only draw them. Only
FINISHED runs are drawn, like the tables. Figures are `matplotlib.figure.Figure`
objects (no pyplot): no global state, no backend to choose, nothing to close.
"""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.reports.store import FINISHED, MASK_RATIO_PARAMS, SCL_ENABLED_PARAM
from workbench.reports.tables import decimals, metric_label

CURVE_COLUMNS = 3


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == FINISHED]


def mask_ratio_axes(runs: pd.DataFrame) -> list[str]:
    """Which of 'image', 'text' take more than one value across the finished SCL runs."""
    runs = _scl_runs(runs)
    return [
        axis
        for axis, param in MASK_RATIO_PARAMS.items()
        if f"params.{param}" in runs and pd.to_numeric(runs[f"params.{param}"], errors="coerce").nunique() > 1
    ]


def _scl_runs(runs: pd.DataFrame) -> pd.DataFrame:
    runs = _finished(runs)
    if f"params.{SCL_ENABLED_PARAM}" in runs:
        runs = runs[runs[f"params.{SCL_ENABLED_PARAM}"].astype(str).str.lower() != "false"]
    return runs


def mask_ratio_stats(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per (image_mask_ratio, text_mask_ratio, metric): mean, std, n over finished SCL runs."""
    runs = _scl_runs(runs)
    frame = pd.DataFrame(index=runs.index)
    for axis, param in MASK_RATIO_PARAMS.items():  # a ratio a run did not log stays NaN
        frame[axis] = pd.to_numeric(runs[f"params.{param}"], errors="coerce") if f"params.{param}" in runs else math.nan
    rows = []
    for metric in metrics:
        column = f"metrics.{metric}"
        if column not in runs:
            continue
        values = frame.assign(value=runs[column]).dropna(subset=["value"])
        grouped = values.groupby(["image", "text"], dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
        rows.append(grouped.assign(metric=metric).rename(columns={"count": "n"}))
    if not rows:
        return pd.DataFrame(columns=["image", "text", "mean", "std", "n", "metric"])
    return pd.concat(rows, ignore_index=True)


def mask_ratio_figure(runs: pd.DataFrame, metrics: list[str], title: str):
    """Curves (metric vs the varying ratio, error bars = std over seeds) and, when both ratios
    vary, a heatmap of the mean; one row per metric. None when no ratio varies."""
    axes_varying = mask_ratio_axes(runs)
    data = mask_ratio_stats(runs, metrics)
    if not axes_varying or data.empty:
        return None
    shown = [m for m in metrics if (data["metric"] == m).any()]
    x_axis = axes_varying[0]
    line_axis = "text" if x_axis == "image" else "image"
    heat = len(axes_varying) == 2
    fig = Figure(figsize=(11 if heat else 5.5, 3.4 * len(shown)), layout="constrained")
    grid = fig.subplots(len(shown), 2 if heat else 1, squeeze=False)
    for row, metric in enumerate(shown):
        part = data[data["metric"] == metric]
        ax = grid[row, 0]
        for level, line in part.groupby(line_axis, dropna=False):
            line = line.sort_values(x_axis)
            name = "not logged" if pd.isna(level) else f"{level:g}"
            ax.errorbar(line[x_axis], line["mean"], yerr=line["std"].fillna(0.0), marker="o", capsize=3,
                        label=f"{line_axis} mask ratio {name}")
        ax.set_xlabel(f"{x_axis} mask ratio")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{metric_label(metric)} vs {x_axis} mask ratio (mean ± std over seeds)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        if heat:
            _heatmap(grid[row, 1], part, metric)
    fig.suptitle(title)
    return fig


def _heatmap(ax, part: pd.DataFrame, metric: str) -> None:
    import seaborn as sns

    means = part.pivot(index="text", columns="image", values="mean").sort_index(ascending=False)
    stds = part.pivot(index="text", columns="image", values="std").reindex_like(means)
    counts = part.pivot(index="text", columns="image", values="n").reindex_like(means)
    digits = decimals(part["mean"].tolist(), 2)
    notes = means.copy().astype(object)
    for i in means.index:
        for j in means.columns:
            mean, std, n = means.at[i, j], stds.at[i, j], counts.at[i, j]
            spread = 0.0 if pd.isna(std) else std
            notes.at[i, j] = "" if pd.isna(mean) else f"{mean:.{digits}f}\n±{spread:.{digits}f} (n={int(n)})"
    sns.heatmap(means, annot=notes.to_numpy(), fmt="", cmap="viridis", ax=ax, annot_kws={"fontsize": 7},
                cbar_kws={"label": f"{metric_label(metric)} (mean)"})
    ax.set_xlabel("image mask ratio")
    ax.set_ylabel("text mask ratio")
    ax.set_title(f"{metric_label(metric)}: image × text mask ratio")


def curve_stats(histories: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (key, variant, step): mean, std, n over the finished runs (seeds) of that variant."""
    finished = _finished(runs)[["run_id", "variant"]]
    data = histories.merge(finished, on="run_id")
    data = data.drop_duplicates(["run_id", "key", "step"], keep="last")  # a resumed run may re-log a step
    stats = data.groupby(["key", "variant", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"count": "n"})


def training_curves_figure(stats: pd.DataFrame, variants: list[str], title: str):
    """One panel per loss; per variant the mean over seeds with a ± std band. None without data."""
    if stats.empty:
        return None
    keys = list(dict.fromkeys(stats["key"]))
    keys = sorted(keys, key=lambda k: (k.endswith("/total"), k))
    columns = min(CURVE_COLUMNS, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.6 * columns, 3.3 * rows + 0.3 * math.ceil(len(variants) / 4)), layout="constrained")
    grid = fig.subplots(rows, columns, squeeze=False)
    colours = matplotlib.colormaps["tab10" if len(variants) <= 10 else "tab20"]
    for panel, key in zip(grid.flat, keys):
        part = stats[stats["key"] == key]
        for i, variant in enumerate(variants):
            line = part[part["variant"] == variant].sort_values("step")
            if line.empty:
                continue
            colour = colours(i % colours.N)
            seeds = int(line["n"].max())
            panel.plot(line["step"], line["mean"], color=colour, label=f"{variant} (n={seeds})", linewidth=1.2)
            band = line["std"].fillna(0.0).to_numpy()
            panel.fill_between(line["step"], line["mean"] - band, line["mean"] + band, color=colour, alpha=0.2)
        panel.set_title(key.removeprefix("train/loss/"))
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.set_xlabel("step")
        panel.set_ylabel("loss")
        panel.grid(alpha=0.3)
    for panel in list(grid.flat)[len(keys) :]:
        panel.set_visible(False)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))),
               fontsize="small", title="variant (mean ± std over seeds)")
    fig.suptitle(title)
    return fig
