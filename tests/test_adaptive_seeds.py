"""Adaptive seeds (`seeds: {min, max}`): the spec, the rounds queued from the study, the verdict
tags, a killed coordinator that resumes the design, and a real tiny sweep end to end.

Real Optuna journals, real MLflow stores, real child processes. The scheduling tests use
`fixed_train` (instant, values chosen per variant and seed); the end-to-end test trains.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import ConfigError
from workbench.reports.ablations import report_ablations
from workbench.sweeps import child, rounds
from workbench.sweeps.runner import SweepOptions, run_sweep
from workbench.sweeps.spec import load_spec
from workbench.sweeps.study import enqueue_missing, grid_key
from workbench.sweeps.sweep import open_sweep

# variant -> objective by seed: "up" is far above the baseline, "same" is the baseline ± noise
NOISE = [0.3, -0.2, 0.5, -0.4, 0.1, 0.0, -0.3, 0.2]
SAME = [-0.1, 0.4, 0.2, 0.3, -0.2, 0.1, 0.2, -0.2]


@pytest.fixture(scope="module", autouse=True)
def warm_trial_server():
    child.warm_up()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def fixed_train(cfg, *, resume_run_id=None, parent_run_id=None, tags=None, progress=True):
    """An instant trainer: r_mean = 10 + lr-coded offset + a fixed noise per seed; counts its calls."""
    from workbench import tracking
    from workbench.train import RunResult

    seed = cfg.train.seed
    value = 10.0 + {0.1: NOISE[seed], 0.2: 50.0 + NOISE[seed] + 0.01 * seed, 0.3: SAME[seed]}[cfg.train.lr]
    calls = Path(cfg.train.out_dir) / "calls.log"
    calls.parent.mkdir(parents=True, exist_ok=True)
    with calls.open("a") as f:
        f.write(f"{tags['workbench.variant']} {seed}\n")
    tracker = tracking.start_run(cfg, parent_run_id=parent_run_id, tags=tags)
    tracker.log_metrics({"eval/retrieval/r_mean": value}, step=1)
    tracker.finish("FINISHED")
    return RunResult(tracker.run_id, "FINISHED", {"eval/retrieval/r_mean": value}, 1.0, 1)


def write_spec(folder: Path, name: str = "adaptive", **fields) -> Path:
    data = {
        "base": "base",
        "variants": {"baseline": {"train.lr": 0.1}, "up": {"train.lr": 0.2}, "same": {"train.lr": 0.3}},
        "seeds": {"min": 3, "max": 5},
        "metrics": ["eval/retrieval/r_mean"],
        "objective": {"metric": "eval/retrieval/r_mean", "direction": "maximize"},
        "overrides": {
            "train.out_dir": str(folder / "out"),
            "data.root": str(folder),
            "data.generate": False,
            "tracking.experiment": folder.name,
        },
        "retries": 0,
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def study_of(folder: Path, name: str = "adaptive") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(folder / "out" / "sweeps" / "optuna-journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def seeds_by_variant(study: optuna.Study) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        variant, seed = grid_key(trial)
        out.setdefault(variant, []).append(seed)
    return {v: sorted(s) for v, s in out.items()}


# ------------------------------------------------------------------ the spec
def test_spec_reads_min_max_delta_and_max_seeds(tmp_path):
    spec = load_spec(write_spec(tmp_path, delta={"eval/retrieval/r_mean": 1.5}))
    assert spec.adaptive and spec.min_seeds == 3 and spec.seeds == (0, 1, 2, 3, 4)
    assert spec.grid_keys == [(v, s) for v in ("baseline", "up", "same") for s in (0, 1, 2)]  # the first rounds
    assert spec.total_trials == 15 and spec.objective_delta == 1.5
    assert spec.resolved()["sequential"]["max_seeds"] == 5 and spec.resolved()["delta"] == {
        "eval/retrieval/r_mean": 1.5
    }
    assert load_spec(write_spec(tmp_path), max_seeds=8).seeds == tuple(range(8))
    fixed = load_spec(write_spec(tmp_path, seeds=3))
    assert not fixed.adaptive and fixed.design.min_seeds == fixed.design.max_seeds == 3
    assert "sequential" not in fixed.resolved()  # a fixed sweep's fingerprint is as before


@pytest.mark.parametrize(
    "fields, max_seeds, message",
    [
        ({"seeds": {"min": 1, "max": 5}}, None, r"seeds.min: 1 is not an integer >= 2"),
        ({"seeds": {"min": 4, "max": 3}}, None, r"seeds.max: 3 is not an integer >= seeds.min \(4\)"),
        ({"seeds": {"min": 3, "maxx": 5}}, None, r"seeds: unknown field 'maxx' — did you mean 'max'"),
        ({}, 2, r"--max-seeds: 2 is not an integer >= seeds.min \(3\)"),
        ({"seeds": 3}, 6, r"--max-seeds 6: .* has a fixed number of seeds \(3\)"),
        ({"delta": {"eval/retrieval/r_mean": 0}}, None, r"delta.eval/retrieval/r_mean: 0 is not a number > 0"),
        ({"delta": {"eval/retrieval/r_mean": float("inf")}}, None, r"is not a number > 0"),
        (
            {"delta": {"eval/retrieval/r_men": 1.0}},
            None,
            r"delta.eval/retrieval/r_men: not a metric of this sweep — did you mean",
        ),
    ],
)
def test_bad_adaptive_specs_are_one_line_errors(tmp_path, fields, max_seeds, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_spec(write_spec(tmp_path, **fields), max_seeds=max_seeds)
    assert "\n" not in str(err.value)


def test_cli_refuses_max_seeds_on_a_fixed_sweep_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["sweep", str(write_spec(tmp_path, seeds=2)), "--max-seeds", "4"])
    assert result.exit_code == 2 and "has a fixed number of seeds" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ rounds from the study
def test_rounds_add_paired_seeds_only_where_the_answer_is_open(tmp_path, store):
    spec = load_spec(write_spec(tmp_path))
    result = run_sweep(spec, SweepOptions(slots=2, tracking_uri=store, progress=False, trainer=fixed_train))
    assert result.problem() is None and result.finished
    seeds = seeds_by_variant(study_of(tmp_path))
    # "up" is decided at the first look (3 seeds); "same" stays open and gets seeds 3 and 4
    assert seeds == {"baseline": [0, 1, 2, 3, 4], "up": [0, 1, 2], "same": [0, 1, 2, 3, 4]}
    calls = (tmp_path / "out" / "calls.log").read_text().split("\n")
    assert len([c for c in calls if c]) == 13  # each variant x seed trained once
    tags = MlflowClient(store).get_run(result.parent_run_id).data.tags
    assert tags["workbench.verdict.up"] == "better" and tags["workbench.verdict.same"] == "unresolved"
    assert tags["workbench.verdict.baseline"] == "baseline"
    assert (tags["workbench.seeds.baseline"], tags["workbench.seeds.up"], tags["workbench.seeds.same"]) == (
        "5",
        "3",
        "5",
    )
    assert "O'Brien–Fleming" in tags["workbench.design"]
    summary = result.summary()
    assert "better" in summary and "unresolved" in summary


def test_a_coordinator_stopped_between_rounds_resumes_the_design_from_the_study(tmp_path, store, monkeypatch):
    """The first run stops after the first rounds (as if killed before queuing the next); the
    resumed sweep reads the verdicts from the study and queues seed 3 for the open comparison."""
    spec = load_spec(write_spec(tmp_path))
    options = SweepOptions(slots=1, tracking_uri=store, progress=False, trainer=fixed_train)
    sweep = open_sweep(spec, options)
    enqueue_missing(sweep.study, spec)  # what the killed coordinator had done
    run_only_queued = SweepOptions(slots=1, tracking_uri=store, progress=False, trainer=fixed_train, worker=True)
    # a worker runs the queued rounds; the next ones it queues itself (from the study), so stop it
    # from advancing to see the state a killed coordinator leaves:
    with monkeypatch.context() as patch:
        patch.setattr(rounds, "advance", lambda sweep: None)
        run_sweep(spec, run_only_queued)
    assert seeds_by_variant(study_of(tmp_path)) == {v: [0, 1, 2] for v in ("baseline", "up", "same")}

    result = run_sweep(
        load_spec(write_spec(tmp_path)),
        SweepOptions(slots=2, resume=True, tracking_uri=store, progress=False, trainer=fixed_train),
    )
    assert result.problem() is None and result.finished
    assert seeds_by_variant(study_of(tmp_path)) == {
        "baseline": [0, 1, 2, 3, 4],
        "up": [0, 1, 2],
        "same": [0, 1, 2, 3, 4],
    }


def test_status_shows_the_verdicts_so_far(tmp_path, store):
    path = write_spec(tmp_path)
    run_sweep(load_spec(path), SweepOptions(slots=2, tracking_uri=store, progress=False, trainer=fixed_train))
    result = CliRunner().invoke(app, ["sweep", str(path), "--status", "--tracking-uri", store])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["up", "better", "3"] for line in lines), result.output
    assert any(line.split()[:3] == ["same", "unresolved", "5"] for line in lines), result.output
    assert any("paired seeds would resolve it" in line for line in lines if line.strip().startswith("same"))


# ------------------------------------------------------------------ end to end, real training
def test_real_tiny_adaptive_sweep_ends_with_verdicts(shapes_tiny, tmp_path, store):
    """Baseline, a near-null variant and a no-pre-training control, seeds {min 3, max 5}."""
    sets = [
        s for s in tiny_run(shapes_tiny, "unused", tmp_path / "out") if not s.startswith(("tracking.", "train.steps="))
    ]
    path = tmp_path / "verdicts.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "base",
                "variants": {
                    "baseline": {},
                    "focal": {"objectives.itc.focal_gamma": 0.001},
                    "random-init": {"train.steps": 0},
                },
                "seeds": {"min": 3, "max": 5},
                "metrics": ["eval/retrieval/r_mean"],
                "overrides": {"tracking.experiment": tmp_path.name, "train.steps": 5},  # the control varies it
            },
            sort_keys=False,
        )
    )
    spec = load_spec(path, sets)
    result = run_sweep(spec, SweepOptions(slots=2, tracking_uri=store, progress=False))
    assert result.problem() is None and result.finished, result.summary()

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "out" / "sweeps" / "optuna-journal.log")))
    seeds = seeds_by_variant(optuna.load_study(study_name="verdicts", storage=storage))
    tags = MlflowClient(store).get_run(result.parent_run_id).data.tags
    verdicts = {v: tags[f"workbench.verdict.{v}"] for v in ("baseline", "focal", "random-init")}
    assert verdicts["baseline"] == "baseline"
    assert verdicts["focal"] not in ("better", "worse")
    if verdicts["focal"] == "unresolved":
        assert len(seeds["focal"]) == 5
    assert all(len(seeds["baseline"]) >= len(s) for s in seeds.values())
    assert all(tags[f"workbench.seeds.{v}"] == str(len(seeds[v])) for v in seeds)

    report = report_ablations([result.study_name], out=tmp_path / "reports", tracking_uri=store, with_figures=False)
    markdown = (tmp_path / "reports" / "verdicts" / "ablations.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| variant"))
    assert "verdict" in header and "seeds" in header
    focal_row = next(line for line in markdown.splitlines() if line.startswith("| focal"))
    assert verdicts["focal"] in focal_row
    assert report.sweeps["verdicts"].table.verdicts["focal"].verdict == verdicts["focal"]
    page = (tmp_path / "reports" / "verdicts" / "ablations.html").read_text()
    tex = (tmp_path / "reports" / "verdicts" / "ablations.tex").read_text()
    assert "<th>verdict (R mean)</th>" in page and "group-sequential paired t-test" in page
    assert " & verdict \\\\" in tex and "O'Brien--Fleming" in tex  # tex() spells the en dash as LaTeX does


def test_verdict_tags_of_names_mlflow_spells_alike_stay_distinct(tmp_path, store):
    """`+scl` and `_scl` are one tag key once `+` is replaced: each keeps its own verdict (issue 29, class 9)."""
    from workbench import tracking
    from workbench.sequential import Comparison

    path = tmp_path / "alike.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "demo",
                "baseline": "baseline",
                "seeds": {"min": 3, "max": 4},
                "variants": {
                    "baseline": {},
                    "+scl": {"objectives.scl.enabled": True},
                    "_scl": {"objectives.scl.mvsc": False},
                },
                "metrics": ["eval/retrieval/r_mean"],
            }
        )
    )
    spec = load_spec(path)
    client = MlflowClient(store)
    parent = client.create_run(tracking.experiment_id("alike-tags", store)).info.run_id
    nan = float("nan")
    found = {
        name: Comparison(name, verdict, 3, nan, nan, nan, nan, nan, 0.05, nan)
        for name, verdict in (("+scl", "better"), ("_scl", "worse"))
    }
    rounds.record(parent, store, spec, found, {"baseline": 3, "+scl": 3, "_scl": 3})
    verdict_tags = {k: v for k, v in client.get_run(parent).data.tags.items() if k.startswith("workbench.verdict.")}
    assert sorted(verdict_tags.values()) == ["baseline", "better", "worse"], verdict_tags
