"""`tracking.start_run`: a run it has made RUNNING is never left so when opening it fails."""

import pytest
from mlflow.tracking import MlflowClient

from workbench import tracking
from workbench.config import load_config


def test_a_run_whose_config_cannot_be_stored_ends_failed_not_running(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    blocked = tmp_path / "artifacts-is-a-file"
    blocked.write_text("")  # the experiment's artifact directory cannot be made: config.yaml fails
    MlflowClient(store).create_experiment("blocked", artifact_location=blocked.as_uri())
    cfg = load_config("base", [f"tracking.uri={store}", "tracking.experiment=blocked", "tracking.system_metrics=false"])
    with pytest.raises(OSError):
        tracking.start_run(cfg)
    (run,) = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("blocked").experiment_id])
    assert run.info.status == "FAILED"  # was RUNNING: no process left to end it
    assert run.info.run_id not in tracking.OPEN_RUNS
    assert run.data.params["train.steps"] == "300"  # it got as far as its params


def test_the_status_a_run_ends_with_names_what_ended_it():
    assert tracking.run.ending(None) == "FINISHED"
    assert tracking.run.ending(KeyboardInterrupt()) == "KILLED"  # Ctrl-C, and SIGTERM as interrupts.Interrupted
    assert tracking.run.ending(OSError("disk full")) == "FAILED"
