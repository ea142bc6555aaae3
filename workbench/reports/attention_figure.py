"""`workbench report attention RUN_ID [--compare RUN_ID]`: attention maps of one or two runs.

Writes to `<out>/attention/<run>[_vs_<run>]/`:
* `overview.{png,pdf}` — per held-out image: the image with the named object outlined,
  then per run the [CLS] cross-attention and the object word's Grad-CAM;
* `image_<k>.{png,pdf}` — per word of the caption: cross-attention (SCL style) and
  word-conditional Grad-CAM (SoftMask style), one row pair per run;
* `scores.{md,csv}` — the attention-in-object scores per run.
Maps are drawn as they come from the model (patch grid, nearest-neighbour upsampling):
the arrays given to `imshow` are the model's numbers, colour-mapped only by matplotlib.
Artifacts (never metrics) go under `reports/attention/` of the sweep's parent run, or of
the run itself when it is not part of a sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from workbench import report_paths, tracking
from workbench.data.transforms import normalization
from workbench.errors import ConfigError
from workbench.reports import outputs
from workbench.reports.attention_maps import (
    HeldOut,
    LoadedRun,
    WordMaps,
    cls_maps,
    held_out,
    in_object_scores,
    load_run,
    object_word_rows,
    word_maps,
)

CROSS_CMAP = "inferno"
GRADCAM_CMAP = "jet"
OVERLAY_ALPHA = 0.55
SCORE_COLUMNS = {
    "cls_cross": "in-object, cross-attn [CLS] (these images)",
    "word_cross": "in-object, cross-attn (object words)",
    "word_gradcam": "in-object, Grad-CAM (object words)",
    "logged": "eval/attention/in_object (logged by the run)",
}


@dataclass
class RunMaps:
    """One run's maps on the held-out images: exactly what the figures draw."""

    loaded: LoadedRun
    words: list[WordMaps]  # one per image
    cls: torch.Tensor  # [CLS]-query cross-attention [n, T, h, w]
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.loaded.name or f"run {self.loaded.run_id[:8]}"


@dataclass
class AttentionReport:
    runs: list[RunMaps]
    data: HeldOut
    scores: pd.DataFrame
    files: list[Path]
    index: Path | None = None


def display_rgb(cfg, frames: torch.Tensor) -> np.ndarray:
    """First frame of a normalised [T, 3, H, W] tensor as an [H, W, 3] image in [0, 1]."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalization(cfg))
    return (frames[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _overlay(ax, rgb: np.ndarray, grid: np.ndarray, cmap: str, vmax: float):
    height, width = rgb.shape[:2]
    ax.imshow(rgb, extent=(0, width, height, 0))
    image = ax.imshow(
        grid, cmap=cmap, vmin=0.0, vmax=vmax, alpha=OVERLAY_ALPHA, interpolation="nearest", extent=(0, width, height, 0)
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _outline(ax, rgb: np.ndarray, mask: torch.Tensor) -> None:
    ax.imshow(rgb)
    ax.contour(mask.float().numpy(), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def _vmax(maps: list[torch.Tensor]) -> float:
    peak = max((float(m.max()) for m in maps if m is not None and m.numel()), default=1.0)
    return peak if peak > 0 else 1.0


def word_figure(
    rgb: np.ndarray, mask: torch.Tensor, caption: str, runs: list[tuple[str, WordMaps]], frame: int = 0
) -> Figure:
    """Rows: per run its cross-attention and Grad-CAM; columns: the image, then one per word."""
    words = max(len(maps.words) for _, maps in runs) or 1
    rows = [
        (label, kind, maps) for label, maps in runs for kind in ("cross", "gradcam") if getattr(maps, kind) is not None
    ]
    cross_vmax = _vmax([maps.cross for _, maps in runs])
    # a fixed grid: constrained layout costs seconds per figure at this many axes
    fig = Figure(figsize=(1.35 * (words + 1) + 1.6, 1.45 * len(rows) + 0.6))
    grid = fig.subplots(len(rows), words + 1, squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.3})
    # the right margin keeps the colour bars' labels (about 0.6 in) inside the figure
    fig.subplots_adjust(left=0.06, right=1 - 0.75 / fig.get_figwidth(), top=1 - 0.55 / fig.get_figheight(), bottom=0.03)
    for r, (label, kind, maps) in enumerate(rows):
        _outline(grid[r, 0], rgb, mask)
        values = getattr(maps, kind)
        flat = " (all 0)" if kind == "gradcam" and float(values.max()) == 0.0 else ""  # no gradient reached the words
        grid[r, 0].set_ylabel(f"{label}\n{'cross-attn' if kind == 'cross' else 'Grad-CAM'}{flat}", fontsize=8)
        image = None
        for w in range(words):
            ax = grid[r, w + 1]
            if w >= len(maps.words):
                ax.set_visible(False)
                continue
            image = _overlay(
                ax,
                rgb,
                values[w, frame].numpy(),
                CROSS_CMAP if kind == "cross" else GRADCAM_CMAP,
                cross_vmax if kind == "cross" else 1.0,
            )
            ax.set_title(maps.words[w], fontsize=9)
        if image is not None:
            fig.colorbar(
                image,
                ax=list(grid[r, 1:]),
                fraction=0.015,
                pad=0.01,
                label="attention" if kind == "cross" else "Grad-CAM",
            )
    fig.suptitle(f"“{caption}” — text→image cross-attention (last layer, max over heads) and word Grad-CAM", fontsize=9)
    return fig


def overview_figure(runs: list[RunMaps], data: HeldOut, rgbs: list[np.ndarray], frame: int = 0) -> Figure:
    """Rows: images; columns: image, then per run [CLS] cross-attention and object-word Grad-CAM."""
    columns = [("image", None, None)]
    for run in runs:
        columns.append((f"{run.label}\ncross-attn [CLS]", run, "cls"))
        if any(m.gradcam is not None for m in run.words):
            columns.append((f"{run.label}\nGrad-CAM object word", run, "gradcam"))
    cross_vmax = _vmax([run.cls for run in runs])
    fig = Figure(figsize=(1.9 * len(columns) + 1.0, 1.8 * len(rgbs) + 1.4))
    grid = fig.subplots(len(rgbs), len(columns), squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.3})
    fig.subplots_adjust(
        left=1.0 / fig.get_figwidth(), right=0.98, top=1 - 0.75 / fig.get_figheight(), bottom=0.2 / fig.get_figheight()
    )
    last = {}
    for i, rgb in enumerate(rgbs):
        for c, (title, run, kind) in enumerate(columns):
            ax = grid[i, c]
            if i == 0:
                ax.set_title(title, fontsize=8)
            if run is None:
                _outline(ax, rgb, data.masks[i])
                ax.set_ylabel(data.captions[i], fontsize=6, rotation=0, ha="right", va="center", wrap=True)
                continue
            if kind == "cls":
                last[c] = _overlay(ax, rgb, run.cls[i, frame].numpy(), CROSS_CMAP, cross_vmax)
                continue
            maps, rows = run.words[i], object_word_rows(run.words[i].words, data.objects[i])
            if maps.gradcam is None or not rows:
                ax.set_visible(False)
                continue
            last[c] = _overlay(ax, rgb, maps.gradcam[rows[0], frame].numpy(), GRADCAM_CMAP, 1.0)
            ax.set_xlabel(maps.words[rows[0]], fontsize=7)
    for c, image in last.items():
        bar = fig.colorbar(
            image,
            ax=list(grid[:, c]),
            location="bottom",
            fraction=0.25 / len(rgbs),
            pad=0.04,
            shrink=0.85,
            label="attention" if columns[c][2] == "cls" else "Grad-CAM",
        )
        bar.ax.locator_params(nbins=3)  # room for the tick labels of neighbouring bars
    fig.suptitle("Held-out images (object outlined): where each run looks", fontsize=10)
    return fig


def scores_table(runs: list[RunMaps], n: int) -> pd.DataFrame:
    rows = {}
    for run in runs:
        values = {key: run.scores.get(key, math.nan) for key in SCORE_COLUMNS if key != "logged"}
        values["logged"] = run.loaded.logged_in_object if run.loaded.logged_in_object is not None else math.nan
        rows[run.loaded.run_id] = values
    table = pd.DataFrame.from_dict(rows, orient="index").rename(columns=SCORE_COLUMNS)
    table.index.name = "run_id"
    table.attrs["n"] = n
    return table


def scores_markdown(table: pd.DataFrame) -> str:
    header = ["run_id", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * len(table.columns)) + "|"]
    for run_id, row in table.iterrows():
        cells = ["—" if pd.isna(v) else f"{v:.3f}" for v in row]
        lines.append("| " + " | ".join([str(run_id), *cells]) + " |")
    return (
        f"# Attention-in-object scores ({table.attrs.get('n')} held-out images)\n\n"
        "Share of attention mass inside the true object mask (ShapesWorld), averaged over images; "
        "`in_object_share` of `workbench.evaluate.attention`.\n\n" + "\n".join(lines) + "\n"
    )


def compute(run_ids: list[str], n: int, tracking_uri: str = "") -> tuple[list[RunMaps], HeldOut]:
    """Load the runs, pick the held-out images (from the first run's data) and compute every map."""
    if n < 1:
        raise ConfigError(f"--n: {n} is out of range — allowed: >= 1")
    loaded = [load_run(run_id, tracking_uri) for run_id in run_ids]
    for other in loaded[1:]:
        for key in ("image_size", "num_frames"):
            mine, theirs = getattr(loaded[0].cfg.data, key), getattr(other.cfg.data, key)
            if mine != theirs:
                raise ConfigError(
                    f"--compare {other.run_id}: data.{key}={theirs} differs from run {loaded[0].run_id}'s {mine}"
                )
    data = held_out(loaded[0], n)
    runs = []
    for run in loaded:
        words = [word_maps(run, image, caption) for image, caption in zip(data.images, data.captions, strict=True)]
        cls = cls_maps(run, data)
        runs.append(RunMaps(run, words, cls, in_object_scores(data, cls, words)))
    return runs, data


def _log_target(run_id: str, tracking_uri: str) -> str:
    tags = tracking.client(tracking_uri).get_run(run_id).data.tags
    return tags.get("mlflow.parentRunId", run_id)


def report_attention(
    run_id: str,
    compare: str | None = None,
    *,
    n: int = 8,
    out: Path | str = report_paths.OUT_DIR,
    tracking_uri: str = "",
    log_to_mlflow: bool = True,
) -> AttentionReport:
    run_ids = [run_id] + ([compare] if compare else [])
    runs, data = compute(run_ids, n, tracking_uri)
    out = Path(out)
    folder = out / report_paths.ATTENTION_DIR / outputs.safe_name("_vs_".join(r[:8] for r in run_ids))
    rgbs = [display_rgb(runs[0].loaded.cfg, image) for image in data.images]
    files = outputs.save_figure(overview_figure(runs, data, rgbs), folder / "overview")
    for k, (rgb, mask, caption) in enumerate(zip(rgbs, data.masks, data.captions, strict=True)):
        fig = word_figure(rgb, mask, caption, [(run.label, run.words[k]) for run in runs])
        files += outputs.save_figure(fig, folder / f"image_{k}")
    table = scores_table(runs, len(data.captions))
    files.append(outputs.write_text(folder / "scores.md", scores_markdown(table)))
    files.append(outputs.write_text(folder / "scores.csv", table.to_csv()))
    outputs.write_text(folder / outputs.LABEL_FILE, "attention: " + " vs ".join(run.label for run in runs))
    if log_to_mlflow:
        client = tracking.client(tracking_uri)
        target = _log_target(run_id, tracking_uri)
        artifact_dir = f"{report_paths.ARTIFACT_DIR}/{report_paths.ATTENTION_DIR}/{folder.name}"
        for path in files:
            client.log_artifact(target, str(path), artifact_dir)
    return AttentionReport(runs, data, table, files, outputs.write_index(out))
