"""Sweeps and DDP runs through a real one-node SLURM cluster (the `slurm_cluster` fixture in conftest).

Real munged/slurmctld/slurmd, real sbatch/squeue/scancel, submitit jobs running
real 5-step trainings; Optuna journal and MLflow SQLite stores in tmp dirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_sweeps import journal, tiny_sets, trial_errors, write_spec
from tiny_config import DDP_COMPARABLE, tiny_run
from typer.testing import CliRunner

from workbench import train
from workbench.cli import app
from workbench.config import load_config
from workbench.launch import slurm as cluster
from workbench.launch.slurm_env import JOB_TAG, NODE_TAG
from workbench.study_attrs import ERROR_ATTR, JOBS_ATTR, PID_ATTR, RUN_ATTR, WORKER_ATTR

# `make test` runs the suite on several workers (pytest-xdist): this file's slurm server starts once, on one of them
pytestmark = pytest.mark.xdist_group("slurm")


def squeue(name: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i|%T"], capture_output=True, text=True, check=True)
    return dict(line.split("|") for line in out.stdout.split())


def sweep_args(spec_path: Path, sets: list[str], store: str, *extra: str) -> list[str]:
    return [
        "sweep",
        str(spec_path),
        "--launcher",
        "slurm",
        "--max-parallel",
        "2",
        "--no-progress",
        "--tracking-uri",
        store,
        *[arg for s in sets for arg in ("--set", s)],
        *extra,
    ]


def children_of(client: MlflowClient, parent_run_id: str):
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_sweep_through_slurm_resubmits_nothing_and_survives_scancel_and_requeue(slurm_cluster, shapes_tiny, tmp_path):
    """2 variants x 2 seeds in 2 worker jobs, submitted held; the command run again submits nothing;
    once released, one job is scancelled and the other requeued while each is past a checkpoint:
    both trials are re-queued and resume their MLflow runs; every run ends FINISHED, tagged with its job."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.search_experiments()  # create the store's tables before the sweep process opens it
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path, "tiny")
    sets = tiny_sets(shapes_tiny, out, tmp_path.name, steps=6) + ["train.checkpoint_every=1"]
    args = sweep_args(spec_path, sets, store)
    runner = CliRunner()

    held = runner.invoke(app, [*args, "--no-wait", "--sbatch-arg=--hold"])  # submitted, pending until released
    assert held.exit_code == 0, held.output
    jobs = squeue("wb-sweep-tiny")
    assert len(jobs) == 2 and set(jobs.values()) == {"PENDING"}, jobs
    again = runner.invoke(app, [*args, "--no-wait"])  # the submitting shell died; the user runs it again
    assert again.exit_code == 0, again.output
    assert "submitted 0 worker job(s)" in again.output and squeue("wb-sweep-tiny") == jobs
    study = optuna.load_study(study_name="tiny", storage=journal(out))
    assert study.user_attrs[JOBS_ATTR] == sorted(jobs)

    subprocess.run(["scontrol", "release", ",".join(jobs)], check=True)
    command = [sys.executable, "-m", "workbench", *args]  # nothing to submit: watches the jobs to the end
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        midway = _wait_for_checkpoints(out, client, sweep)  # {job id: (trial number, run id)}
        (cancelled, (cancelled_trial, _)), (requeued, (requeued_trial, _)) = sorted(midway.items())
        subprocess.run(["scancel", cancelled], check=True)
        subprocess.run(["scontrol", "requeue", requeued], check=True)
        output, _ = sweep.communicate(timeout=400)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    study = optuna.load_study(study_name="tiny", storage=journal(out))
    assert sweep.returncode == 0, output + trial_errors(study)
    assert "submitted 0 worker job(s)" in output and "4/4 trials complete" in output

    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len({(t.params["variant"], t.user_attrs["seed"]) for t in complete}) == 4
    for number in (cancelled_trial, requeued_trial):  # stopped, failed, re-queued
        assert study.trials[number].state == TrialState.FAIL and study.trials[number].user_attrs[ERROR_ATTR]
    parent_id = study.user_attrs["workbench.parent_run_id"]
    assert client.get_run(parent_id).info.status == "FINISHED"
    children = children_of(client, parent_id)
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}  # resumed, none RUNNING
    for number, run_id in midway.values():
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss/total")]
        assert sorted(steps) == [2, 4, 6], (number, steps)  # each step logged once across the resume
        assert study.trials[number].user_attrs.get(RUN_ATTR) is None  # finished by its retry
    submitted = study.user_attrs[JOBS_ATTR]
    by_run = {t.user_attrs["workbench.mlflow_run_id"]: t for t in complete}
    for run in children:
        trial = by_run[run.info.run_id]
        assert run.data.tags[JOB_TAG] in submitted and run.data.tags[NODE_TAG] == slurm_cluster.node
        assert trial.user_attrs[WORKER_ATTR]["slurm_job_id"] == run.data.tags[JOB_TAG]

    shown = runner.invoke(app, ["sweep", str(spec_path), "--status", *args[args.index("--tracking-uri") :]])
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.output.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(rows) == len(study.trials)
    assert all(row[5] in submitted and row[6] == slurm_cluster.node for row in rows)
    assert sorted(row[3] for row in rows) == ["COMPLETE"] * 4 + ["FAIL"] * 2


def _wait_for_checkpoints(out: Path, client: MlflowClient, sweep: subprocess.Popen, timeout_s: float = 300):
    """Freeze (SIGSTOP) each trial process as soon as its first checkpoint is written, until two
    trials of two jobs are held mid-run; {job id: (trial number, run id)}. SLURM sends SIGCONT
    before SIGTERM when it cancels or requeues a job, so a frozen trial still stops cleanly."""
    deadline = time.monotonic() + timeout_s
    study = optuna.load_study(study_name="tiny", storage=journal(out))
    held: dict[str, tuple[int, str]] = {}
    seen: set[str] = set()
    while len(held) < 2:
        assert time.monotonic() < deadline, "no two trials reached a checkpoint in time"
        assert sweep.poll() is None, f"the sweep ended early: {sweep.stdout.read()[-3000:]}"
        for checkpoint in out.glob("*/last.pt"):
            run_id = checkpoint.parent.name
            if run_id in seen:
                continue
            seen.add(run_id)
            trial = study.trials[int(client.get_run(run_id).data.tags["workbench.trial"])]
            try:
                os.kill(trial.user_attrs[PID_ATTR], signal.SIGSTOP)
            except ProcessLookupError:  # finished already: wait for another trial
                continue
            held[trial.user_attrs[WORKER_ATTR]["slurm_job_id"]] = (trial.number, run_id)
        time.sleep(0.05)
    return held


def test_ddp_run_through_slurm_trains_like_one_process(slurm_cluster, shapes_tiny, tmp_path, bert_without_dropout):
    """`workbench run --launcher slurm --nproc 2`: one job, srun starts 2 tasks (Gloo on CPU); the same
    losses as one process on the same global batch (tolerance as in tests/test_distributed.py)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = tiny_run(
        shapes_tiny,
        store,
        tmp_path / "out",
        "train.log_every=1",
        f"model.text.hf_name={bert_without_dropout}",
        *DDP_COMPARABLE,
        "eval.tasks=[]",
        steps=4,
    )
    result = CliRunner().invoke(app, ["run", "--launcher", "slurm", "--nproc", "2", *[f"--set={s}" for s in sets]])
    assert result.exit_code == 0, result.output
    one = train.run(load_config("base", [*sets, "tracking.experiment=one-process"]), progress=False)

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])  # rank 1 opened none
    assert run.info.status == "FINISHED" and run.data.tags[JOB_TAG] in result.output
    for key in ("train/loss/total", "train/loss/itc", "train/loss/mvsc"):
        two = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        single = [m.value for m in sorted(client.get_metric_history(one.run_id, key), key=lambda m: m.step)]
        assert len(two) == 4 and two == pytest.approx(single, rel=2e-4, abs=1e-6), key


# ------------------------------------------------------------------ bad input
def test_bad_slurm_input_is_one_line_naming_the_option(slurm_cluster, tmp_path, monkeypatch):
    spec_path = write_spec(tmp_path, "bad")
    sets = ["--set", f"train.out_dir={tmp_path / 'out'}"]
    runner = CliRunner()

    def error(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        return lines[0]

    assert "--partition 'gpu': no such partition; sinfo lists: debug" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--partition", "gpu", *sets
    )
    assert "— did you mean 'debug'?" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--partition", "debgu", *sets
    )
    assert "--gpus-per-trial 1: partition 'debug' has no GPUs" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--gpus-per-trial", "1", *sets
    )
    assert "--gpus-per-node 2: partition 'debug' has no GPUs" in error(
        "run", "--launcher", "slurm", "--nodes", "1", "--gpus-per-node", "2", "--set", "train.batch_size=8"
    )
    assert "--nodes 2: partition 'debug' has 1 node(s)" in error("run", "--launcher", "slurm", "--nodes", "2")
    assert "--sbatch-arg '-A abc': give one sbatch option in its long form" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--sbatch-arg=-A abc", *sets
    )
    assert "--sbatch-arg '--wrap=touch pwned': --wrap is not allowed" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--sbatch-arg=--wrap=touch pwned", *sets
    )
    assert "--mem '1G\\ntouch pwned': not a valid memory size" in error(
        "run", "--launcher", "slurm", "--mem", "1G\ntouch pwned"
    )
    assert not (tmp_path / "pwned").exists() and squeue("wb-sweep-bad") == {} and squeue("wb-run") == {}
    assert "--launcher: 'slrum' is not one of local, slurm — did you mean 'slurm'?" in error(
        "sweep", str(spec_path), "--launcher", "slrum", *sets
    )
    assert "--slots is for trials on this machine; with --launcher slurm use --max-parallel" in error(
        "sweep", str(spec_path), "--launcher", "slurm", "--slots", "2", *sets
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert "--launcher slurm: sbatch is not on PATH" in error("sweep", str(spec_path), "--launcher", "slurm", *sets)
    assert "--launcher slurm: sbatch is not on PATH" in error("run", "--launcher", "slurm")


def test_gpus_in_gres_and_local_paths_warned_on_multi_node_partitions(tmp_path):
    assert [cluster.gpus_in_gres(g) for g in ("(null)", "gpu:4", "gpu:a100:8(S:0-1)", "gpu:2,shard:8")] == [0, 4, 8, 2]
    two_nodes = cluster.Partition("big", nodes=2, gpus_per_node=0, time_limit="infinite")
    one_node = cluster.Partition("one", nodes=1, gpus_per_node=0, time_limit="infinite")
    assert cluster.filesystem_type(tmp_path / "not" / "yet") == cluster.filesystem_type(tmp_path)
    local = cluster.filesystem_type(tmp_path) not in cluster.SHARED_FILESYSTEMS
    warnings = cluster.unshared_paths({"the Optuna journal (--storage)": tmp_path / "j.log"}, two_nodes)
    assert len(warnings) == int(local) and all("the Optuna journal (--storage)" in w for w in warnings)
    assert cluster.unshared_paths({"x": tmp_path}, one_node) == []
    assert cluster.sbatch_options(["--hold", "--account=abc", "--gpu-bind=none"]) == {
        "hold": True,
        "account": "abc",
        "gpu_bind": "none",
    }


def test_reaping_fails_only_trials_of_vanished_jobs_or_of_the_requeued_job_itself(tmp_path, monkeypatch):
    from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    from workbench.sweeps.slurm import reap_lost_jobs
    from workbench.sweeps.study import claim

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, study_name="reap")
    for job in ("7", "8", "9"):
        monkeypatch.setenv("SLURM_JOB_ID", job)
        claim(study.ask())
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    assert reap_lost_jobs(study, retry, None, own_job="8") == [1]  # job 8 requeued: only its own trial
    assert reap_lost_jobs(study, retry, {"9"}) == [0]  # job 7 is gone from squeue, job 9 runs
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING] and len(states) == 5  # + 2 retries
    assert "SLURM job 7 ended" in study.trials[0].user_attrs[ERROR_ATTR]


def test_leftovers_of_a_dead_pytest_are_ended_and_those_of_a_live_one_kept(tmp_path, monkeypatch):
    """What `slurm_cluster.start` does first: a cluster whose pytest is gone (SIGKILL: no teardown
    ran) is ended, by its mark or its folder (slurmstepd has an empty environment); a live one stays."""
    import slurm_cluster as slurm

    monkeypatch.setattr(slurm, "REGISTRY", tmp_path / "registry")
    slurm.REGISTRY.mkdir()
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    dead_mark, live_mark = f"{dead_owner.pid}:{slurm._start_time(os.getpid())}", slurm.owner_mark(os.getpid())
    processes = {}
    for name, mark in (("dead", dead_mark), ("live", live_mark)):
        folder = tmp_path / name
        folder.mkdir()
        (slurm.REGISTRY / f"{mark}.root").write_text(str(folder))
        processes[name] = [
            subprocess.Popen(["sleep", "300"], env={**os.environ, slurm.MARK: mark}),  # a daemon or job
            subprocess.Popen(["sleep", "300"], cwd=folder, env={}),
        ]  # a job step: no environment
    try:
        assert sorted(slurm.reap_leftovers()) == sorted(p.pid for p in processes["dead"])
        assert [p.wait(timeout=10) for p in processes["dead"]] == [-signal.SIGTERM] * 2
        assert [p.poll() for p in processes["live"]] == [None, None]
        assert [entry.name for entry in slurm.REGISTRY.iterdir()] == [f"{live_mark}.root"]
    finally:
        for process in processes["dead"] + processes["live"]:
            process.kill()
            process.wait()
