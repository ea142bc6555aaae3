"""Reports read a REAL MLflow store (sqlite in a temp dir) laid out as INTERFACES.md says.

The sweeps here are written with MlflowClient exactly as sweeps/train write them
(parent with sweep.yaml, children with tags, step losses and eval metrics), with
hand-picked numbers so every table cell can be checked by hand.
"""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from workbench.errors import ConfigError
from workbench.reports import outputs, significance, stats, tables
from workbench.reports.ablations import report_ablations
from workbench.reports.store import load_sweeps, using_store
from workbench.reports.ui import ui_command, ui_url

# variant -> per seed: tr_r1 (None = the seed's run FAILED before evaluating)
TOGGLES = {
    "baseline": [10.0, 12.0, 14.0],
    "mvsc_only": [13.0, 15.0, 20.0],
    "no_scl": [9.0, 13.0, None],
}
TOGGLES_SPEC = {
    "name": "toggles",
    "description": "SCL toggles on a hand-made store",
    "axes": {"objectives.scl.mvsc": [True, False]},
    "baseline": "baseline",
    "seeds": [0, 1, 2],
    "metrics": ["retrieval/tr_r1", "vqa/acc"],
    "variants": [{"name": v, "overrides": {}} for v in TOGGLES],
}
# reference metrics, named as evaluation logs them (eval/<task>/<kind>_<metric>)
REFERENCES = {"eval/retrieval/chance_tr_r1": 5.0, "eval/vqa/majority_acc": 50.0, "eval/vqa/blind_acc": 51.0}
STEPS = (10, 20, 30)
T0 = 1_700_000_000_000  # ms; every child run lasts 30 minutes on 2 devices = 1 device-hour
RUN_MS = 30 * 60 * 1000


def itc_loss(variant_index: int, seed: int, step: int) -> float:
    return 4.0 - step / 10 + seed + variant_index


STARTS = itertools.count()


def log_child(client, exp, parent, sweep, variant, seed, metrics, params, status, variant_index=0):
    tags = {
        "mlflow.parentRunId": parent,
        "workbench.sweep": sweep,
        "workbench.variant": variant,
        "workbench.seed": str(seed),
        "workbench.trial": str(seed),
        "workbench.devices": "2",
        "workbench.device": "cpu",
    }
    start = T0 + next(STARTS) * 1000  # runs start in the order they are logged
    run_id = client.create_run(exp, tags=tags, start_time=start).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    steps = [Metric("train/loss/itc", itc_loss(variant_index, seed, s), 0, s) for s in STEPS]
    steps += [Metric("train/loss/total", 2 * itc_loss(variant_index, seed, s), 0, s) for s in STEPS]
    final = [Metric(k, v, 0, STEPS[-1]) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=steps + final)
    client.set_terminated(run_id, status, end_time=start + RUN_MS)
    return run_id


def log_sweep(client, exp, spec, rows):
    """A parent with `spec` as sweep.yaml; rows = (variant, seed, metrics, params, status)."""
    parent = client.create_run(exp, run_name=spec["name"], tags={"workbench.sweep": spec["name"]}).info.run_id
    client.log_text(parent, yaml.safe_dump(spec, sort_keys=False), "sweep.yaml")
    for variant, seed, metrics, params, status in rows:
        log_child(client, exp, parent, spec["name"], variant, seed, metrics, params, status)
    client.set_terminated(parent)
    return parent


PAPER_METRICS = [
    "eval/retrieval/r_mean",
    "eval/retrieval/tr_r1",
    "eval/retrieval/ir_r1",
    "eval/vqa/acc",
    "eval/nlvr/acc",
    "eval/ve/acc",
    "eval/attention/in_object",
]  # the demo's metrics
PAPER_VARIANTS = {"baseline": 0.0, "+scl": 4.0, "+scl+softmask": 6.5, "random_init": -30.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("reports", artifact_location=(root / "artifacts").as_uri())

    # sweep 1: toggles, with sweep.yaml; no_scl's seed 2 failed
    parent = client.create_run(exp, run_name="toggles", tags={"workbench.sweep": "toggles"}).info.run_id
    client.log_text(parent, yaml.safe_dump(TOGGLES_SPEC, sort_keys=False), "sweep.yaml")
    for index, (variant, values) in enumerate(TOGGLES.items()):
        for seed, tr_r1 in enumerate(values):
            metrics = (
                {}
                if tr_r1 is None
                else {"eval/retrieval/tr_r1": tr_r1, "eval/vqa/acc": 50.0 + seed * index, **REFERENCES}
            )
            log_child(
                client,
                exp,
                parent,
                "toggles",
                variant,
                seed,
                metrics,
                {"objectives.scl.mvsc": variant != "no_scl"},
                "FAILED" if tr_r1 is None else "FINISHED",
                index,
            )
    client.set_terminated(parent)

    # sweep 2: mask ratios on a 2 x 2 grid, 2 seeds, no sweep.yaml (spec from the child tags)
    mask_parent = client.create_run(exp, tags={"workbench.sweep": "mask"}).info.run_id
    for index, (image, text) in enumerate([(0.4, 0.2), (0.8, 0.2), (0.4, 0.6), (0.8, 0.6)]):
        variant = "baseline" if index == 0 else f"i{image}_t{text}"
        for seed in (0, 1):
            log_child(
                client,
                exp,
                mask_parent,
                "mask",
                variant,
                seed,
                {"eval/retrieval/r_mean": 10 * image + text + seed},
                {"objectives.scl.image_mask_ratio": image, "objectives.scl.text_mask_ratio": text},
                "FINISHED",
            )
    client.set_terminated(mask_parent)

    # sweep 3: a 1-D numeric axis (focal gamma), 2 seeds
    gammas = [0.0, 1.0, 2.0]
    gamma_spec = {
        "name": "gamma",
        "axes": {"objectives.itc.focal_gamma": gammas},
        "baseline": "focal_gamma=0.0",
        "seeds": [0, 1],
        "metrics": ["eval/retrieval/r_mean"],
        "objective": {"metric": "eval/retrieval/r_mean", "direction": "maximize"},
        "variants": [{"name": f"focal_gamma={g}", "overrides": {"objectives.itc.focal_gamma": g}} for g in gammas],
    }
    log_sweep(
        client,
        exp,
        gamma_spec,
        [
            (
                f"focal_gamma={g}",
                seed,
                {"eval/retrieval/r_mean": 20 + g + seed, "eval/retrieval/chance_r_mean": 2.5},
                {},
                "FINISHED",
            )
            for g in gammas
            for seed in (0, 1)
        ],
    )

    # sweep 4: a paper-sized table: the demo's 7 metrics, 4 variants x 3 seeds, references logged
    paper_spec = {
        "name": "paper",
        "description": "SCL and SoftMask ablation",
        "baseline": "baseline",
        "seeds": [0, 1, 2],
        "metrics": PAPER_METRICS,
        "variants": [{"name": v, "overrides": {}} for v in PAPER_VARIANTS],
    }
    rows = []
    for k, (v, effect) in enumerate(PAPER_VARIANTS.items()):
        for seed in range(3):
            noise = [0.3, -0.2, 0.5][seed] * (1 + 0.4 * k)
            metrics = {m: 40.0 + effect + noise * (1 + i % 3) for i, m in enumerate(PAPER_METRICS)}
            metrics["eval/attention/in_object"] = 0.31 + effect / 100 + noise / 100
            metrics.update(
                {
                    "eval/vqa/blind_acc": 41.2,
                    "eval/vqa/majority_acc": 33.17,
                    "eval/nlvr/chance_acc": 50.0,
                    "eval/ve/majority_acc": 33.33,
                    "eval/retrieval/chance_r_mean": 2.7,
                    "eval/retrieval/chance_tr_r1": 0.5,
                    "eval/retrieval/chance_ir_r1": 0.5,
                }
            )
            rows.append(
                (
                    v,
                    seed,
                    metrics,
                    {"train.steps": 300, "train.batch_size": 32, "data.root": "data/shapesworld"},
                    "FINISHED",
                )
            )
    paper_parent = log_sweep(client, exp, paper_spec, rows)
    return {
        "uri": uri,
        "client": client,
        "parent": parent,
        "mask_parent": mask_parent,
        "paper_parent": paper_parent,
        "root": root,
        "experiment": exp,
    }


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    return report_ablations(tracking_uri=store["uri"], out=out), out


# ------------------------------------------------------------------ tables
def test_table_has_one_row_per_variant_with_hand_computed_stats(report):
    result, _ = report
    table = result.sweeps["toggles"].table
    assert table.variants == ["baseline", "mvsc_only", "no_scl"]
    assert table.metrics == ["eval/retrieval/tr_r1", "eval/vqa/acc"]  # reference metrics are never columns
    tr = table.stats["eval/retrieval/tr_r1"]
    assert tr.loc["baseline", "mean"] == 12.0 and tr.loc["baseline", "std"] == 2.0
    assert tr.loc["mvsc_only", "mean"] == 16.0
    assert tr.loc["mvsc_only", "std"] == pytest.approx(math.sqrt(13))
    assert tr.loc["mvsc_only", "delta"] == 4.0
    # paired diffs (3, 3, 6): t = 4 with 2 dof -> p = 1 - t / sqrt(2 + t^2)
    p_mvsc = 1 - 4 / math.sqrt(18)
    assert tr.loc["mvsc_only", "p_value"] == pytest.approx(p_mvsc)
    # Holm over the 2 variants: sorted p (0.057, 1.0) -> (2 x 0.057, max(that, 1 x 1.0))
    assert tr.loc["mvsc_only", "p_holm"] == pytest.approx(2 * p_mvsc)
    assert tr.loc["no_scl", "p_holm"] == pytest.approx(1.0)
    # 95 % CI of the mean paired difference: 4 +- t(0.975, 2) * sd / sqrt(3) with sd = sqrt(3)
    assert tr.loc["mvsc_only", "ci_low"] == pytest.approx(4 - 4.302652729749462)
    assert tr.loc["mvsc_only", "ci_high"] == pytest.approx(4 + 4.302652729749462)
    # not significant: effect 4 / sqrt(3) = 2.31 needs 4 paired seeds for 80 % power (n=3: power 0.5)
    assert tr.loc["mvsc_only", "seeds_needed"] == 4
    assert math.isnan(tr.loc["no_scl", "seeds_needed"])  # mean difference 0: no size to detect
    assert list(tr["n"]) == [3, 3, 2]


def test_failed_seed_gives_n2_and_a_flag_not_an_average(report):
    table = report[0].sweeps["toggles"].table
    tr = table.stats["eval/retrieval/tr_r1"]
    assert tr.loc["no_scl", "n"] == 2 and tr.loc["no_scl", "mean"] == 11.0
    assert tr.loc["no_scl", "delta"] == -1.0
    assert tr.loc["no_scl", "n_pairs"] == 2 and tr.loc["no_scl", "p_value"] == pytest.approx(1.0)  # diffs -1, +1
    assert table.flags == {"baseline": "", "mvsc_only": "", "no_scl": "failed: seed 2"}


def test_reference_row_flags_cells_not_above_it_and_constant_predictors(report):
    table = report[0].sweeps["toggles"].table
    assert {m: (r.kind, r.mean) for m, r in table.references.items()} == {
        "eval/retrieval/tr_r1": ("chance", 5.0),
        "eval/vqa/acc": ("blind", 51.0),
    }  # blind 51 beats majority 50
    tr, vqa = table.stats["eval/retrieval/tr_r1"], table.stats["eval/vqa/acc"]
    # tr_r1 - 5 per seed: baseline (5, 7, 9): t = 7 / (2 / sqrt 3), one-sided p = 0.013; no_scl (4, 8): p = 0.10
    assert tr.loc["baseline", "p_above_ref"] == pytest.approx(0.013076, abs=1e-5)
    assert tr.loc["no_scl", "p_above_ref"] == pytest.approx(0.102416, abs=1e-5)
    # vqa: baseline 50, 50, 50 = the majority class every time: constant, and below blind
    assert vqa.loc["baseline", "constant"] and not vqa.loc["mvsc_only", "constant"]
    assert vqa.loc["mvsc_only", "p_above_ref"] == pytest.approx(0.5)  # 50, 51, 52 vs 51
    md = (report[1] / "toggles" / "ablations.md").read_text()
    assert "| _reference_ |           5.0 (chance) |               51.0 (blind) |" in md
    assert (
        "| baseline    |           _12.0 ± 2.0_ |             _50.0 ± 0.0_°§ |" in md
    )  # ° below reference, § constant
    assert "| no_scl      | 11.0 ± 2.8 (−1.0)° n=2 |" in md  # 2 seeds above chance, not significantly
    csv = pd.read_csv(report[1] / "toggles" / "ablations.csv", index_col="variant")
    assert (
        csv.loc["reference", "eval/vqa/acc.mean"] == 51.0 and csv.loc["reference", "eval/vqa/acc.reference"] == "blind"
    )


def test_cost_per_row_is_device_hours_summed_over_seeds(report):
    table = report[0].sweeps["toggles"].table
    # every run: 30 min x 2 devices; no_scl's failed seed was paid for too
    assert table.device_hours == {"baseline": 3.0, "mvsc_only": 3.0, "no_scl": 3.0}
    assert table.device_kind == "CPU"
    md = (report[1] / "toggles" / "ablations.md").read_text()
    assert "| variant     |                   TR@1 |                    VQA acc | CPU-h | flag           |" in md
    assert "| mvsc_only   |  **16.0 ± 3.6** (+4.0) |     **51.0 ± 1.0** (+1.0)° |  3.00 |                |" in md


def test_table_matches_a_recomputation_from_search_runs(report, store):
    result, out = report
    with using_store(store["uri"]):
        runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`workbench.sweep` = 'toggles'")
    runs = runs[runs["status"] == "FINISHED"].dropna(subset=["tags.mlflow.parentRunId"])
    csv = pd.read_csv(out / "toggles" / "ablations.csv", index_col="variant").drop(index="reference")
    for metric in ("eval/retrieval/tr_r1", "eval/vqa/acc"):
        expect = runs.groupby("tags.workbench.variant")[f"metrics.{metric}"].agg(["mean", "std", "count"])
        assert np.allclose(csv[f"{metric}.mean"], expect.loc[csv.index, "mean"])
        assert np.allclose(csv[f"{metric}.std"], expect.loc[csv.index, "std"])
        assert list(csv[f"{metric}.n"]) == list(expect.loc[csv.index, "count"])
        base = expect.loc["baseline", "mean"]
        assert np.allclose(csv[f"{metric}.delta"].iloc[1:], expect.loc[csv.index[1:], "mean"] - base)
    assert csv.loc["no_scl", "flag"] == "failed: seed 2"


def test_markdown_is_one_column_per_metric_with_delta_and_real_minus(report):
    md = (report[1] / "toggles" / "ablations.md").read_text()
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    widths = {len(line) for line in table_lines[:6]}
    assert len(widths) == 1 and widths.pop() < 100  # aligned, narrow enough for a terminal
    assert "11.0 ± 2.8 (−1.0)" in md and "(-1.0)" not in md  # U+2212, not a hyphen
    assert "Holm-corrected over 2 variant(s)" in md
    # details: CI, Holm p, seeds for 80 % power
    assert "| mvsc_only | TR@1    | +4.0 |   [−0.3, +8.3] |    0.114 |                   4 |" in md


def test_paper_table_marks_bold_best_underline_second_and_highlights(report):
    table = report[0].sweeps["paper"].table
    r_mean = table.stats["eval/retrieval/r_mean"]
    assert r_mean["p_holm"].iloc[1:].lt(0.01).all()  # the effects are large against the seed noise
    tex = (report[1] / "paper" / "ablations.tex").read_text()
    assert "\\begin{table*}" in tex and "needs \\usepackage{booktabs}" in tex
    assert "\\textbf{46.9}{\\scriptsize$\\pm$0.6}\\textsuperscript{\\ddag}" in tex  # +scl+softmask: best, p < 0.01
    assert "\\underline{44.3}" in tex  # +scl: second
    assert "{\\scriptsize $-$29.8}" in tex  # random_init's Δ: a real minus
    assert "(n=3)" not in tex and "baseline (baseline)" not in tex and "-29.8" not in tex
    html_text = (report[1] / "paper" / "ablations.html").read_text()
    assert "<tr class='reference'>" in html_text
    assert "<td class='up'" in html_text and "<td class='down low'" in html_text  # significant cells highlighted


TWO_COLUMN_PAPER = r"""\documentclass[twocolumn]{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\begin{document}
\section{Results}
Four metrics fit one column (Table~\ref{tab:paper4}); the demo's seven fit the page width.
\input{paper4.tex}
\input{paper7.tex}
\end{document}
"""


def test_latex_compiles_in_a_two_column_article_without_overfull_boxes(store, tmp_path):
    """Real pdflatex: a 4-metric table fits \\columnwidth (table), the demo's 7 metrics and the verdict column fit
    table* (the verdict column counts as two metrics: a 4-metric table with verdicts is table*)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (make test installs texlive-latex-base and texlive-latex-recommended)")
    four = report_ablations(
        ["paper"],
        metrics=[*PAPER_METRICS[1:4], PAPER_METRICS[5]],
        formats=["latex"],
        tracking_uri=store["uri"],
        out=tmp_path / "four",
        with_figures=False,
        log_to_mlflow=False,
    )  # no objective: no verdicts
    seven = report_ablations(
        ["paper"],
        formats=["latex"],
        tracking_uri=store["uri"],
        out=tmp_path / "seven",
        with_figures=False,
        log_to_mlflow=False,
    )
    tex4 = (tmp_path / "four" / "paper" / "ablations.tex").read_text().replace("tab:paper", "tab:paper4")
    tex7 = (tmp_path / "seven" / "paper" / "ablations.tex").read_text()
    assert r"\begin{table}[t]" in tex4 and r"\begin{table*}[t]" in tex7
    assert len(four.sweeps["paper"].table.metrics) == 4 and len(seven.sweeps["paper"].table.metrics) == 7
    assert not four.sweeps["paper"].table.verdict_metric and "verdict" not in tex4 and "unres." in tex7
    (tmp_path / "paper4.tex").write_text(tex4)
    (tmp_path / "paper7.tex").write_text(tex7)
    (tmp_path / "paper.tex").write_text(TWO_COLUMN_PAPER)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log and "Overfull \\vbox" not in log, log[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF")
    if shutil.which("pdftoppm"):  # a PNG of the page, to look at (kept in pytest's tmp dir)
        subprocess.run(
            ["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "paper.pdf", "page"],
            cwd=tmp_path,
            check=True,
            timeout=60,
        )
        assert image_is_drawn(next(tmp_path.glob("page*.png")))


def test_every_format_is_written_and_no_temp_files_are_left(report):
    folder = report[1] / "toggles"
    assert {p.name for p in folder.iterdir()} >= {
        "ablations.md",
        "ablations.csv",
        "ablations.tex",
        "ablations.html",
        "report.html",
        "section.html",
        "bars.png",
        "bars.pdf",
    }
    assert not list(folder.glob(".*tmp*"))


def test_spec_falls_back_to_child_tags_and_baseline_goes_first(report):
    table = report[0].sweeps["mask"].table
    assert table.baseline == "baseline"
    assert table.variants == ["baseline", "i0.8_t0.2", "i0.4_t0.6", "i0.8_t0.6"]
    assert table.expected_seeds == [0, 1]
    assert table.metrics == ["eval/retrieval/r_mean"]  # default metrics: those logged
    assert any("no sweep.yaml" in note for note in table.notes)
    assert table.stats.loc["i0.8_t0.6", ("eval/retrieval/r_mean", "mean")] == pytest.approx(8.6 + 0.5)


# ----------------------------------------------------------------- figures
def image_is_drawn(path: Path) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    return pixels.size > 10_000 and pixels.std() > 1.0


def test_a_figure_per_sweep_shape(report):
    _, out = report
    # 2-D grid (mask ratios) -> heatmap; 1-D numeric axis (focal gamma) -> line; categorical -> bars
    for path in [out / "mask" / "heatmap", out / "gamma" / "line", out / "toggles" / "bars"]:
        assert image_is_drawn(path.with_suffix(".png")), path
        assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert image_is_drawn(out / "toggles" / "training_curves.png")
    assert not (out / "toggles" / "heatmap.png").exists() and not (out / "mask" / "bars.png").exists()


def test_sweep_shapes_and_the_heatmap_numbers(store):
    from workbench.reports import figures
    from workbench.reports.stats import ablation_table

    sweeps = {s.name: s for s in load_sweeps([], store["uri"])[0]}
    assert figures.sweep_shape(sweeps["toggles"]).kind == "categorical"  # an axis of booleans is not numeric
    gamma = figures.sweep_shape(sweeps["gamma"])
    assert gamma.kind == "axis" and gamma.values["objectives.itc.focal_gamma"]["focal_gamma=2.0"] == 2.0
    mask = figures.sweep_shape(sweeps["mask"])  # no sweep.yaml: the axes come from the logged params
    assert mask.kind == "grid"
    table = ablation_table(sweeps["mask"])
    cells = figures.grid_stats(sweeps["mask"], table, mask, "eval/retrieval/r_mean").set_index(["x", "y"])
    assert cells.loc[(0.8, 0.6), "mean"] == pytest.approx(9.1) and cells.loc[(0.8, 0.6), "n"] == 2
    fig = figures.heatmap_figure(sweeps["mask"], table, mask, "eval/retrieval/r_mean")
    annotations = {t.get_text() for t in fig.axes[0].texts}
    assert "9.1\n±0.7" in annotations and "4.7\n±0.7" in annotations  # mean over seeds 0, 1 and its std


def test_training_curve_numbers(store):
    from workbench.reports import figures, history

    sweeps, _ = load_sweeps(["toggles"], store["uri"])
    runs = sweeps[0].runs
    with using_store(store["uri"]):
        hist = history.loss_histories(runs["run_id"], history.loss_keys(runs))
    assert history.loss_keys(runs) == ["train/loss/itc", "train/loss/total"]
    curves = figures.curve_stats(hist, runs).set_index(["key", "variant", "step"])
    # mvsc_only (index 1), seeds 0..2 at step 10: 4 - 1 + seed + 1 -> 4, 5, 6
    assert curves.loc[("train/loss/itc", "mvsc_only", 10), "mean"] == 5.0
    assert curves.loc[("train/loss/itc", "mvsc_only", 10), "std"] == 1.0
    assert curves.loc[("train/loss/itc", "no_scl", 30), "n"] == 2  # the failed seed is not drawn


# ------------------------------------------------------------ index page
def test_index_embeds_tables_figures_and_links_runs_to_mlflow(report, store):
    result, out = report
    index = (out / "index.html").read_text()
    assert index.count("<table class='ablation'>") >= 4  # every sweep's table is in the page, not linked
    assert "<img src='mask/heatmap.png'" in index and "<img src='toggles/bars.png'" in index
    assert "SCL toggles on a hand-made store" in index  # the sweep's description
    assert "budget: 300 steps × batch 32 · data data/shapesworld" in index
    assert "seeds: 0, 1, 2 · 3 variants · 8/9 runs finished · 9.00 CPU-h · started 20" in index  # seeds, cost, date
    run_id = result.sweeps["toggles"].table.run_ids["mvsc_only"][1]
    assert f"http://127.0.0.1:5000/#/experiments/{store['experiment']}/runs/{run_id}'>s1</a>" in index
    page = (out / "toggles" / "report.html").read_text()  # the same section as the sweep's own page
    assert "<img src='bars.png'" in page and "<table class='ablation'>" in page


def test_index_has_no_section_for_the_reports_readme(tmp_path):
    """reports/README.md (the repo's note on the folder) is not a report: no '.' section for it."""
    from workbench.reports.outputs import write_index

    (tmp_path / "README.md").write_text("generated reports land here\n")
    (tmp_path / "attention").mkdir()
    (tmp_path / "attention" / "scores.md").write_text("| a |\n")
    index = write_index(tmp_path).read_text()
    assert "README.md" not in index and "<h2>.</h2>" not in index
    assert "<h2>attention</h2>" in index


def test_index_renders_in_headless_chromium(report, tmp_path):
    """Look at what a person sees: a screenshot of index.html (kept in pytest's tmp dir)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (make test installs it)")
    _, out = report
    shot = tmp_path / "index.png"
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '<table class="ablation">' in dom.stdout and '<tr class="reference">' in dom.stdout
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert image_is_drawn(shot)


# ------------------------------------------------------------ mlflow parent
def test_parent_run_carries_the_summary_table_and_report_files(report, store):
    client = store["client"]
    parent = client.get_run(store["parent"])
    metrics = parent.data.metrics
    assert metrics["summary/retrieval/tr_r1/mvsc_only/mean"] == 16.0
    assert metrics["summary/retrieval/tr_r1/baseline/std"] == 2.0
    assert metrics["summary/vqa/acc/no_scl/mean"] == 51.0
    assert not any(key.startswith("eval/") for key in metrics)  # never the children's keys again
    logged = {info.path for info in client.list_artifacts(store["parent"], "reports")}
    assert {
        "reports/ablations.md",
        "reports/ablations.csv",
        "reports/ablations.tex",
        "reports/ablations.html",
        "reports/report.html",
        "reports/bars.png",
        "reports/training_curves.png",
        "reports/ablation_table.json",
    } <= logged
    report_ablations(
        ["toggles"], formats=["md"], tracking_uri=store["uri"], out=store["root"] / "again", with_figures=False
    )  # a second report replaces the table, not appends to it
    with using_store(store["uri"]):  # load_table searches through the fluent API's store
        logged_table = client.load_table(store["experiment"], "reports/ablation_table.json", run_ids=[store["parent"]])
    assert list(logged_table["variant"]) == ["baseline", "mvsc_only", "no_scl"]
    assert logged_table.set_index("variant").loc["mvsc_only", "eval/retrieval/tr_r1 p_holm"] == pytest.approx(
        2 * (1 - 4 / math.sqrt(18))
    )
    assert parent.data.tags["workbench.report"].endswith("toggles/report.html")


# ------------------------------------------------------------ statistics
def test_holm_matches_a_hand_computed_case():
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06,
    # 0.04 x 1 = 0.04 -> running max 0.06. NaN is not a test and does not count in m.
    adjusted = significance.holm(np.array([0.01, 0.04, np.nan, 0.03, 0.005]))
    assert adjusted[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[2])
    assert significance.holm(np.array([0.6, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1


def test_seeds_for_power_matches_hand_computed_cases():
    # two-sided paired t-test, alpha 0.05, power 0.8 (Cohen's / G*Power tables): d = 1 -> 10 pairs,
    # d = 0.5 -> 34 pairs; the non-central t power is just above 0.8 there and below it one pair less
    assert significance.seeds_for_power(1.0, 1.0) == 10 and significance.seeds_for_power(-2.0, 4.0) == 34
    assert significance.paired_power(1.0, np.array([9, 10])) == pytest.approx([0.7480, 0.8031], abs=1e-4)
    assert math.isnan(significance.seeds_for_power(1.0, 0.0)) and math.isnan(significance.seeds_for_power(0.0, 1.0))
    assert significance.seeds_for_power(0.01, 1.0) == math.inf  # more than MAX_SEEDS: said so, not searched


def test_fewer_than_two_paired_seeds_give_no_p_value_and_a_note(report):
    from workbench.reports.stats import summarise

    values = pd.DataFrame({"baseline": [1.0, 2.0, 3.0], "one_seed": [2.0, np.nan, np.nan]})
    row = summarise(values, "baseline").loc["one_seed"]
    assert math.isnan(row["p_value"]) and math.isnan(row["p_holm"]) and math.isnan(row["seeds_needed"])
    assert row["n_pairs"] == 1 and row["delta"] == 0.0
    md = (report[1] / "toggles" / "ablations.md").read_text()
    assert "no test (< 2 paired seeds or no spread)" not in md  # toggles has 2+ pairs everywhere


def test_paired_test_edge_cases():
    seeds = pd.Index([0, 1, 2])
    base = pd.Series([1.0, 2.0, 3.0], index=seeds)
    assert math.isnan(stats.paired_test(pd.Series([2.0, np.nan, np.nan], index=seeds), base)[0])  # 1 pair
    p_value, pairs = stats.paired_test(base + 1.0, base)  # constant difference: undefined, not p = 0
    assert math.isnan(p_value) and pairs == 3


def test_metric_names_resolve_and_unknown_ones_are_one_line_errors(store):
    runs = load_sweeps(["toggles"], store["uri"])[0][0].runs
    assert stats.resolve_metrics(["retrieval"], runs, strict=True) == ["eval/retrieval/tr_r1"]
    assert stats.resolve_metrics(["eval/vqa/acc"], runs, strict=True) == ["eval/vqa/acc"]
    with pytest.raises(ConfigError, match=r"--metric: 'vqa/accuracy' is not logged .*eval/vqa/acc"):
        stats.resolve_metrics(["vqa/accuracy"], runs, strict=True)


def test_bad_selectors_and_formats(store, tmp_path):
    with pytest.raises(ConfigError, match="SWEEP 'nope': no sweep of that name"):
        load_sweeps(["nope"], store["uri"])
    with pytest.raises(ConfigError, match='SWEEP "x\' OR 1"'):
        load_sweeps(["x' OR 1"], store["uri"])
    with pytest.raises(ConfigError, match="--format: 'pdf' is not one of md, csv, latex, html"):
        report_ablations(["toggles"], formats=["pdf"], tracking_uri=store["uri"], out=tmp_path)


def test_selecting_by_parent_run_id_and_metric(store, tmp_path):
    result = report_ablations(
        [store["parent"]],
        metrics=["vqa/acc"],
        formats=["csv"],
        tracking_uri=store["uri"],
        out=tmp_path,
        with_figures=False,
        log_to_mlflow=False,
    )
    table = result.sweeps["toggles"].table
    assert table.metrics == ["eval/vqa/acc"]
    # vqa = 50 + seed * variant index: no_scl (index 2) seeds 0, 1 -> 50, 52
    assert table.stats.loc["no_scl", ("eval/vqa/acc", "mean")] == 51.0
    assert sorted(p.name for p in (tmp_path / "toggles").iterdir()) == ["ablations.csv", "report.html", "section.html"]


def test_metric_labels():
    assert tables.metric_label("eval/retrieval/tr_r1") == "TR@1"
    assert tables.metric_label("eval/video_retrieval/ir_r1") == "video IR@1"
    assert tables.metric_label("eval/nlvr/acc") == "NLVR2 acc"
    assert tables.metric_label("eval/attention/in_object") == "attention in-object"


# ----------------------------------------------------------------- outputs
def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    path = outputs.write_text(tmp_path / "t.md", "old")
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"]


# ---------------------------------------------------------------------- ui
def test_ui_command_binds_localhost_and_uses_the_resolved_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui_command() == [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        "sqlite:///mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    command = ui_command(port=8123)
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:////tmp/x.db"
    assert command[command.index("--port") + 1] == "8123"
    assert ui_command("sqlite:///a.db", host="0.0.0.0")[-3] == "0.0.0.0"
    assert ui_url("127.0.0.1", 8123) == "http://127.0.0.1:8123" and ui_url("::1", 80) == "http://[::1]:80"
    with pytest.raises(ConfigError, match=r"--port: 70000 is out of range — allowed: 1\.\.65535"):
        ui_command(port=70000)


# --------------------------------------------------------------------- cli
def test_cli_report_ablations_and_one_line_errors(store, tmp_path):
    from workbench.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "report",
            "ablations",
            "toggles",
            "--format",
            "md",
            "--no-figures",
            "--tracking-uri",
            store["uri"],
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "toggles" / "ablations.md").exists() and "mvsc_only" in result.output
    bad = runner.invoke(
        app,
        [
            "report",
            "ablations",
            "toggles",
            "--metric",
            "vqa/nope",
            "--tracking-uri",
            store["uri"],
            "--out",
            str(tmp_path),
        ],
    )
    assert bad.exit_code == 2
    assert bad.output.strip().startswith("error: --metric: 'vqa/nope'") and len(bad.output.strip().splitlines()) == 1


# ------------------------------------------------- a small real sweep (train + sweeps)
BASE = "image_mask_ratio=0.8,text_mask_ratio=0.4"  # the grid's baseline point
OTHER = "image_mask_ratio=0.4,text_mask_ratio=0.2"


@pytest.fixture(scope="module")
def real_sweep(shapes_tiny, tmp_path_factory):
    """A real 2 x 2 grid (SCL image x text mask ratio) x 2 seeds of 4-step tiny runs with retrieval
    eval, through `run_sweep` (Optuna journal study + MLflow), then its report."""
    from tiny_config import tiny_run

    from workbench.sweeps.runner import SweepOptions, run_sweep
    from workbench.sweeps.spec import load_spec

    tmp = tmp_path_factory.mktemp("real_sweep")
    spec_path = tmp / "real.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "description": "SCL mask ratios on a 2 x 2 grid",
                "base": "base",
                "axes": {"objectives.scl.image_mask_ratio": [0.4, 0.8], "objectives.scl.text_mask_ratio": [0.2, 0.4]},
                "baseline": {"objectives.scl.image_mask_ratio": 0.8, "objectives.scl.text_mask_ratio": 0.4},
                "seeds": 2,
                "metrics": ["eval/retrieval/r_mean", "eval/retrieval/tr_r1", "eval/attention/in_object"],
                "objective": {"metric": "eval/retrieval/r_mean", "direction": "maximize"},
            }
        )
    )
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    # artifacts (sweep.yaml, checkpoints) under tmp, not ./mlruns of the working directory
    MlflowClient(uri).create_experiment("workbench", artifact_location=(tmp / "artifacts").as_uri())
    sets = [s for s in tiny_run(shapes_tiny, uri, tmp / "out", steps=4) if not s.startswith("tracking.")]
    result = run_sweep(load_spec(spec_path, sets), SweepOptions(slots=2, tracking_uri=uri, progress=False))
    assert result.problem() is None
    out = tmp / "reports"
    report = report_ablations(tracking_uri=uri, out=out)
    return {"uri": uri, "parent": result.parent_run_id, "tmp": tmp, "result": result, "report": report, "out": out}


def test_report_on_a_real_sweep_matches_search_runs(real_sweep):
    result, out = real_sweep["report"], real_sweep["out"]
    (name,) = result.sweeps
    table = result.sweeps[name].table
    assert table.variants[0] == BASE and set(table.variants) == {
        BASE,
        OTHER,
        "image_mask_ratio=0.4,text_mask_ratio=0.4",
        "image_mask_ratio=0.8,text_mask_ratio=0.2",
    }
    assert table.metrics == ["eval/retrieval/r_mean", "eval/retrieval/tr_r1", "eval/attention/in_object"]
    assert (table.stats.xs("n", axis=1, level=1) == 2).all().all()
    assert set(table.flags.values()) == {""}
    with using_store(real_sweep["uri"]):
        runs = mlflow.search_runs(
            search_all_experiments=True,  # a retried trial leaves a KILLED run too
            filter_string=f"tags.`mlflow.parentRunId` = '{real_sweep['parent']}' and attributes.status = 'FINISHED'",
        )
    for metric in table.metrics:
        by_variant = {
            v: g.set_index("tags.workbench.seed")[f"metrics.{metric}"]
            for v, g in runs.groupby("tags.workbench.variant")
        }
        base, other = by_variant[BASE], by_variant[OTHER].reindex(by_variant[BASE].index)
        assert table.cell(OTHER, metric, "mean") == pytest.approx(other.mean())
        assert table.cell(OTHER, metric, "std") == pytest.approx(other.std())
        assert table.cell(OTHER, metric, "delta") == pytest.approx(other.mean() - base.mean())
        if (other - base).std() > 0:
            from scipy.stats import ttest_rel

            assert table.cell(OTHER, metric, "p_value") == pytest.approx(ttest_rel(other, base).pvalue)
    md = (out / name / "ablations.md").read_text()
    assert "| image / text mask ratio |" in md and "| 0.8 / 0.4 (baseline)    |" in md  # grid names, shortened
    assert {p.name for p in (out / name).iterdir()} >= {
        "heatmap.png",
        "heatmap.pdf",
        "training_curves.png",
        "report.html",
    }
    assert image_is_drawn(out / name / "training_curves.png")


def test_heatmap_of_a_real_2x2_grid_sweep(real_sweep):
    from workbench.reports import figures
    from workbench.reports.store import load_sweeps as load

    sweep = load([], real_sweep["uri"])[0][0]
    table = real_sweep["report"].sweeps[sweep.name].table
    shape = figures.sweep_shape(sweep)
    assert shape.kind == "grid" and shape.axes == ["objectives.scl.image_mask_ratio", "objectives.scl.text_mask_ratio"]
    cells = figures.grid_stats(sweep, table, shape, "eval/retrieval/r_mean").set_index(["x", "y"])
    assert cells.loc[(0.4, 0.2), "mean"] == pytest.approx(table.cell(OTHER, "eval/retrieval/r_mean", "mean"))
    assert image_is_drawn(real_sweep["out"] / sweep.name / "heatmap.png")


def test_optuna_study_reads_right(real_sweep):
    """Seed is not a searched param; the objective is named; one attr per metric; the study points
    to its MLflow parent run and report; trial logs hold the trial's output."""
    from workbench import study_attrs

    result = real_sweep["result"]
    study = optuna.load_study(study_name=result.study_name, storage=JournalStorage(JournalFileBackend(result.storage)))
    assert study.metric_names == ["eval/retrieval/r_mean"]
    assert study.user_attrs[study_attrs.PARENT_ATTR] == real_sweep["parent"]
    assert study.user_attrs[study_attrs.REPORT_ATTR] == f"runs:/{real_sweep['parent']}/reports/report.html"
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 8
    for trial in complete:
        assert set(trial.params) == {"variant"} and set(trial.distributions) == {"variant"}
        assert trial.user_attrs["seed"] in (0, 1)
        assert trial.user_attrs["eval/retrieval/r_mean"] == trial.value  # one attribute per metric
        assert isinstance(trial.user_attrs["eval/retrieval/tr_r1"], float)
        log = Path(trial.user_attrs["workbench.log"]).read_text()
        assert f"variant {trial.params['variant']}, seed {trial.user_attrs['seed']}" in log
        assert f"MLflow run {trial.user_attrs['workbench.mlflow_run_id']}: FINISHED" in log
        assert "eval/retrieval/r_mean = " in log
    # the report puts the summary on the parent run: per-variant mean/std and the table
    parent = MlflowClient(real_sweep["uri"]).get_run(real_sweep["parent"])
    assert f"summary/retrieval/r_mean/{BASE.replace('=', '_').replace(',', '_')}/mean" in parent.data.metrics


def child_runs(real_sweep) -> dict[str, str]:
    client = MlflowClient(real_sweep["uri"])
    exp = client.get_run(real_sweep["parent"]).info.experiment_id
    runs = client.search_runs(
        [exp],
        f"tags.`mlflow.parentRunId` = '{real_sweep['parent']}' and tags.`workbench.seed` = '0' "
        "and attributes.status = 'FINISHED'",
    )
    found = {run.data.tags["workbench.variant"]: run.info.run_id for run in runs}
    return {"baseline": found[BASE], "other": found[OTHER]}


def test_attention_figure_draws_exactly_the_models_maps(real_sweep):
    from workbench.data import tokenize
    from workbench.evaluate.attention import cross_attention_maps
    from workbench.reports import attention_figure as af
    from workbench.reports.attention_maps import cls_maps, held_out, in_object_scores

    runs = child_runs(real_sweep)
    out = real_sweep["tmp"] / "reports"
    report = af.report_attention(runs["baseline"], runs["other"], n=1, out=out, tracking_uri=real_sweep["uri"])
    folder = out / "attention" / f"{runs['baseline'][:8]}_vs_{runs['other'][:8]}"
    for stem in ("overview", "image_0"):
        assert image_is_drawn(folder / f"{stem}.png") and (folder / f"{stem}.pdf").stat().st_size > 1000
    assert list(report.scores.index) == [runs["baseline"], runs["other"]]
    assert [run.label for run in report.runs] == [f"{BASE}/seed0", f"{OTHER}/seed0"]  # variant/seed, not run ids
    assert f"attention: {BASE}/seed0 vs {OTHER}/seed0" in (out / "index.html").read_text()

    # the arrays handed to imshow (before colour mapping) are what the model returns for that input
    run_maps = report.runs[0]
    loaded, data = run_maps.loaded, report.data
    fig = af.word_figure(
        af.display_rgb(loaded.cfg, data.images[0]),
        data.masks[0],
        data.captions[0],
        [(run_maps.label, run_maps.words[0])],
    )
    cross_row = fig.axes[1 : 1 + len(run_maps.words[0].words)]
    text = tokenize(loaded.tokenizer, [data.captions[0]], loaded.cfg.data.max_text_len)
    batch = {"image": data.images[:1], **text}
    for ax, position in zip(cross_row, run_maps.words[0].positions, strict=True):
        drawn = np.asarray(ax.get_images()[1].get_array())
        expect = cross_attention_maps(loaded.model, batch, layer=-1, reduce="max", query_position=position)[0, 0]
        assert drawn.sum() == pytest.approx(float(expect.sum()), rel=1e-5)
        assert np.allclose(drawn, expect.numpy(), atol=1e-6)

    assert np.allclose(run_maps.cls, cross_attention_maps(loaded.model, batch, layer=-1, reduce="max"))

    # on every eligible held-out image the [CLS] score is the run's logged eval/attention/in_object
    everything = held_out(loaded, 10_000)
    score = in_object_scores(everything, cls_maps(loaded, everything), [])["cls_cross"]
    assert score == pytest.approx(loaded.logged_in_object, abs=1e-5)

    logged = {
        info.path
        for info in MlflowClient(real_sweep["uri"]).list_artifacts(
            real_sweep["parent"], f"reports/attention/{folder.name}"
        )
    }
    assert f"reports/attention/{folder.name}/overview.png" in logged


def test_cli_report_attention_and_a_bad_run_id(real_sweep, tmp_path):
    from workbench.cli import app

    runs = child_runs(real_sweep)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["report", "attention", runs["other"], "--n", "1", "--out", str(tmp_path), "--tracking-uri", real_sweep["uri"]],
    )
    assert result.exit_code == 0, result.output
    assert "Attention-in-object scores (1 held-out images)" in result.output
    bad = runner.invoke(
        app, ["report", "attention", "nope", "--tracking-uri", real_sweep["uri"], "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and bad.output.strip() == f"error: RUN_ID 'nope': no such run in {real_sweep['uri']}"


def test_the_fast_sql_read_gives_what_search_runs_gives(store, report):
    """On SQL stores the report reads only the kept columns; the frame equals `search_runs` + `slim`."""
    from workbench.reports import store as runs_store

    with using_store(store["uri"]):
        fast = runs_store.read_sweep_runs()
        slow = runs_store.slim(runs_store.search("tags.`workbench.sweep` LIKE '%'"))
    fast, slow = fast.set_index("run_id").sort_index(), slow.set_index("run_id").sort_index()
    slow = slow.loc[:, slow.notna().any()]  # columns no run has a value in are not read
    assert set(fast.columns) == set(slow.columns), set(fast.columns) ^ set(slow.columns)
    assert len(fast) == len(slow) == 4 + 9 + 8 + 6 + 12  # 4 parents
    columns = sorted(fast.columns)
    pd.testing.assert_frame_equal(fast[columns], slow[columns], check_dtype=False)
