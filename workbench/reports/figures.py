"""Sweep figures: one per sweep shape (2-D grid heatmap, numeric-axis line, categorical bars
with a dot per seed) and training curves per variant.

The numbers behind each figure come from the ablation table or a plain function
(`grid_stats`, `curve_stats`) that tests check; the plotting functions only draw them. Only
FINISHED runs are drawn, like the tables. Figures are `matplotlib.figure.Figure`
objects (no pyplot): no global state, no backend to choose, nothing to close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from workbench.reports.cells import decimals, grid, metric_label
from workbench.reports.stats import AblationTable
from workbench.reports.store import FINISHED, MASK_RATIO_PARAMS, Sweep

CURVE_COLUMNS = 3
MAX_BANDS = 8  # more variants: mean lines only (a ± std band each would hide every line)


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == FINISHED]


# ------------------------------------------------------------- sweep shape
@dataclass(frozen=True)
class Shape:
    """How a sweep's variants are laid out: 'grid' (2 numeric axes), 'axis' (1 numeric axis) or 'categorical'."""

    kind: str
    axes: list[str]  # config keys, outer first (grid: [x, y])
    values: dict[str, dict[str, float]]  # axis -> variant -> value (numeric kinds only)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def variant_axes(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """axis key -> variant -> value: from the spec's axes and variant overrides (sweep.yaml),
    else from the mask-ratio params the runs logged (sweeps without a sweep.yaml)."""
    spec = sweep.spec
    if spec.axes and spec.overrides:
        return {
            key: {v: spec.overrides[v][key] for v in spec.variants if key in spec.overrides.get(v, {})}
            for key in spec.axes
        }
    found = {}
    for param in MASK_RATIO_PARAMS.values():
        column = f"params.{param}"
        if column in sweep.runs:
            per_variant = sweep.runs.dropna(subset=[column]).groupby("variant", sort=False)[column].first()
            if per_variant.nunique() > 1:
                found[param] = per_variant.to_dict()
    return found


def sweep_shape(sweep: Sweep) -> Shape:
    axes = variant_axes(sweep)
    numeric = {}
    for key, by_variant in axes.items():
        converted = {v: _numeric(x) for v, x in by_variant.items()}
        if by_variant and all(x is not None for x in converted.values()) and len(set(converted.values())) > 1:
            numeric[key] = converted
    covered = lambda keys: all(all(v in numeric[k] for k in keys) for v in sweep.spec.variants)  # noqa: E731
    if len(axes) == 2 and len(numeric) == 2 and covered(list(numeric)):
        return Shape("grid", list(numeric), numeric)
    if len(axes) == 1 and len(numeric) == 1 and covered(list(numeric)):
        return Shape("axis", list(numeric), numeric)
    return Shape("categorical", [], {})


def axis_label(key: str) -> str:
    return key.rsplit(".", 1)[-1].replace("_", " ")


def seed_values(sweep: Sweep, metric: str) -> pd.DataFrame:
    """Finished runs' values of `metric`: columns variant, seed, value (NaN dropped)."""
    runs = _finished(sweep.runs)
    column = f"metrics.{metric}"
    if column not in runs:
        return pd.DataFrame(columns=["variant", "seed", "value"])
    frame = pd.DataFrame({"variant": runs["variant"], "seed": runs["seed"], "value": runs[column].astype(float)})
    return frame.dropna(subset=["value"])


def figure_metrics(sweep: Sweep, table: AblationTable, limit: int = 4) -> list[str]:
    """The sweep's objective first (when in the table), then the table's other metrics, at most `limit`."""
    objective = [sweep.spec.objective] if sweep.spec.objective in table.metrics else []
    return (objective + [m for m in table.metrics if m not in objective])[:limit]


def grid_stats(sweep: Sweep, table: AblationTable, shape: Shape, metric: str) -> pd.DataFrame:
    """Per variant of a 2-D grid: x, y, mean, std, n and the significance mark of its table cell."""
    x_key, y_key = shape.axes
    marks = grid(table).cells
    rows = [
        {
            "variant": v,
            "x": shape.values[x_key][v],
            "y": shape.values[y_key][v],
            "mean": table.cell(v, metric, "mean"),
            "std": table.cell(v, metric, "std"),
            "n": table.cell(v, metric, "n"),
            "mark": marks[v][metric].mark,
        }
        for v in table.variants
        if v in shape.values[x_key] and v in shape.values[y_key]
    ]
    return pd.DataFrame(rows)


def heatmap_figure(sweep: Sweep, table: AblationTable, shape: Shape, metric: str) -> Figure:
    """Mean of `metric` over the 2-D grid, each cell annotated with mean, ± std and its † / ‡;
    the baseline's cell is outlined."""
    data = grid_stats(sweep, table, shape, metric)
    means = data.pivot(index="y", columns="x", values="mean").sort_index(ascending=False)
    digits = decimals(data["mean"].tolist(), 1)
    notes = means.astype(object).copy()
    lookup = data.set_index(["y", "x"])
    for y in means.index:
        for x in means.columns:
            if (y, x) not in lookup.index or pd.isna(lookup.at[(y, x), "mean"]):
                notes.at[y, x] = ""
                continue
            row = lookup.loc[(y, x)]
            spread = "" if pd.isna(row["std"]) else f"\n±{row['std']:.{digits}f}"
            notes.at[y, x] = f"{row['mean']:.{digits}f}{row['mark']}{spread}"
    fig = Figure(figsize=(1.3 * len(means.columns) + 2.6, 0.9 * len(means.index) + 1.6), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        means,
        annot=notes.to_numpy(),
        fmt="",
        cmap="viridis",
        ax=ax,
        annot_kws={"fontsize": 8},
        cbar_kws={"label": f"{metric_label(metric)} (mean over seeds)"},
        linewidths=0.5,
    )
    if table.baseline in set(data["variant"]):
        base = data[data["variant"] == table.baseline].iloc[0]
        col, row = list(means.columns).index(base["x"]), list(means.index).index(base["y"])
        ax.add_patch(Rectangle((col + 0.03, row + 0.03), 0.94, 0.94, fill=False, edgecolor="#e41a1c", linewidth=3))
    ax.set_xlabel(axis_label(shape.axes[0]))
    ax.set_ylabel(axis_label(shape.axes[1]))
    ax.set_title(f"{table.sweep}: {metric_label(metric)}\n† p<0.05, ‡ p<0.01 vs baseline (red box), Holm", fontsize=10)
    return fig


def line_figure(sweep: Sweep, table: AblationTable, shape: Shape, metrics: list[str]) -> Figure:
    """Per metric: mean ± std over seeds along the numeric axis, seeds as dots, the reference dashed."""
    (key,) = shape.axes
    fig = Figure(figsize=(3.6 * len(metrics), 3.4))
    panels = fig.subplots(1, len(metrics), squeeze=False)[0]
    _one_row_layout(fig, 3.6 * len(metrics), 3.4, len(metrics))
    cells = grid(table).cells
    for ax, metric in zip(panels, metrics, strict=True):
        points = seed_values(sweep, metric)
        points = points.assign(x=points["variant"].map(shape.values[key]))
        summary = pd.DataFrame(
            {
                "x": [shape.values[key][v] for v in table.variants],
                "mean": [table.cell(v, metric, "mean") for v in table.variants],
                "std": [table.cell(v, metric, "std") for v in table.variants],
                "mark": [cells[v][metric].mark for v in table.variants],
            }
        ).sort_values("x")
        ax.errorbar(
            summary["x"],
            summary["mean"],
            yerr=summary["std"].fillna(0.0),
            marker="o",
            capsize=4,
            color="C0",
            label="mean ± std",
        )
        ax.scatter(points["x"], points["value"], s=12, color="C0", alpha=0.35, label="one seed", zorder=3)
        for x, mean, mark in zip(summary["x"], summary["mean"], summary["mark"], strict=True):
            if mark and pd.notna(mean):
                ax.annotate(mark, (x, mean), textcoords="offset points", xytext=(5, 5), fontsize=11)
        _reference_line(ax, table, metric)
        ax.set_xlabel(axis_label(key))
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize="small")
    fig.suptitle(
        f"{table.sweep}: baseline {axis_label(key)} = {shape.values[key].get(table.baseline, '?')}\n"
        "† p<0.05, ‡ p<0.01 vs baseline (Holm)",
        fontsize=10,
    )
    return fig


def bars_figure(sweep: Sweep, table: AblationTable, metrics: list[str]) -> Figure:
    """Per metric: a bar per variant (mean over seeds) with one dot per seed, the reference dashed."""
    labels = grid(table).labels
    width = max(3.6, 0.55 * len(table.variants) + 1.5)
    fig = Figure(figsize=(width * len(metrics), 3.9))
    panels = fig.subplots(1, len(metrics), squeeze=False)[0]
    _one_row_layout(
        fig, width * len(metrics), 3.9, len(metrics), bottom_in=0.5 + (0.7 if len(table.variants) > 3 else 0.0)
    )
    cells = grid(table).cells
    order = [labels[v] for v in table.variants]
    palette = {labels[v]: ("0.6" if v == table.baseline else "C0") for v in table.variants}
    for ax, metric in zip(panels, metrics, strict=True):
        points = seed_values(sweep, metric)
        points = points.assign(label=points["variant"].map(labels))
        means = pd.DataFrame({"label": order, "mean": [table.cell(v, metric, "mean") for v in table.variants]})
        sns.barplot(
            data=means, x="label", y="mean", hue="label", order=order, palette=palette, ax=ax, legend=False, alpha=0.8
        )
        sns.stripplot(data=points, x="label", y="value", order=order, color="black", size=4, jitter=0.15, ax=ax)
        tops = points.groupby("variant")["value"].max()
        for i, v in enumerate(table.variants):
            mark, mean = cells[v][metric].mark, table.cell(v, metric, "mean")
            if mark and pd.notna(mean):  # above the bar and its highest seed
                ax.annotate(
                    mark,
                    (i, max(mean, tops.get(v, mean))),
                    textcoords="offset points",
                    xytext=(0, 5),
                    ha="center",
                    fontsize=11,
                )
        _reference_line(ax, table, metric)
        ax.set_xlabel("")
        ax.set_ylabel(metric_label(metric))
        ax.tick_params(axis="x", labelrotation=30 if len(table.variants) > 3 else 0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{table.sweep}: bars = mean, dots = seeds, grey = baseline\n† p<0.05, ‡ p<0.01 vs baseline (Holm)", fontsize=10
    )
    return fig


def _one_row_layout(fig: Figure, width_in: float, height_in: float, panels: int, bottom_in: float = 0.5) -> None:
    """Fixed margins for a row of panels (a two-line title on top): constrained layout would
    double the time to draw the figure, which a 1,000-run report pays per sweep."""
    fig.subplots_adjust(
        left=0.75 / width_in,
        right=1 - 0.15 / width_in,
        top=1 - 0.65 / height_in,
        bottom=bottom_in / height_in,
        wspace=0.9 / max(1.0, width_in / panels - 0.9),
    )


def _reference_line(ax, table: AblationTable, metric: str) -> None:
    reference = table.references.get(metric)
    if reference is not None:
        ax.axhline(reference.mean, color="0.4", linestyle="--", linewidth=1, label=f"{reference.kind} reference")


def sweep_figures(sweep: Sweep, table: AblationTable) -> dict[str, Figure]:
    """The figure that fits the sweep's shape, by file stem: grid -> heatmap of the objective,
    numeric axis -> line with error bars, otherwise bars with a dot per seed."""
    metrics = figure_metrics(sweep, table)
    if not metrics or not table.variants:
        return {}
    shape = sweep_shape(sweep)
    if shape.kind == "grid":
        return {"heatmap": heatmap_figure(sweep, table, shape, metrics[0])}
    if shape.kind == "axis":
        return {"line": line_figure(sweep, table, shape, metrics)}
    return {"bars": bars_figure(sweep, table, metrics)}


def curve_stats(histories: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (key, variant, step): mean, std, n over the finished runs (seeds) of that variant."""
    finished = _finished(runs)[["run_id", "variant"]]
    data = histories.merge(finished, on="run_id")
    data["variant"] = data["variant"].astype(object)  # plain objects: arrow-backed strings make each groupby slow
    data = data.drop_duplicates(["run_id", "key", "step"], keep="last")  # a resumed run may re-log a step
    stats = data.groupby(["key", "variant", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"count": "n"})


def training_curves_figure(
    stats: pd.DataFrame,
    variants: list[str],
    title: str,
    labels: dict[str, str] | None = None,
    highlight: list[str] | None = None,
):
    """One panel per loss; per variant the mean over seeds with a ± std band. With more than
    MAX_BANDS variants only `highlight` (the baseline and the best) get a colour, band and legend
    entry; the others are thin grey lines (33 coloured lines and bands hide each other). None without data."""
    if stats.empty:
        return None
    keys = list(dict.fromkeys(stats["key"]))
    keys = sorted(keys, key=lambda k: (k.endswith("/total"), k))
    columns = min(CURVE_COLUMNS, len(keys))
    rows = math.ceil(len(keys) / columns)
    many = len(variants) > MAX_BANDS
    shown = [v for v in (highlight or variants[:1]) if v in variants] if many else list(variants)
    entries = len(shown) + (1 if many else 0)
    legend_rows = math.ceil(entries / 4)
    height = 3.3 * rows + 0.3 * legend_rows + 0.6
    fig = Figure(figsize=(4.6 * columns, height))
    grid = fig.subplots(rows, columns, squeeze=False)
    # fixed margins (inches -> fractions): constrained layout would double the time to draw the figure
    fig.subplots_adjust(
        left=0.6 / (4.6 * columns),
        right=0.99,
        top=1 - 0.75 / height,
        bottom=(0.55 + 0.22 * legend_rows + 0.45) / height,
        wspace=0.28,
        hspace=0.55,
    )
    by_key = {key: part for key, part in stats.groupby("key", sort=False)}
    for panel, key in zip(grid.flat, keys, strict=True):
        _curve_panel(panel, key, by_key[key], variants, shown, many, labels or {})
    for panel in list(grid.flat)[len(keys) :]:
        panel.set_visible(False)
    handles, names = grid.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(4, max(1, len(names))),
        fontsize="small",
        title="variant (mean ± std over seeds)",
        frameon=False,
    )
    fig.suptitle(title)
    return fig


def _curve_panel(
    panel, key: str, part: pd.DataFrame, variants: list[str], shown: list[str], many: bool, labels: dict[str, str]
) -> None:
    """One loss's panel: the `shown` variants' mean ± std, the rest (when `many`) as grey lines."""
    colours = matplotlib.colormaps["tab10"]
    lines = {variant: line.sort_values("step") for variant, line in part.groupby("variant", sort=False)}
    if many:  # the rest as one grey line collection, drawn first (underneath)
        rest = [lines[v][["step", "mean"]].to_numpy() for v in variants if v in lines and v not in shown]
        if rest:
            panel.add_collection(
                LineCollection(rest, colors="0.75", linewidths=0.6, label=f"other variants ({len(rest)})")
            )
    for i, variant in enumerate(shown):
        line = lines.get(variant)
        if line is None:
            continue
        colour = colours(i % colours.N)
        seeds = int(line["n"].max())
        name = labels.get(variant, variant)
        panel.plot(line["step"], line["mean"], color=colour, label=f"{name} (n={seeds})", linewidth=1.2)
        band = line["std"].fillna(0.0).to_numpy()
        panel.fill_between(line["step"], line["mean"] - band, line["mean"] + band, color=colour, alpha=0.2)
    panel.autoscale_view()
    panel.set_title(key.removeprefix("train/loss/"))
    panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    panel.set_xlabel("step")
    panel.set_ylabel("loss")
    panel.grid(alpha=0.3)
