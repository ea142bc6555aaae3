"""Issue 29 classes 7-9 and issue 27 item 1: a sweep refused before its first trial, a sweep killed
while a trial evaluates, variant names that sanitize alike.

Real CLI invocations, real MLflow stores and Optuna journals, real child processes and a real
SIGKILL; the bad-input corpus (tests/test_bad_inputs.py) holds one case per class besides.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tiny_config import TINY_MODEL, tiny_run
from typer.testing import CliRunner

from workbench import preflight, tags
from workbench.cli import app
from workbench.config import load_config
from workbench.errors import ConfigError
from workbench.reports.parent_summary import summary_metrics
from workbench.sweeps import prechecks
from workbench.sweeps.runner import SweepOptions, run_sweep
from workbench.sweeps.spec import load_spec

BROKEN = {  # issue 27's example: SoftMask's masked pair is an ITM positive, and ITM is off
    "objectives.softmask.enabled": True,
    "objectives.itm.enabled": False,
    "model.fusion.layers": 2,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def write_spec(folder: Path, name: str, **fields) -> Path:
    data = {
        "base": "base",
        "seeds": 1,
        "metrics": ["train/loss/total"],
        "objective": {"metric": "train/loss/total", "direction": "minimize"},
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def sweep_sets(data_root: Path, out: Path, experiment: str, *extra: str, steps: int = 4) -> list[str]:
    sets = tiny_run(data_root, "unused", out, *extra, steps=steps)
    return [s for s in sets if not s.startswith("tracking.")] + [f"tracking.experiment={experiment}"]


# ------------------------------------------------------- class 7 / issue 27 item 1
def test_a_sweep_with_broken_variants_names_them_all_at_once_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(
        tmp_path,
        "broken",
        variants={
            "baseline": {},
            "softmask-no-itm": BROKEN,
            "last-layer": {"objectives.softmask.enabled": True, "objectives.softmask.layer": -1},
            "mlm-masks-nothing": {"objectives.mlm.mask_prob": 0.0},
            "no-ranker": {
                "objectives.itc.enabled": False,
                "objectives.itm.enabled": False,
                "eval.tasks": ["retrieval"],
            },
        },
    )
    started = time.monotonic()
    out = CliRunner().invoke(app, ["sweep", str(spec), "--slots", "1", "--set", f"train.out_dir={tmp_path / 'out'}"])
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: sweep 'broken': 4 problems — ")
    assert (
        "variant 'softmask-no-itm': objectives.softmask.enabled=true needs ITM (its masked pair is an ITM positive)"
        in line
    )
    assert "variant 'last-layer': objectives.softmask.layer: -1 is the last of model.fusion.layers=2" in line
    assert (
        "variant 'mlm-masks-nothing': objectives.mlm.mask_prob: 0.0 with objectives.mlm.enabled=true masks no token"
        in line
    )
    assert "variant 'no-ranker': eval.tasks: retrieval needs objectives.itc or objectives.itm" in line
    assert "baseline" not in line
    assert time.monotonic() - started < 120  # seconds, not a warm start and a baseline trial (a generous bound)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml"]  # no data, no study, no store


def test_workbench_run_refuses_an_objective_rule_before_generating_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [
        f"--set={s}"
        for s in (
            *TINY_MODEL,
            f"data.root={tmp_path / 'data'}",
            f"train.out_dir={tmp_path / 'out'}",
            "objectives.softmask.enabled=true",
            "objectives.itm.enabled=false",
        )
    ]
    out = CliRunner().invoke(app, ["run", *sets])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        "error: objectives.softmask.enabled=true needs ITM (its masked pair is an ITM positive) — set "
        "objectives.itm.enabled=true with objectives.itm.weight > 0, or objectives.softmask.enabled=false"
    ]
    assert list(tmp_path.iterdir()) == []  # no data generated, no store, no checkpoint folder


def test_missing_files_and_metric_typos_are_refused_before_the_first_trial(shapes_tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vit.pt").write_bytes(b"")  # a file that is there: not a problem (its contents are the run's)
    spec = write_spec(
        tmp_path,
        "files",
        variants={
            "baseline": {},
            "own-vit": {"model.vision.init": str(tmp_path / "vit.pt")},
            "lost-text": {"model.text.init": "nowhere/text.pt"},
            "other-captions": {"data.pretrain_files": ["captions_v2.json"]},
        },
        metrics=["eval/retrieval/r_mean", "eval/retreival/r_mean"],
        objective={"metric": "train/loss/totl", "direction": "minimize"},
        overrides={"data.root": str(shapes_tiny), "data.shapes_size": "tiny"},
    )
    with pytest.raises(ConfigError) as err:
        load_spec(spec)
    line = str(err.value)
    assert "\n" not in line and line.startswith("sweep 'files': 4 problems — ")
    assert "variant 'lost-text': model.text.init: 'nowhere/text.pt' is not a file" in line
    assert f"variant 'other-captions': data.root {shapes_tiny} lacks data.pretrain_files[0]: captions_v2.json" in line
    assert (
        "metrics: 'eval/retreival/r_mean' is no metric workbench logs — did you mean 'eval/retrieval/r_mean'?" in line
    )
    assert "objective: 'train/loss/totl' is no metric workbench logs — did you mean 'train/loss/total'?" in line
    assert "own-vit" not in line


def test_an_objective_one_variant_does_not_log_names_that_variant(tmp_path):
    spec = write_spec(
        tmp_path,
        "mlm",
        variants={"baseline": {}, "no-mlm": {"objectives.mlm.enabled": False}},
        objective={"metric": "train/mlm/acc", "direction": "maximize"},
    )
    with pytest.raises(
        ConfigError,
        match=r"^sweep 'mlm', variant 'no-mlm': objective 'train/mlm/acc' is not logged by "
        r"this variant",
    ):
        load_spec(spec)


def test_a_grid_is_sized_before_it_is_enumerated(tmp_path):
    axes = {
        f"objectives.{key}": [0.1 * i + 0.05 for i in range(10)]
        for key in ("scl.image_mask_ratio", "scl.text_mask_ratio", "mlm.mask_prob", "itc.momentum")
    }
    axes |= {
        "augment.text_mask_ratio": [0.01 * i for i in range(1, 11)],
        "warmstart.mask_prob": [0.02 * i for i in range(1, 11)],
        "train.lr": [1e-4 * i for i in range(1, 11)],
    }  # 10^7 cells
    spec = write_spec(tmp_path, "huge", axes=axes)
    started = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=r"axes make 10,000,000 variants \(10 x 10 x 10 x 10 x 10 x 10 x 10\), more than "
        r"the 10,000 trials a sweep may run \(MAX_TRIALS\)",
    ):
        load_spec(spec)
    assert time.monotonic() - started < 60  # enumerating 10^7 variants and resolving their configs takes hours
    with pytest.raises(ConfigError, match=r"3 variants x 4,000 seeds\), more than the 10,000"):
        load_spec(write_spec(tmp_path, "seeds", variants={"a": {}, "b": {}, "c": {}}, seeds=4000))
    assert prechecks.MAX_TRIALS == 10_000


def test_declared_metric_names_are_the_ones_a_real_run_logs(shapes_tiny, tmp_path, store):
    """Every objective on (SoftMask's rows in ITM's batch, one SCL half), retrieval and VQA: what
    the run logs is what `preflight.logged_metrics` declares, up to data-dependent eval keys."""
    from workbench import train

    cfg = load_config(
        "base",
        tiny_run(
            shapes_tiny,
            store,
            tmp_path / "out",
            "model.fusion.layers=2",
            "objectives.softmask.enabled=true",
            "objectives.softmask.layer=0",
            "objectives.softmask.positive=itm_batch",
            "objectives.scl.mvsc=false",
            "eval.tasks=[retrieval,vqa]",
            "tracking.experiment=declared",
            steps=2,
        ),
    )
    assert preflight.problems(cfg) == []
    result = train.run(cfg, progress=False)
    logged = set(MlflowClient(store).get_run(result.run_id).data.metrics)
    declared = preflight.logged_metrics(cfg)
    assert logged <= declared, sorted(logged - declared)
    assert {k for k in declared if k.startswith("train/")} == {k for k in logged if k.startswith("train/")}
    assert {k for k in declared - logged if not k.startswith("eval/attention/")} == set()
    assert "train/softmask_itm/acc" not in declared and "train/mvsc/acc" not in declared
    assert "train/itm/masked_acc" in logged and "eval/retrieval_itc/r_mean" in logged


def test_demo_refuses_an_out_path_that_is_a_file_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.html").write_text("mine")
    out = CliRunner().invoke(app, ["demo", "--out", "report.html"])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        f"error: --out: cannot create report.html: {tmp_path / 'report.html'} is a file, not a directory"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no ShapesWorld, no store
    assert (tmp_path / "report.html").read_text() == "mine"


# ------------------------------------------------------------------- class 9
def test_variant_names_that_sanitize_alike_keep_their_own_summary_keys():
    parts = tags.key_parts(["baseline", "+scl", "_scl", "日本", "中国", "image_mask_ratio=0.2", "."])
    assert parts["_scl"] == "_scl" and parts["baseline"] == "baseline"
    assert parts["image_mask_ratio=0.2"] == "image_mask_ratio_0.2"  # alone: the old key, unchanged
    assert parts["+scl"].startswith("_scl-") and parts["日本"].startswith("__-") and parts["中国"].startswith("__-")
    assert len(set(parts.values())) == len(parts)  # every name its own key
    assert parts == tags.key_parts(list(parts))  # the same every time (a report run again overwrites its keys)

    class Table:  # the two members `summary_metrics` reads of an AblationTable
        metrics = ["eval/retrieval/r_mean"]
        variants = ["_scl", "+scl"]

        def cell(self, variant, metric, stat):
            return {"_scl": 10.0, "+scl": 20.0}[variant] if stat == "mean" else math.nan

    summary = summary_metrics(Table())
    assert summary == {
        "summary/retrieval/r_mean/_scl/mean": 10.0,
        f"summary/retrieval/r_mean/{parts['+scl']}/mean": 20.0,
    }


# ------------------------------------------------------------------- class 8
def journal(out: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(out / "sweeps" / "optuna-journal.log")))


def test_kill_9_of_the_sweep_while_a_trial_evaluates_then_resume_finishes_its_evaluation(shapes_tiny, tmp_path, store):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path, "evalkill", variants={"only": {}})
    sets = sweep_sets(shapes_tiny, out, tmp_path.name, "eval.tasks=[vqa]", "eval.finetune_steps=60")
    command = [
        sys.executable,
        "-m",
        "workbench",
        "sweep",
        str(spec_path),
        "--slots",
        "1",
        "--no-progress",
        "--tracking-uri",
        store,
    ] + [arg for s in sets for arg in ("--set", s)]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    phase = out / "sweeps" / "evalkill" / "trial-0000.phase"
    try:
        deadline = time.monotonic() + 300
        while not (phase.is_file() and "eval" in phase.read_text()):
            assert sweep.poll() is None, f"the sweep ended early: {sweep.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the trial never reached its evaluation"
            time.sleep(0.1)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    finally:
        if sweep.poll() is None:
            sweep.kill()
    trial = optuna.load_study(study_name="evalkill", storage=journal(out)).trials[0]
    pid = trial.user_attrs["workbench.child_pid"]
    deadline = time.monotonic() + 60
    while _alive(pid):  # the orphaned trial stops itself, marking its run KILLED
        assert time.monotonic() < deadline, "the orphaned trial did not stop"
        time.sleep(0.2)
    client = MlflowClient(store)
    (killed,) = client.search_runs(
        [client.get_experiment_by_name(tmp_path.name).experiment_id], "tags.`workbench.variant` = 'only'"
    )
    assert (
        "train/loss/total" in killed.data.metrics and "eval/vqa/acc" not in killed.data.metrics
    )  # trained, not scored

    result = run_sweep(
        load_spec(spec_path, sets), SweepOptions(slots=1, resume=True, tracking_uri=store, progress=False)
    )
    assert result.problem() is None, result.problem()
    (done,) = optuna.load_study(study_name="evalkill", storage=journal(out)).get_trials(states=(TrialState.COMPLETE,))
    run = client.get_run(killed.info.run_id)  # the same MLflow run, resumed from its checkpoint and evaluated
    assert done.user_attrs["workbench.mlflow_run_id"] == run.info.run_id and run.info.status == "FINISHED"
    assert done.value == run.data.metrics["train/loss/total"] == killed.data.metrics["train/loss/total"]
    assert "eval/vqa/acc" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
    assert sorted(steps) == [2, 4]  # not trained again
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()[
        :1
    ] not in ("Z", "")


def test_a_huge_seed_count_is_refused_before_its_seed_list_is_made(tmp_path):
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"seeds: 1,000,000,000 seeds, more than the 10,000 trials"):
        load_spec(write_spec(tmp_path, "seeds", variants={"a": {}}, seeds=10**9))  # a tuple of 10^9 ints: 8 GB
    assert time.monotonic() - started < 60


def test_workbench_run_refuses_a_missing_init_file_before_generating_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [
        f"--set={s}"
        for s in (
            *TINY_MODEL,
            f"data.root={tmp_path / 'data'}",
            f"train.out_dir={tmp_path / 'out'}",
            "model.text.init=weights/bert.pt",
        )
    ]
    out = CliRunner().invoke(app, ["run", *sets])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        "error: model.text.init: 'weights/bert.pt' is not a file — 'random', 'warmstart' or a warm-start file path"
    ]
    assert list(tmp_path.iterdir()) == []
    cfg = load_config("base", [*TINY_MODEL, "model.text.init=weights/bert.pt"])
    assert preflight.problems(cfg, fresh=False, data=False) == []  # a resumed run's weights come from its checkpoint


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # every objective, SoftMask's own term, both SCL halves
        {"softmask.positive": "itm_batch", "scl.mlsc": False},
        {"softmask.enabled": False, "itm.enabled": False, "scl.mvsc": False},
    ],
)
def test_each_objective_declares_exactly_the_train_metrics_its_step_returns(overrides):
    """The keys one step returns (as `train.run` logs them) are each spec's declared `metrics`
    (ITM declares its masked-row keys also when SoftMask's rows are not in its batch)."""
    from test_objectives_grad import config, make_batch, setup, step  # the tiny model and batch of those tests

    from workbench.objectives.combiner import logged_metrics

    cfg = config(**overrides)
    model, objectives = setup(cfg)
    _, out = step(model, objectives, make_batch())
    returned = {f"train/{'loss/total' if key == 'loss' else key}" for key, value in out.items() if value.numel() == 1}
    declared = logged_metrics(cfg.objectives) - {"train/lr", "train/samples_per_s"}
    if cfg.objectives.softmask.positive != "itm_batch" or not cfg.objectives.softmask.enabled:
        declared -= {"train/itm/masked_acc", "train/itm/masked"}
    assert returned == declared
