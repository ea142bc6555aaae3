"""`tracking.system_metrics`: every run logs CPU (and, with nvidia-ml-py, GPU) use as MLflow `system/...` metrics."""

from mlflow.tracking import MlflowClient
from tiny_config import tiny_run

from workbench import train
from workbench.config import load_config


def _system_keys(store, run_id):
    return {key for key in MlflowClient(store).get_run(run_id).data.metrics if key.startswith("system/")}


def test_a_run_logs_system_metrics_and_the_switch_turns_them_off(shapes_tiny, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ("eval.tasks=[]", "tracking.system_metrics_interval=0.05")
    on = train.run(
        load_config("base", tiny_run(shapes_tiny, store, tmp_path / "out", *extra, steps=20)), progress=False
    )
    keys = _system_keys(store, on.run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys

    off = train.run(
        load_config(
            "base", tiny_run(shapes_tiny, store, tmp_path / "out", *extra, "tracking.system_metrics=false", steps=20)
        ),
        progress=False,
    )
    assert _system_keys(store, off.run_id) == set()
