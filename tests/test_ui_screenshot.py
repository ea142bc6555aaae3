"""`workbench ui` opens on the runs: a headless-Chromium look at the page it prints.

A real 2-trial sweep (parent + 2 child runs) in a fresh SQLite store, the MLflow UI
started the way `workbench ui` starts it, and Chromium (as a person's browser would)
on the printed `#/experiments/<id>/runs` URL: the DOM shows the runs table with the
sweep parent and its trials (nested under it, as MLflow shows a parent), and the
screenshot (kept in pytest's tmp dir as runs.png) is not blank.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from test_reports import image_is_drawn
from test_sweeps import tiny_sets, write_spec

from workbench.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

BROWSER_WAIT_MS = 20_000  # virtual time the page gets to load its scripts and the runs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sweep_store(shapes_tiny, tmp_path_factory):
    """A real sweep (2 variants x 1 seed, 2-step tiny trials, no eval) in a fresh store."""
    from workbench.sweeps.runner import SweepOptions, run_sweep
    from workbench.sweeps.spec import load_spec

    tmp = tmp_path_factory.mktemp("ui_sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    spec_path = write_spec(tmp, "look", seeds=1)
    sets = tiny_sets(shapes_tiny, tmp / "out", "look", steps=2)
    result = run_sweep(load_spec(spec_path, sets), SweepOptions(slots=1, tracking_uri=uri, progress=False))
    assert result.problem() is None
    return {"uri": uri, "parent": result.parent_run_id, "tmp": tmp}


def test_workbench_ui_opens_on_the_runs_table_of_the_sweep(sweep_store, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: `make test` installs it (.ci/system-packages)"
    client = MlflowClient(sweep_store["uri"])
    parent = client.get_run(sweep_store["parent"])
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # MLflow shows it as model training
    trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 2

    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    ui = subprocess.Popen(
        [sys.executable, "-m", "workbench", "ui", "--port", str(port), "--tracking-uri", sweep_store["uri"]],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = ui.stdout.readline()  # printed once the server answers
        url = line.split(" at ", 1)[1].split()[0] if " at " in line else ""
        assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs", line
        common = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--virtual-time-budget={BROWSER_WAIT_MS}",
            "--window-size=1600,900",
        ]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        shot = tmp_path / "runs.png"
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ui.kill()
        log.close()
    text = _visible_text(dom)
    assert "Training runs" in text and "Traces" not in text.split("Training runs", 1)[1], (
        text
    )  # the runs, not an Overview
    assert "3 matching runs" in text, text  # the sweep parent and its 2 trials
    row = (
        rf'href="#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}"><span[^>]*>{parent.info.run_name}<'
    )
    assert re.search(row, dom), dom[-3000:]  # the parent's row, linked to its run page; its trials are nested
    assert "runnamecellrenderer" in dom  # under it, behind the expander of MLflow's run-name cell
    assert image_is_drawn(shot)


def _visible_text(dom: str) -> str:
    """The page's text without its scripts and tags: what the page shows."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_experiments_are_tagged_model_training_and_the_ui_url_names_the_latest(tmp_path):
    from workbench import tracking
    from workbench.reports.ui import latest_experiment, runs_url

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    assert runs_url("http://h:1", latest_experiment(uri)) == "http://h:1/#/experiments/0/runs"  # only "Default"
    older = client.create_experiment("made-elsewhere")  # e.g. by an older workbench: no kind tag
    new = tracking.experiment_id("new", uri)
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert latest_experiment(uri) == new  # no runs anywhere: the newest experiment
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    assert tracking.experiment_id("made-elsewhere", uri) == older  # a run is logged into it: tagged then
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    client.set_experiment_tag(older, EXPERIMENT_KIND_TAG, "genai_development")  # a user's own choice stays
    tracking.experiment_id("made-elsewhere", uri)
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    client.create_run(older)
    client.create_run(new)
    assert latest_experiment(uri) == new
    client.create_run(older)
    assert latest_experiment(uri) == older  # the experiment that ran last
