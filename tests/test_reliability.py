"""Reliability: no recorded result lost, no run left RUNNING, no traceback (issue 16).

Real processes, a real MLflow store and real Optuna storages:
* two coordinators racing for a sweep's parent run make exactly one;
* `--resume` never changes a FINISHED run, and a resume whose config differs from
  the run's is refused before the run is touched;
* SIGTERM and SIGINT stop `workbench run` at a step boundary with a checkpoint, a
  KILLED run, no child process left, and the exact resume command, which works;
* every CLI command turns an unexpected exception into one line and a log file,
  and leaves no MLflow run RUNNING.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from test_sweeps import fake_overrides, write_spec
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench import checkpoint, tracking, train
from workbench.cli import app
from workbench.config import load_config

TESTS = Path(__file__).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def group_gone(pgid: int, timeout_s: float = 20) -> bool:
    """No process of the (new) session `pgid` is left: the command stopped all its children."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def statuses(store: str, experiment: str) -> list[str]:
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    return sorted(r.info.status for r in client.search_runs([found.experiment_id])) if found else []


# ------------------------------------------------- two coordinators, one parent
CLAIMER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from mlflow.tracking import MlflowClient
    from workbench.study_attrs import PARENT_ATTR
    from workbench.sweeps.study import claim_parent_run

    journal, uri, go, out = sys.argv[1:5]
    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name="race", storage=storage)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    while not Path(go).exists():
        time.sleep(0.001)

    def create():
        run_id = client.create_run(experiment).info.run_id
        time.sleep(0.5)  # the window a check-then-create would lose
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    parent, created = claim_parent_run(study, storage, create, poll_s=0.05)
    Path(out).write_text(f"{parent} {created}")
""")


def test_coordinators_started_together_claim_one_parent_run(tmp_path):
    """Four processes ask for the sweep's parent run at the same instant: one creates it, all get it."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # its own: the parent run it makes stays RUNNING
    MlflowClient(store).search_experiments()
    journal = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(study_name="race", storage=storage)
    MlflowClient(store).create_experiment("race")
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}" for i in range(4)]
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(journal), store, str(go), str(out)], env=ENV)
        for out in outs
    ]
    time.sleep(8)  # all imported and spinning on `go`
    go.touch()
    for process in processes:
        assert process.wait(timeout=120) == 0
    answers = [out.read_text().split() for out in outs]
    assert len({parent for parent, _ in answers}) == 1, answers
    assert sorted(created for _, created in answers) == ["False", "False", "False", "True"]
    assert len(statuses(store, "race")) == 1  # one MLflow run, not one per coordinator


STORE_OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workbench import tracking

    store, ready, go, check_first = sys.argv[1:5]
    if check_first == "yes":  # as `workbench run` does: the store is checked before anything is created
        tracking.check_store(store)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.001)
    print(tracking.experiment_id("same-moment", store))
""")


@pytest.mark.parametrize("check_first", ["no", "yes"])
def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path, check_first):
    """MLflow creates a new SQLite store's tables without a lock: four processes starting at the
    same moment on one fresh store used to fail all but one ("table metrics already exists").
    `check_first`: the store was checked (check_store) before it was opened, as in `workbench
    run`; that once skipped the lock."""
    store = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    go = tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(4)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STORE_OPENER, store, str(ready), str(go), check_first],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err[-300:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one experiment, the same id for all
    assert sorted(experiment.name for experiment in MlflowClient(store).search_experiments()) == [
        "Default",
        "same-moment",
    ]


SWEEPER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from test_sweeps import fake_train
    from workbench.sweeps import child
    from workbench.sweeps.runner import SweepOptions, run_sweep
    from workbench.sweeps.spec import load_spec

    if __name__ == "__main__":
        spec_path, uri, go = sys.argv[1:4]
        child.warm_up()
        spec = load_spec(spec_path)
        while not Path(go).exists():
            time.sleep(0.001)
        result = run_sweep(spec, SweepOptions(slots=1, tracking_uri=uri, progress=False, trainer=fake_train))
        sys.exit(0 if result.finished else 1)
""")


def test_two_sweep_coordinators_at_once_log_every_child_under_one_parent(tmp_path, store):
    spec = write_spec(
        tmp_path,
        "twin",
        variants={"a": {"train.lr": 0.1}, "b": {"train.lr": 0.2}},
        seeds=2,
        metrics=["eval/retrieval/r_mean"],
        objective={"metric": "eval/retrieval/r_mean", "direction": "maximize"},
        overrides=fake_overrides(tmp_path),
    )
    script = tmp_path / "sweeper.py"
    script.write_text(SWEEPER)
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(spec), store, str(go)], env=ENV, cwd=tmp_path, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    time.sleep(10)
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(tmp_path.name).experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r not in parents]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    finished = {
        (r.data.tags["workbench.variant"], r.data.tags["workbench.seed"])
        for r in children
        if r.info.status == "FINISHED"
    }
    assert finished == {("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")}


# ----------------------------------------------------------------- --resume
def _sets(shapes: Path, store: str, out: Path, experiment: str, *extra: str, steps: int = 4) -> list[str]:
    overrides = tiny_run(shapes, store, out, "eval.tasks=[]", f"tracking.experiment={experiment}", *extra, steps=steps)
    return [arg for override in overrides for arg in ("--set", override)]


def _snapshot(store: str, run_id: str, out: Path) -> tuple:
    run = MlflowClient(store).get_run(run_id)
    ckpt = out / run_id / checkpoint.LAST
    return (
        run.info.status,
        run.info.end_time,
        dict(run.data.params),
        dict(run.data.metrics),
        ckpt.read_bytes() if ckpt.exists() else None,
    )


@pytest.fixture(scope="module")
def finished_run(shapes_tiny, store, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("finished")
    cfg = load_config(
        "base", tiny_run(shapes_tiny, store, out, "eval.tasks=[]", "tracking.experiment=finished", steps=4)
    )
    return train.run(cfg, progress=False).run_id, out


@pytest.mark.parametrize(
    "extra",
    [[], ["--set", "train.steps=10"], ["--set", "model.vision.width=64"]],
    ids=["plain", "train-longer", "other-model"],
)
def test_resume_of_a_finished_run_is_refused_and_changes_nothing(finished_run, store, extra):
    run_id, out = finished_run
    before = _snapshot(store, run_id, out)
    result = CliRunner().invoke(app, ["run", "--resume", run_id, "--tracking-uri", store, *extra])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and f"--resume: run {run_id} is FINISHED" in lines[0]
    assert f"workbench run --from {run_id}" in lines[0]
    assert _snapshot(store, run_id, out) == before


def _killed_run(shapes: Path, store: str, out: Path, experiment: str, *extra: str) -> str:
    cfg = load_config(
        "base", tiny_run(shapes, store, out, "eval.tasks=[]", f"tracking.experiment={experiment}", *extra, steps=6)
    )
    run_id = train.run(cfg, progress=False, stop_after=3).run_id  # pre-empted: RUNNING with a checkpoint
    MlflowClient(store).set_terminated(run_id, status="KILLED")
    return run_id


def test_resume_with_another_model_config_is_refused_before_the_run_is_touched(shapes_tiny, store, tmp_path):
    run_id = _killed_run(shapes_tiny, store, tmp_path, "resume-other-model")
    before = _snapshot(store, run_id, tmp_path)
    result = CliRunner().invoke(
        app, ["run", "--resume", run_id, "--tracking-uri", store, "--set", "model.vision.width=64"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"model.vision.width=64 differs from run {run_id}'s recorded model.vision.width=32" in line
    assert f"workbench run --from {run_id} --set model.vision.width=64" in line
    assert _snapshot(store, run_id, tmp_path) == before  # still KILLED, same end time, same checkpoint


def test_resume_from_a_checkpoint_of_another_model_is_refused_and_the_run_stays_killed(shapes_tiny, store, tmp_path):
    """The recorded config agrees, but the checkpoint on disk was written by another model."""
    run_id = _killed_run(shapes_tiny, store, tmp_path, "resume-foreign-ckpt")
    other = _killed_run(shapes_tiny, store, tmp_path / "other", "resume-foreign-ckpt-2", "model.text.width=64")
    (tmp_path / run_id / checkpoint.LAST).write_bytes((tmp_path / "other" / other / checkpoint.LAST).read_bytes())
    before = _snapshot(store, run_id, tmp_path)
    result = CliRunner().invoke(app, ["run", "--resume", run_id, "--tracking-uri", store])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --resume: run {run_id}'s checkpoint {tmp_path / run_id / checkpoint.LAST}: ")
    assert "its model does not fit the model of the run's recorded config (" in line  # as `workbench eval` says it
    assert _snapshot(store, run_id, tmp_path) == before


# ------------------------------------------------------------ SIGTERM, SIGINT
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_marks_killed_stops_children_and_prints_a_resume_that_works(
    shapes_tiny, store, tmp_path, signum
):
    experiment = f"signal-{signum.name}"
    sets = _sets(shapes_tiny, store, tmp_path / "out", experiment, "data.num_workers=1", "train.log_every=1", steps=60)
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", *sets],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first = process.stdout.readline()  # printed before the first step
    match = re.fullmatch(
        r"run ([0-9a-f]{32}) started; MLflow: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/\1.*\n", first
    )
    assert match, first + process.stderr.read()
    run_id = match.group(1)
    client = MlflowClient(store)
    deadline = time.monotonic() + 120
    while not client.get_metric_history(run_id, "train/loss/total"):  # a step or more is done
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    line = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    step = int(re.search(rf"interrupted \({signum.name}\) at step (\d+)/60: run {run_id} marked KILLED", line).group(1))
    assert client.get_run(run_id).info.status == "KILLED"
    saved = checkpoint.load(tmp_path / "out" / run_id / checkpoint.LAST)
    assert saved["step"] == step  # the checkpoint is of the step the signal stopped at
    assert group_gone(process.pid), "a child process outlived the command"
    command = line.split("resume: ", 1)[1]
    assert command == f"workbench run --resume {run_id} --tracking-uri {store}"
    if signum == signal.SIGTERM:  # the printed command resumes it to the end
        resumed = subprocess.run(
            [sys.executable, "-m", "workbench", *command.split()[1:]],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert client.get_run(run_id).info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss/total")]
        assert sorted(steps) == list(range(1, 61))  # every step logged once


# ------------------------------------------------ unexpected errors, every command
def _boom(*args, **kwargs):
    raise ZeroDivisionError("injected by the test")


@pytest.fixture(scope="module")
def any_run(finished_run) -> str:
    return finished_run[0]


def _commands(shapes: Path, store: str, tmp: Path, run_id: str) -> dict[str, tuple[str, list[str]]]:
    """command -> (a workbench-internal function it calls, its arguments)."""
    sweep = write_spec(tmp, "boom", seeds=1)
    return {
        "config show": ("workbench.config.loader.validate", ["config", "show"]),
        "config keys": ("workbench.config.keys.matching", ["config", "keys"]),
        "data shapes": ("workbench.data.shapes.generate", ["data", "shapes", "--out", str(tmp / "shapes")]),
        "data check": ("workbench.data.check_report.check_dataset", ["data", "check", "--set", f"data.root={shapes}"]),
        "data shard": ("workbench.data.shards.shard_dataset", ["data", "shard", str(shapes), str(tmp / "shards")]),
        "data warmstart": ("workbench.data.ensure_data", ["data", "warmstart", "--set", f"data.root={shapes}"]),
        "runs prune": ("workbench.prune.plan_prune", ["runs", "prune", "--tracking-uri", store, "--dry-run"]),
        "run": ("workbench.recorded_run.evaluate", ["run", *_sets(shapes, store, tmp / "out", "boom-run", steps=2)]),
        "eval": ("workbench.recorded_run.evaluate", ["eval", run_id, "--tracking-uri", store]),
        "sweep": (
            "workbench.sweeps.runner.enqueue_missing",
            [
                "sweep",
                str(sweep),
                "--slots",
                "1",
                "--no-progress",
                "--tracking-uri",
                store,
                *[a for s in (f"train.out_dir={tmp / 'out'}", "tracking.experiment=boom-sweep") for a in ("--set", s)],
            ],
        ),
        "report ablations": (
            "workbench.reports.ablations.load_sweeps",
            ["report", "ablations", "--tracking-uri", store, "--out", str(tmp / "reports")],
        ),
        "report attention": (
            "workbench.reports.attention_figure.compute",
            ["report", "attention", run_id, "--tracking-uri", store, "--out", str(tmp / "reports")],
        ),
        "ui": ("workbench.reports.ui.ui_command", ["ui", "--tracking-uri", store]),
        "demo": ("workbench.data.ensure_data", ["demo", "--out", str(tmp / "demo"), "--tracking-uri", store]),
        "bench": ("workbench.bench.runner.resolve_device", ["bench", "--quick"]),
    }


COMMANDS = [
    "config show",
    "config keys",
    "data shapes",
    "data check",
    "data shard",
    "data warmstart",
    "runs prune",
    "run",
    "eval",
    "sweep",
    "report ablations",
    "report attention",
    "ui",
    "demo",
    "bench",
]


def test_every_command_is_covered():
    assert sorted(COMMANDS) == sorted(_commands(Path("/x"), "sqlite://", Path("/tmp"), "r").keys())
    import typer

    def names(command, prefix: str = "") -> set[str]:
        if hasattr(command, "commands"):
            return {n for name, sub in command.commands.items() for n in names(sub, f"{prefix}{name} ")}
        return {prefix.strip()}

    listed = names(typer.main.get_command(app))
    assert listed == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unexpected_error_is_one_line_with_a_log_and_no_running_run(
    command, shapes_tiny, store, any_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_LOG_DIR", str(tmp_path / "logs"))
    target, args = _commands(shapes_tiny, store, tmp_path, any_run)[command]
    monkeypatch.setattr(target, _boom)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: workbench {command} failed unexpectedly (ZeroDivisionError: injected by the test)"
    )
    log = Path(re.search(r"full traceback in (\S+)", lines[0]).group(1))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "_boom" in log.read_text()
    assert "Traceback" not in result.output
    client = MlflowClient(store)
    running = [
        r.info.run_id
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.info.status == "RUNNING"
    ]
    assert running == []


def test_debug_shows_an_unexpected_error_and_still_ends_the_run(shapes_tiny, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("workbench.sweeps.runner.enqueue_missing", _boom)
    sweep = write_spec(tmp_path, "debug", seeds=1)
    result = CliRunner().invoke(
        app,
        [
            "--debug",
            "sweep",
            str(sweep),
            "--slots",
            "1",
            "--no-progress",
            "--tracking-uri",
            store,
            "--set",
            f"train.out_dir={tmp_path / 'out'}",
            "--set",
            "tracking.experiment=boom-debug",
        ],
    )
    assert isinstance(result.exception, ZeroDivisionError)
    assert statuses(store, "boom-debug") == ["FAILED"]


def test_sigterm_to_a_multi_process_run_stops_every_rank_and_ends_the_run_killed(shapes_tiny, store, tmp_path):
    """`workbench run --nproc 2` (torchrun, DDP on CPU): SIGTERM to the command reaches every rank."""
    sets = _sets(shapes_tiny, store, tmp_path / "out", "signal-ddp", "train.log_every=1", steps=400)
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "--nproc", "2", *sets],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = ""
    while not line.startswith("run "):  # rank 0's announcement (torchrun may print before it)
        line = process.stdout.readline()
        assert line or process.poll() is None, process.stderr.read()
    run_id = line.split()[1]
    client = MlflowClient(store)
    deadline = time.monotonic() + 180
    while not client.get_metric_history(run_id, "train/loss/total"):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert client.get_run(run_id).info.status == "KILLED", stderr[-3000:]
    assert f"resume: workbench run --resume {run_id}" in stderr and "Traceback" not in stderr
    assert stderr.count("interrupted (SIGTERM)") == 1  # rank 0 says it, once
    assert group_gone(process.pid), "a child process outlived the command"


def slow_train(cfg, *, resume_run_id=None, parent_run_id=None, tags=None, progress=True):
    """A trial that runs until stopped (the sweep's SIGTERM arrives as KeyboardInterrupt): its run ends KILLED."""
    tracker = tracking.start_run(cfg, parent_run_id=parent_run_id, tags=tags)
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise


SWEEP_CLI = textwrap.dedent("""
    import functools, sys
    import workbench.sweeps.sweep as sweep  # where SweepOptions lives (the CLI reads `workbench.sweeps.SweepOptions`)
    from test_reliability import slow_train
    from workbench.cli import app

    if __name__ == "__main__":
        sweep.SweepOptions = functools.partial(sweep.SweepOptions, trainer=slow_train)
        sys.exit(app())
""")


def test_sigterm_to_a_sweep_ends_its_parent_and_trials_killed(tmp_path, store):
    spec = write_spec(
        tmp_path, "stopped", variants={"a": {"train.lr": 0.1}}, seeds=1, overrides=fake_overrides(tmp_path)
    )
    script = tmp_path / "sweep_cli.py"
    script.write_text(SWEEP_CLI)
    process = subprocess.Popen(
        [sys.executable, str(script), "sweep", str(spec), "--slots", "1", "--no-progress", "--tracking-uri", store],
        cwd=tmp_path,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    client = MlflowClient(store)
    deadline = time.monotonic() + 180
    while len(statuses(store, tmp_path.name)) < 2:  # the parent and the trial's run are open
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert statuses(store, tmp_path.name) == ["KILLED", "KILLED"]
    assert group_gone(process.pid), "a child process outlived the command"
    del client
