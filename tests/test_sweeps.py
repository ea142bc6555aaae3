"""`workbench sweep`: specs, the Optuna queue, slots, child processes, MLflow layout, resume.

Real Optuna studies (journal file / SQLite), real MLflow stores in tmp dirs, real
child processes. Scheduling tests use `fake_train` below (logs like `train.run`,
fails on purpose); the end-to-end tests run real 5-step trainings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench import study_attrs
from workbench.cli import app
from workbench.errors import ConfigError
from workbench.sweeps import child, optuna_internals
from workbench.sweeps import study as sweep_study
from workbench.sweeps.pruning import feed_pruner
from workbench.sweeps.runner import SweepOptions, run_sweep
from workbench.sweeps.slots import plan_slots
from workbench.sweeps.space import space
from workbench.sweeps.spec import grid_variants, list_specs, load_spec


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module", autouse=True)
def warm_trial_server():
    """Start the trial forkserver (it imports torch & co once) while the fast tests run."""
    child.warm_up()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module (creating its schema takes seconds); tests use their own experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def write_spec(folder: Path, name: str = "tiny", **fields) -> Path:
    data = {
        "base": "base",
        "variants": {"mvsc": {"objectives.scl.mlsc": False}, "mlsc": {"objectives.scl.mvsc": False}},
        "seeds": 2,
        "metrics": ["train/loss/total"],
        "objective": {"metric": "train/loss/total", "direction": "minimize"},
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_sets(data_root: Path, out_dir: Path, experiment: str, steps: int = 5) -> list[str]:
    """--set overrides for 5-step CPU trials without downstream eval (the sweep owns tracking.uri)."""
    sets = tiny_run(data_root, "unused", out_dir, "eval.tasks=[]", steps=steps)
    return [s for s in sets if not s.startswith("tracking.")] + [f"tracking.experiment={experiment}"]


def fake_overrides(tmp_path: Path) -> dict:
    return {
        "train.out_dir": str(tmp_path / "out"),
        "data.root": str(tmp_path),
        "data.generate": False,
        "tracking.experiment": tmp_path.name,
    }


def journal(out_dir: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(out_dir / "sweeps" / "optuna-journal.log")))


def fake_train(cfg, *, resume_run_id=None, parent_run_id=None, tags=None, progress=True):
    """Stands in for `train.run` in scheduling tests: one MLflow child run, instant.

    train.lr picks the behaviour: 0.5 = killed by SIGKILL on its first attempt (an
    OOM kill), 0.7 = a data error (bad input: must not be retried), 0.9 = its trial is
    failed as stale (and re-queued) by another process while its first attempt runs;
    else finishes with r_mean = 10 * lr.
    """
    from workbench import tracking
    from workbench.errors import DataError
    from workbench.train import RunResult

    marker = Path(cfg.train.out_dir) / f"attempts-{tags['workbench.variant']}-{tags['workbench.seed']}"
    attempt = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(attempt))
    tracker = tracking.start_run(cfg, parent_run_id=parent_run_id, tags=tags)
    if cfg.train.lr == 0.5 and attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.train.lr == 0.9 and attempt == 1:  # what fail_stale_trials on another host does
        study = optuna.load_study(study_name=tags["workbench.sweep"], storage=journal(Path(cfg.train.out_dir)))
        RetryHeartbeatStaleTrialCallback(max_retry=1)(
            study, study.tell(int(tags["workbench.trial"]), state=TrialState.FAIL)
        )
    if cfg.train.lr == 0.7:
        tracker.finish("FAILED")
        raise DataError("data.root: directory not found: /nowhere")
    tracker.log_metrics({"train/loss/total": cfg.train.lr, "eval/retrieval/r_mean": 10 * cfg.train.lr}, step=1)
    tracker.finish("FINISHED")
    return RunResult(tracker.run_id, "FINISHED", {"eval/retrieval/r_mean": 10 * cfg.train.lr}, cfg.train.lr, 1)


def fake_spec(tmp_path: Path, variants: dict, retries: int = 1) -> Path:
    return write_spec(
        tmp_path,
        "fake",
        variants={name: {"train.lr": lr} for name, lr in variants.items()},
        seeds=1,
        retries=retries,
        metrics=["eval/retrieval/r_mean"],
        objective={"metric": "eval/retrieval/r_mean", "direction": "maximize"},
        overrides=fake_overrides(tmp_path),
    )


def trial_errors(study: optuna.Study) -> str:
    """Why trials failed, with the end of their logs (assertion messages)."""
    lines = []
    for trial in study.trials:
        if trial.state != TrialState.COMPLETE:
            log = Path(trial.user_attrs.get(study_attrs.LOG_ATTR, "/nonexistent"))
            tail = log.read_text()[-1500:] if log.is_file() else ""
            lines.append(
                f"trial {trial.number} {trial.state.name}: {trial.user_attrs.get(study_attrs.ERROR_ATTR)}\n{tail}"
            )
    return "\n".join(lines)


def process_gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return not child.pid_alive(pid)
    return "State:\tZ" in status.read_text()  # a zombie has exited


# ------------------------------------------------------------------ specs
def test_named_sweeps_load_validate_and_list():
    specs = {spec.name: spec for spec in list_specs()}
    assert {"mask-ratio", "scl", "softmask", "focal-gamma", "pooling", "augment"} <= set(specs)
    mask = specs["mask-ratio"]
    assert mask.total_trials == 4 * 3 * 3 and mask.seeds == (0, 1, 2)
    assert mask.baseline == "image_mask_ratio=0.8,text_mask_ratio=0.4"
    assert mask.variant(mask.baseline).overrides == {
        "objectives.scl.image_mask_ratio": 0.8,
        "objectives.scl.text_mask_ratio": 0.4,
    }
    assert [v.name for v in specs["scl"].variants] == ["baseline", "+mvsc", "+mlsc", "+both"]
    assert [v.name for v in specs["softmask"].variants] == ["off", "random", "hard", "soft"]
    assert specs["pooling"].objective == "eval/video_retrieval/r_mean"
    assert specs["focal-gamma"].baseline == "focal_gamma=0"

    out = CliRunner().invoke(app, ["sweep", "list"])
    assert out.exit_code == 0, out.output
    for name in ("mask-ratio", "scl", "softmask", "focal-gamma", "pooling", "augment"):
        assert name in out.output
    assert "36 (12x3)" in out.output


def test_grid_is_the_cartesian_product_named_by_axis_values():
    variants = grid_variants(
        {"objectives.scl.image_mask_ratio": [0.2, 0.6], "objectives.itm.negatives": ["hard", "random"]}
    )
    assert [v.name for v in variants] == [
        "image_mask_ratio=0.2,negatives=hard",
        "image_mask_ratio=0.2,negatives=random",
        "image_mask_ratio=0.6,negatives=hard",
        "image_mask_ratio=0.6,negatives=random",
    ]
    assert variants[1].overrides == {"objectives.scl.image_mask_ratio": 0.2, "objectives.itm.negatives": "random"}


def test_unknown_axis_key_fails_before_any_trial_with_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, "typo", variants=None, axes={"objectives.scl.image_mask_rato": [0.2, 0.4]})
    out = CliRunner().invoke(app, ["sweep", str(spec), "--slots", "1", "--set", f"train.out_dir={tmp_path / 'out'}"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        f"error: sweep 'typo' ({spec}): unknown axis key 'objectives.scl.image_mask_rato' "
        "— did you mean 'objectives.scl.image_mask_ratio'?"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()  # no study, no runs


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"axes": {"objectives.scl.image_mask_ratio": [0.4, 1.5]}, "variants": None},
            "variant 'image_mask_ratio=1.5': objectives.scl.image_mask_ratio: 1.5 is out of range — allowed: in "
            "[0.0, 1.0)",
        ),
        ({"baseline": "mvcs"}, "baseline 'mvcs' is not a variant — did you mean 'mvsc'?"),
        ({"seeds": 0}, "seeds: 0 is not a count >= 1 or a list of distinct integers"),
        (
            {"variants": {"a": {"train.seed": 3}}},
            "'train.seed' cannot be set by a sweep (the sweep sets it from `seeds`)",
        ),
        (
            {"objective": "eval/vqa/acc", "overrides": {"eval.tasks": ["retrieval"]}},
            "objective 'eval/vqa/acc' needs eval task 'vqa', but eval.tasks is ['retrieval']",
        ),
        (
            {"objective": "eval/video_retrieval_itc/r_mean", "overrides": {"eval.tasks": ["retrieval"]}},
            "objective 'eval/video_retrieval_itc/r_mean' needs eval task 'video_retrieval', but eval.tasks is "
            "['retrieval']",
        ),
        (
            {"objective": "eval/attention/in_object", "overrides": {"eval.tasks": ["vqa"]}},
            "objective 'eval/attention/in_object' needs eval task 'retrieval', but eval.tasks is ['vqa']",
        ),
        (
            {"metrics": ["retrieval/r_mean"]},
            "'retrieval/r_mean' is not an MLflow metric key (eval/... or train/...) — did you mean "
            "'eval/retrieval/r_mean'?",
        ),
        ({"seed": 3}, "unknown field 'seed' — did you mean 'seeds'?"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_field(tmp_path, fields, message):
    with pytest.raises(ConfigError) as err:
        load_spec(write_spec(tmp_path, "bad", **fields))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_set_cannot_override_a_varied_key(tmp_path):
    with pytest.raises(ConfigError, match="--set objectives.scl.mvsc: it is varied by sweep 'tiny'"):
        load_spec(write_spec(tmp_path), ["objectives.scl.mvsc=true"])


# ------------------------------------------------------------------ slots
def test_slot_planning(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = plan_slots("0,2", per_gpu=2, gpu_count=4, cpu_count=16)
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], s.threads) for s in gpu] == [
        ("gpu0.0", "0", 4),
        ("gpu0.1", "0", 4),
        ("gpu2.0", "2", 4),
        ("gpu2.1", "2", 4),
    ]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan_slots(None, gpu_count=2, cpu_count=2)] == ["0", "1"]
    cpu = plan_slots(None, slots=3, gpu_count=2, cpu_count=6)
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], s.threads) for s in cpu] == [
        ("cpu0", "", 2),
        ("cpu1", "", 2),
        ("cpu2", "", 2),
    ]
    assert [(s.name, s.threads) for s in plan_slots(None, gpu_count=0, cpu_count=2)] == [("cpu0", 2)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # indices count the GPUs this process sees
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan_slots("1", gpu_count=2, cpu_count=2)] == ["5"]
    with pytest.raises(ConfigError, match="--gpus 0,7: GPU 7 does not exist"):
        plan_slots("0,7", gpu_count=2)
    with pytest.raises(ConfigError, match="--slots excludes --gpus and --per-gpu"):
        plan_slots("0", slots=2, gpu_count=2)


# ------------------------------------------------------------------ the queue
def _grid_study(storage, spec):
    study = optuna.create_study(study_name="q", storage=storage, direction="minimize")
    return study, sweep_study.enqueue_missing(study, spec)


def test_optuna_internals_take_queued_pops_each_queued_trial_once_and_never_creates_one(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    spec = load_spec(write_spec(tmp_path, seeds=3))
    study, queued = _grid_study(storage, spec)
    assert queued == 6
    popped, lock = [], threading.Lock()

    def worker():
        while (trial := optuna_internals.take_queued(study)) is not None:
            with lock:
                popped.append(trial.number)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(popped) == [0, 1, 2, 3, 4, 5]
    assert len(study.trials) == 6 and all(t.state == TrialState.RUNNING for t in study.trials)
    assert optuna_internals.take_queued(study) is None and len(study.trials) == 6


def test_enqueue_missing_queues_only_what_has_no_complete_or_open_trial(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    spec = load_spec(write_spec(tmp_path))
    study, _ = _grid_study(storage, spec)
    first, second = optuna_internals.take_queued(study), optuna_internals.take_queued(study)
    first.suggest_categorical("variant", ["mvsc", "mlsc"]), first.suggest_categorical("seed", [0, 1])
    study.tell(first, 1.0)
    study.tell(second, state=TrialState.FAIL)  # retries exhausted: missing again
    assert sweep_study.enqueue_missing(study, spec) == 1
    assert sweep_study.enqueue_missing(study, spec) == 0
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(sweep_study.grid_key(t) for t in waiting) == [("mlsc", 0), ("mlsc", 1), ("mvsc", 1)]


def test_trial_of_a_dead_sweep_process_is_failed_and_requeued_with_its_params(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    spec = load_spec(write_spec(tmp_path, seeds=1))
    study, _ = _grid_study(storage, spec)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now free: the owner of the trial below is dead
    trial = optuna_internals.take_queued(study)
    trial.set_user_attr(study_attrs.WORKER_ATTR, {"host": sweep_study.HOST, "pid": dead.pid, "trial": trial.number})
    alive = sweep_study.take(study, spec)  # taken and claimed by this process, and running: must be left alone

    retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
    assert sweep_study.reap_orphans(study, {alive.number}, retry) == [trial.number]
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs[study_attrs.ERROR_ATTR] == f"its sweep process (pid {dead.pid} on {sweep_study.HOST}) died"
    (requeued,) = study.get_trials(states=(TrialState.WAITING,))
    assert sweep_study.grid_key(requeued) == sweep_study.grid_key(frozen) == ("mvsc", 0)
    assert RetryHeartbeatStaleTrialCallback.retry_history(requeued) == [trial.number]
    assert study.trials[alive.number].user_attrs[study_attrs.WORKER_ATTR]["pid"] == os.getpid()
    assert study.trials[alive.number].state == TrialState.RUNNING
    assert space(spec, optuna_internals.take_queued(study)).key == ("mvsc", 0)  # the retry runs the same variant x seed


def test_optuna_internals_set_user_attr_writes_on_a_trial_another_process_runs(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    owner = optuna.create_study(study_name="o", storage=storage).ask()
    reaper = optuna.load_study(
        study_name="o", storage=JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    )
    (running,) = reaper.get_trials(states=(TrialState.RUNNING,))
    optuna_internals.set_user_attr(reaper, running, study_attrs.ERROR_ATTR, "its owner died")
    assert owner.study.trials[owner.number].user_attrs == {study_attrs.ERROR_ATTR: "its owner died"}
    assert sweep_study.fail(reaper, running, "twice", retry=None) is True
    assert sweep_study.fail(reaper, running, "twice", retry=None) is False  # finished: failed (and re-queued) once
    assert owner.study.trials[owner.number].user_attrs[study_attrs.ERROR_ATTR] == "twice"


def test_optuna_internals_heartbeat_keeps_a_trial_alive_and_its_silence_requeues_it(tmp_path):
    """While `heartbeat` runs, another host's `fail_stale_trials` (via reap_orphans) leaves the trial
    alone well past the grace period; once it stops, the trial is failed and re-queued."""
    storage = sweep_study.open_optuna(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=1, retries=1)
    spec = load_spec(write_spec(tmp_path, seeds=1))
    study, _ = _grid_study(storage, spec)
    trial = sweep_study.take(study, spec)
    trial.set_user_attr(study_attrs.WORKER_ATTR, {"host": "elsewhere", "pid": 1, "trial": trial.number})
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    with optuna_internals.heartbeat(trial):
        time.sleep(3.5)  # one beat alone would be stale by now: > grace period (2 s) + 1 s (SQLite's clock resolution)
        assert sweep_study.reap_orphans(study, set(), retry) == []
    assert study.trials[trial.number].state == TrialState.RUNNING
    time.sleep(3.1)
    sweep_study.reap_orphans(study, set(), retry)
    assert study.trials[trial.number].state == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))  # the other variant, and the retry
    (requeued,) = [t for t in waiting if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == trial.number]
    assert sweep_study.grid_key(requeued) == ("mvsc", 0)  # the seed is a user attribute the retry keeps


def test_quiet_optuna_restores_the_log_level_and_warning_filters():
    """A sweep silences Optuna's INFO lines and experimental warnings for its own run only."""
    before_level, before_filters = optuna.logging.get_verbosity(), list(warnings.filters)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with sweep_study.quiet_optuna(), warnings.catch_warnings(record=True) as caught:
            assert optuna.logging.get_verbosity() == optuna.logging.WARNING
            warnings.warn("experimental", optuna.exceptions.ExperimentalWarning, stacklevel=1)
        assert caught == []
        assert optuna.logging.get_verbosity() == optuna.logging.INFO and warnings.filters == before_filters
    finally:
        optuna.logging.set_verbosity(before_level)


def test_pruner_is_fed_from_metric_history_and_prunes_a_lagging_trial(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(
        study_name="p",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    for loss in (1.0, 1.2):  # earlier trials: training loss 1.0 and 1.2 at step 10
        done = study.ask()
        feed_pruner(done, [(10, loss)], set(), flip=True)
        study.tell(done, 50.0)
    good, bad = study.ask(), study.ask()
    reported: set[int] = set()
    assert feed_pruner(good, [(10, 0.9)], reported, flip=True) is False
    assert reported == {10}
    assert feed_pruner(good, [(10, 0.9)], reported, flip=True) is False  # same point not reported twice
    assert feed_pruner(bad, [(10, 3.0)], set(), flip=True) is True  # loss 3.0 lags the median (1.1)
    assert study.trials[bad.number].intermediate_values == {10: -3.0}


# ------------------------------------------------------- child processes, fake trainer
def test_killed_trial_is_retried_and_its_half_run_marked_killed(tmp_path, store):
    spec = load_spec(fake_spec(tmp_path, {"ok": 0.1, "oom": 0.5}))
    result = run_sweep(spec, SweepOptions(slots=2, tracking_uri=store, progress=False, trainer=fake_train))

    assert result.problem() is None and result.finished
    trials = journal(tmp_path / "out")
    study = optuna.load_study(study_name="fake", storage=trials)
    states = sorted((t.params["variant"], t.state.name) for t in study.trials)
    assert states == [("ok", "COMPLETE"), ("oom", "COMPLETE"), ("oom", "FAIL")]
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    assert failed.user_attrs[study_attrs.ERROR_ATTR].startswith(
        "the trial process was killed by SIGKILL (out of memory?)"
    )
    assert {t.params["variant"]: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))} == {
        "ok": 1.0,
        "oom": 5.0,
    }

    client = MlflowClient(store)
    children = client.search_runs(
        [runs_experiment(client, result)], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    by_status = sorted((r.data.tags["workbench.variant"], r.info.status) for r in children)
    assert by_status == [("ok", "FINISHED"), ("oom", "FINISHED"), ("oom", "KILLED")]


def test_data_error_in_a_trial_is_not_retried_and_stops_the_sweep(tmp_path, store):
    spec = load_spec(fake_spec(tmp_path, {"bad": 0.7, "ok": 0.1}))
    result = run_sweep(spec, SweepOptions(slots=1, tracking_uri=store, progress=False, trainer=fake_train))

    problem = result.problem()
    assert isinstance(problem, ConfigError)
    assert str(problem) == "trial 0 (bad, seed 0): data.root: directory not found: /nowhere"
    study = optuna.load_study(study_name="fake", storage=journal(tmp_path / "out"))
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "FAIL"), (1, "WAITING")]  # no retry, no new trial
    assert (tmp_path / "out" / "attempts-bad-0").read_text() == "1"
    parent = MlflowClient(store).get_run(result.parent_run_id)
    assert parent.info.status == "FAILED"


def test_a_trial_failed_as_stale_while_it_ran_is_completed_by_its_retry_and_the_slot_goes_on(tmp_path, store):
    spec = load_spec(fake_spec(tmp_path, {"stale": 0.9, "ok": 0.1}))
    result = run_sweep(spec, SweepOptions(slots=1, tracking_uri=store, progress=False, trainer=fake_train))

    assert result.crashes == [] and result.problem() is None and result.finished
    study = optuna.load_study(study_name="fake", storage=journal(tmp_path / "out"))
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert [(o.number, o.state, o.reused) for o in result.outcomes] == [
        (0, "FAIL", False),
        (1, "COMPLETE", False),
        (2, "COMPLETE", True),
    ]
    assert study.trials[2].value == 9.0 and (tmp_path / "out" / "attempts-stale-0").read_text() == "1"  # not re-trained


def test_tpe_search_runs_its_budget_of_trials_within_the_ranges(tmp_path, store):
    spec_path = write_spec(
        tmp_path,
        "search",
        variants=None,
        seeds=1,
        search={
            "trials": 3,
            "seed": 0,
            "ranges": {
                "train.lr": {"low": 0.01, "high": 0.3, "log": True},
                "objectives.itm.negatives": ["hard", "random"],
            },
        },
        metrics=["eval/retrieval/r_mean"],
        objective="eval/retrieval/r_mean",
        overrides=fake_overrides(tmp_path),
    )
    result = run_sweep(
        load_spec(spec_path), SweepOptions(slots=2, tracking_uri=store, progress=False, trainer=fake_train)
    )
    assert result.problem() is None

    study = optuna.load_study(study_name="search", storage=journal(tmp_path / "out"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3  # the budget, not one more
    for trial in study.trials:
        assert 0.01 <= trial.params["train.lr"] <= 0.3
        assert trial.params["objectives.itm.negatives"] in ("hard", "random")
        assert trial.value == pytest.approx(10 * trial.params["train.lr"])
    client = MlflowClient(store)
    children = client.search_runs(
        [runs_experiment(client, result)], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    by_variant = {r.data.tags["workbench.variant"]: r for r in children}
    assert sorted(by_variant) == ["trial-0000", "trial-0001", "trial-0002"]
    for trial in study.trials:
        params = by_variant[f"trial-{trial.number:04d}"].data.params
        assert float(params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert params["objectives.itm.negatives"] == trial.params["objectives.itm.negatives"]


def runs_experiment(client: MlflowClient, result) -> str:
    return client.get_run(result.parent_run_id).info.experiment_id


# ------------------------------------------------------------- end to end, real training
def test_two_variants_two_seeds_on_two_cpu_slots(shapes_tiny, tmp_path, store):
    spec = load_spec(write_spec(tmp_path), tiny_sets(shapes_tiny, tmp_path / "out", tmp_path.name))
    result = run_sweep(spec, SweepOptions(slots=2, tracking_uri=store, progress=False))
    assert result.problem() is None

    study = optuna.load_study(study_name="tiny", storage=journal(tmp_path / "out"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4, trial_errors(study)
    keys = sorted((t.params["variant"], t.user_attrs["seed"]) for t in study.trials)
    assert keys == [("mlsc", 0), ("mlsc", 1), ("mvsc", 0), ("mvsc", 1)]

    client = MlflowClient(store)
    all_runs = client.search_runs([runs_experiment(client, result)])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(all_runs) == 5 and [p.info.run_id for p in parents] == [result.parent_run_id]
    assert parents[0].data.tags["workbench.sweep"] == "tiny" and parents[0].info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(result.parent_run_id)] == ["sweep.yaml"]
    by_trial = {t.number: t for t in study.trials}
    for run in children:
        tags, params = run.data.tags, run.data.params
        trial = by_trial[int(tags["workbench.trial"])]
        assert run.info.status == "FINISHED"
        assert tags["workbench.sweep"] == "tiny"
        assert (tags["workbench.variant"], int(tags["workbench.seed"])) == (
            trial.params["variant"],
            trial.user_attrs["seed"],
        )
        assert trial.user_attrs["workbench.mlflow_run_id"] == run.info.run_id
        assert params["train.seed"] == tags["workbench.seed"]
        assert params["objectives.scl.mlsc"] == str(trial.params["variant"] == "mlsc")  # the variant was applied
        assert params["objectives.scl.mvsc"] == str(trial.params["variant"] == "mvsc")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert sorted(steps) == [2, 4, 5]  # each logged step once
        assert trial.value == run.data.metrics["train/loss/total"]


def test_kill_9_of_the_sweep_then_resume_finishes_only_what_is_missing(shapes_tiny, tmp_path, store):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path)
    sets = tiny_sets(shapes_tiny, out, tmp_path.name)
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
    try:
        first = _wait_for_a_complete_trial(out, sweep)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    finally:
        if sweep.poll() is None:
            sweep.kill()
    study = optuna.load_study(study_name="tiny", storage=journal(out))
    orphans = [t.user_attrs.get("workbench.child_pid") for t in study.get_trials(states=(TrialState.RUNNING,))]
    deadline = time.monotonic() + 60
    while not all(pid is None or process_gone(pid) for pid in orphans):  # the half-run trial stops itself
        assert time.monotonic() < deadline, "the orphaned trial process did not stop after the sweep was killed"
        time.sleep(0.2)

    result = run_sweep(
        load_spec(spec_path, sets), SweepOptions(slots=2, resume=True, tracking_uri=store, progress=False)
    )
    assert result.problem() is None

    study = optuna.load_study(study_name="tiny", storage=journal(out))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4, trial_errors(study)
    assert len({(t.params["variant"], t.user_attrs["seed"]) for t in complete}) == 4
    assert study.trials[first.number].state == TrialState.COMPLETE  # finished before the kill: not re-run
    assert (
        study.trials[first.number].user_attrs["workbench.mlflow_run_id"] == first.user_attrs["workbench.mlflow_run_id"]
    )

    client = MlflowClient(store)
    children = client.search_runs(
        [runs_experiment(client, result)], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 4
    assert len({(r.data.tags["workbench.variant"], r.data.tags["workbench.seed"]) for r in finished}) == 4
    assert {t.user_attrs["workbench.mlflow_run_id"] for t in complete} == {r.info.run_id for r in finished}
    assert all(r.info.status == "KILLED" for r in children if r not in finished)  # a half-run attempt, if any
    assert len(children) <= 5
    for run in finished:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert sorted(steps) == [2, 4, 5]


def _wait_for_a_complete_trial(out: Path, sweep: subprocess.Popen, timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert sweep.poll() is None, f"the sweep ended early: {sweep.stderr.read().decode()[-2000:]}"
        try:
            study = optuna.load_study(study_name="tiny", storage=journal(out))
            complete = study.get_trials(states=(TrialState.COMPLETE,))
            if complete:
                return complete[0]
        except (KeyError, FileNotFoundError):
            pass  # the study does not exist yet
        time.sleep(0.2)
    raise AssertionError("no trial completed in time")
