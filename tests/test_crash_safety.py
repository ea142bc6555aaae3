"""Crash safety and reruns: kill -9 of a report, two sweep processes on one store, `workbench run --from`.

Real processes (`python -m workbench ...`), a real MLflow store (sqlite in a tmp
dir) and a real Optuna journal; the sweep and report fixtures reuse the helpers
of test_sweeps.py and test_reports.py.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from PIL import Image
from test_reports import log_child
from test_sweeps import journal, tiny_sets, trial_errors, write_spec
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench import tags as tag
from workbench import tracking
from workbench.cli import app
from workbench.reports.outputs import TEMP_MARK, TEMP_PREFIX, temp_owner

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def workbench(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


# ------------------------------------------------------- kill -9 of a report
@pytest.fixture
def sweep_store(tmp_path) -> str:
    """A sweep 'masks' of 2 mask ratios x 2 seeds of finished runs (step losses, eval metric), as sweeps log it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("crash", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"workbench.sweep": "masks"}).info.run_id
    for index, ratio in enumerate((0.8, 0.4)):
        for seed in (0, 1):
            log_child(
                client,
                exp,
                parent,
                "masks",
                "baseline" if index == 0 else f"ratio={ratio}",
                seed,
                {"eval/retrieval/r_mean": 10 * ratio + seed},
                {"objectives.scl.image_mask_ratio": ratio, "objectives.scl.text_mask_ratio": 0.4},
                "FINISHED",
                index,
            )
    client.set_terminated(parent)
    return uri


def _kill_when(process: subprocess.Popen, ready, timeout_s: float = 90) -> None:
    """kill -9 `process` the moment `ready()` is true (polled every few ms)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, f"the report ended before the kill: {process.stderr.read().decode()[-1500:]}"
        assert time.monotonic() < deadline, "the report wrote nothing in time"
        time.sleep(0.003)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def _whole(path: Path, data: bytes) -> bool:
    """Report file bytes are whole: tables equal the finished report's, PNGs decode, PDFs end with %%EOF."""
    if path.name == "index.html":
        return data.startswith(b"<!DOCTYPE html>") and data.endswith(b"</html>\n")
    if path.suffix in (".md", ".csv", ".tex", ".html"):  # tables are a pure function of the store
        return data == path.read_bytes()  # (the finished report's file at the same path)
    if path.suffix == ".png":
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a truncated PNG raises here
        return image.size[0] > 0
    if path.suffix == ".pdf":
        return data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    return False


def test_kill_9_during_report_ablations_leaves_only_whole_files(sweep_store, tmp_path):
    out = tmp_path / "reports"
    args = ("report", "ablations", "--tracking-uri", sweep_store, "--out", str(out))
    seen, killed = [], []
    folder = out / "masks"
    for ready in (
        lambda pid: (folder / "ablations.md").exists(),  # while the other tables are rendered and written
        lambda pid: (
            (folder / f".line.pdf.tmp-{pid}").exists()  # while a PDF is written
            or (folder / "line.pdf").exists()
        ),
    ):
        process = workbench(*args, cwd=tmp_path)
        _kill_when(process, functools.partial(ready, process.pid))
        killed.append(process.pid)
        files = [p for p in out.rglob("*") if p.is_file()]
        visible = [p for p in files if not p.name.startswith(TEMP_PREFIX)]
        assert visible, "killed before anything was written"
        assert not [p for p in visible if TEMP_MARK in p.name]
        assert all(temp_owner(p) in killed for p in files if p not in visible)  # at most the killed writer's temp file
        seen += [(p, p.read_bytes()) for p in visible]
        print(f"killed {process.pid}: {sorted(p.name for p in files)}")

    finished = CliRunner().invoke(app, list(args))  # run again: completes, and clears the killed writers' temp files
    assert finished.exit_code == 0, finished.output
    final = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert final == [
        "index.html",
        "masks/ablations.csv",
        "masks/ablations.html",
        "masks/ablations.md",
        "masks/ablations.tex",
        "masks/line.pdf",
        "masks/line.png",
        "masks/report.html",
        "masks/section.html",
        "masks/training_curves.png",
    ]
    for path, data in seen:  # every file present after a kill was whole
        assert _whole(path, data), path
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert _whole(path, path.read_bytes()), path


# -------------------------------- two sweep processes, one store, one journal
def test_a_sweep_and_a_worker_at_once_share_the_store_and_the_journal(shapes_tiny, tmp_path):
    """`workbench sweep` and `workbench sweep --worker` of the same study start together on one
    MLflow store and one Optuna journal: each trial runs once, each child run is logged once."""
    out = tmp_path / "out"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # the schema exists before two processes race to use it
    spec = write_spec(tmp_path, "shared", seeds=1)  # 2 variants x 1 seed
    common = [
        "--slots",
        "1",
        "--no-progress",
        "--tracking-uri",
        store,
        "--storage",
        str(out / "sweeps" / "optuna-journal.log"),
        *[arg for s in tiny_sets(shapes_tiny, out, "shared") for arg in ("--set", s)],
    ]
    processes = {
        "sweep": workbench("sweep", str(spec), *common, cwd=tmp_path),
        "worker": workbench("sweep", str(spec), "--worker", *common, cwd=tmp_path),
    }
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: {stderr.decode()[-2000:]}"

    study = optuna.load_study(study_name="shared", storage=journal(out))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, trial_errors(study)
    assert sorted(t.params["variant"] for t in study.trials) == ["mlsc", "mvsc"]  # each variant once
    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "shared"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and parent.info.status == "FINISHED"  # one parent, two children: none lost or doubled
    assert sorted((r.data.tags["workbench.variant"], r.info.status) for r in children) == [
        ("mlsc", "FINISHED"),
        ("mvsc", "FINISHED"),
    ]
    assert {t.user_attrs["workbench.mlflow_run_id"] for t in study.trials} == {r.info.run_id for r in children}
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert sorted(steps) == [2, 4, 5]  # each step logged once


# ------------------------------------------------------------ run --from
def _run_id(output: str) -> str:
    return re.search(r"^run (\w+): FINISHED", output, re.MULTILINE).group(1)


def _step_metrics(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every step metric but throughput (wall-clock), as (step, value) lists."""
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("train/") and k != "train/samples_per_s"]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def test_run_from_reruns_a_run_from_its_recorded_config_bit_for_bit(shapes_tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner()
    sets = tiny_run(shapes_tiny, store, tmp_path / "out", "eval.tasks=[retrieval]", steps=6)
    first = runner.invoke(app, ["run", *[a for s in sets for a in ("--set", s)]])
    assert first.exit_code == 0, first.output
    original = _run_id(first.stdout)

    again = runner.invoke(app, ["run", "--from", original, "--tracking-uri", store, "--device", "cpu"])
    assert again.exit_code == 0, again.output
    rerun = _run_id(again.stdout)
    assert rerun != original

    client = MlflowClient(store)
    before, after = client.get_run(original), client.get_run(rerun)
    assert after.data.params == before.data.params and after.data.params["train.steps"] == "6"
    assert after.data.tags[tag.RERUN_OF] == original and tag.RERUN_OF not in before.data.tags
    metrics = _step_metrics(client, original)
    assert {"train/loss/total", "train/loss/itc", "train/loss/mlsc", "train/lr"} <= set(metrics)
    assert metrics["train/loss/total"][-1][0] == 6
    assert _step_metrics(client, rerun) == metrics  # every logged loss bit for bit
    evals = {k: v for k, v in before.data.metrics.items() if k.startswith("eval/")}
    assert {"eval/retrieval/r_mean", "eval/retrieval_itc/r_mean", "eval/attention/in_object"} <= set(evals)
    assert {k: after.data.metrics[k] for k in evals} == evals  # and the same downstream numbers

    # what a run records to be reproduced: seed, data set hash, code version, package versions
    manifest_hash = json.loads((shapes_tiny / "manifest.json").read_text())["data_hash"]
    for run in (before, after):
        tags = run.data.tags
        assert tags["workbench.seed"] == "0" and run.data.params["train.seed"] == "0"
        assert tags["workbench.data_hash"] == manifest_hash
        assert tags["workbench.git_commit"] == tracking.git_commit()
        assert {k: tags[f"workbench.version.{k}"] for k in tracking.package_versions()} == tracking.package_versions()
        assert (
            tags["workbench.version.torch"] == importlib.metadata.version("torch") and tags["workbench.version.python"]
        )
        assert [a.path for a in client.list_artifacts(run.info.run_id) if a.path == "config.yaml"] == ["config.yaml"]

    unknown = runner.invoke(app, ["run", "--from", "0123abcd", "--tracking-uri", store])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines() == [f"error: --from: no MLflow run '0123abcd' in {store}"]
    both = runner.invoke(app, ["run", "--from", original, "--resume", original, "--tracking-uri", store])
    assert both.exit_code == 2 and both.stderr.startswith("error: --resume and --from exclude each other")
