"""`workbench run`: training loop, MLflow tracking, determinism, resume, NaN handling."""

import contextlib
import math
import signal

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench import recorded_run, train
from workbench.cli import app
from workbench.config import load_config
from workbench.errors import RunError


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _cfg(shapes_tiny, store, tmp_path, *extra, steps=6):
    return load_config("base", tiny_run(shapes_tiny, store, tmp_path / "out", *extra, steps=steps))


def _history(client, run_id, key="train/loss/total"):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_run_logs_params_metrics_artifacts_and_downstream(shapes_tiny, store, tmp_path):
    cfg = _cfg(shapes_tiny, store, tmp_path, "eval.tasks=[retrieval,vqa]", steps=30)
    result = train.run(cfg, progress=False)
    assert result.status == "FINISHED" and result.steps == 30 and math.isfinite(result.final_loss)

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["params.objectives.scl.image_mask_ratio"] == "0.8"
    assert row["params.train.steps"] == "30"
    assert 0.0 <= row["metrics.eval/retrieval/tr_r1"] <= 100.0
    assert 0.0 <= row["metrics.eval/vqa/acc"] <= 100.0
    assert row["tags.workbench.seed"] == "0"
    assert row["tags.workbench.data_hash"]

    client = MlflowClient(store)
    for key in (
        "train/loss/itc",
        "train/loss/itm",
        "train/loss/mlm",
        "train/loss/mvsc",
        "train/loss/mlsc",
        "train/loss_weighted/itc",
        "train/loss/total",
        "train/lr",
    ):
        steps = [step for step, _ in _history(client, result.run_id, key)]
        assert steps == list(range(2, 31, 2)), key  # every log_every steps, each step once
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest


def test_zero_steps_is_the_random_init_control(shapes_tiny, store, tmp_path):
    """train.steps=0: no pre-training, the freshly initialised model is checkpointed and evaluated."""
    import torch

    from workbench import checkpoint
    from workbench.data import load_tokenizer
    from workbench.device import seed_everything
    from workbench.pretrainer import build

    cfg = _cfg(shapes_tiny, store, tmp_path, "eval.tasks=[retrieval]", steps=0)
    result = train.run(cfg, progress=False)
    assert result.status == "FINISHED" and result.steps == 0
    assert "eval/retrieval/r_mean" in result.metrics and "eval/retrieval/chance_r_mean" in result.metrics
    seed_everything(cfg.train.seed)
    fresh = build(cfg, load_tokenizer(cfg.data)).model.state_dict()
    saved = checkpoint.load(result.checkpoint, map_location="cpu")["model"]
    assert all(torch.equal(saved[key], value) for key, value in fresh.items())
    trained = checkpoint.load(
        train.run(_cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]", steps=2), progress=False).checkpoint,
        map_location="cpu",
    )["model"]
    assert not all(torch.equal(trained[key], value) for key, value in fresh.items())


def test_same_seed_same_losses_bit_for_bit(shapes_tiny, store, tmp_path):
    first = train.run(_cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]"), progress=False)
    second = train.run(_cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]"), progress=False)
    other = train.run(_cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]", "train.seed=1"), progress=False)
    client = MlflowClient(store)
    assert _history(client, first.run_id) == _history(client, second.run_id)
    assert _history(client, first.run_id) != _history(client, other.run_id)


def test_resume_reaches_the_same_result_as_a_straight_run(shapes_tiny, store, tmp_path):
    extra = ("eval.tasks=[]", "train.checkpoint_every=10", "augment.image=true", "augment.text=true")
    straight = train.run(_cfg(shapes_tiny, store, tmp_path, *extra, steps=40), progress=False)

    cfg = _cfg(shapes_tiny, store, tmp_path, *extra, steps=40)
    killed = train.run(cfg, progress=False, stop_after=20)
    assert killed.status == "RUNNING" and killed.steps == 20
    resumed = train.run(recorded_run.load_run_config(killed.run_id, store), resume_run_id=killed.run_id, progress=False)

    assert resumed.run_id == killed.run_id and resumed.status == "FINISHED"
    assert resumed.final_loss == straight.final_loss
    client = MlflowClient(store)
    assert _history(client, resumed.run_id) == _history(client, straight.run_id)  # no step logged twice


def test_nan_loss_stops_with_a_clear_error_and_a_failed_run(shapes_tiny, store, tmp_path):
    cfg = _cfg(shapes_tiny, store, tmp_path, "train.lr=1e6", "train.warmup_steps=0", "train.grad_clip=0", steps=20)
    with pytest.raises(RunError, match=r"non-finite loss at step \d+: loss/\w+"):
        train.run(cfg, progress=False)
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    assert list(runs["status"]) == ["FAILED"]


def test_cli_run_exit_codes(shapes_tiny, store, tmp_path):
    runner = CliRunner()
    args = ["run"] + [a for o in tiny_run(shapes_tiny, store, tmp_path / "out", "eval.tasks=[]") for a in ("--set", o)]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "FINISHED" in ok.stdout
    nan = runner.invoke(app, args + ["--set", "train.lr=1e6", "--set", "train.grad_clip=0", "--set", "train.steps=20"])
    assert nan.exit_code == 1
    assert nan.stderr.strip().splitlines()[-1].startswith("error: non-finite loss at step")
    assert "Traceback" not in nan.output


def test_the_tracker_context_ends_its_run_exactly_once(store, tmp_path):
    """FINISHED when the block completes, FAILED on an error, KILLED on Ctrl-C / SIGTERM;
    leave_running keeps RUNNING."""
    from workbench import interrupts, tracking

    client = MlflowClient(store)
    experiment = client.create_experiment("session", artifact_location=(tmp_path / "artifacts").as_uri())

    def session(error: BaseException | None = None, keep: bool = False) -> str:
        tracker = tracking.RunTracker(client, client.create_run(experiment).info.run_id)
        tracking.opened(tracker.run_id, store)
        with contextlib.suppress(*([type(error)] if error else [])), tracker:
            tracker.log_metrics({"train/loss/total": 1.0}, step=1)
            if keep:
                tracker.leave_running()
            if error is not None:
                raise error
        assert tracker.run_id not in tracking.OPEN_RUNS  # nothing left for the crash handler to end
        assert [m.step for m in client.get_metric_history(tracker.run_id, "train/loss/total")] == [1]
        return client.get_run(tracker.run_id).info.status

    assert session() == "FINISHED"
    assert session(RunError("non-finite loss")) == "FAILED"
    assert session(KeyboardInterrupt()) == "KILLED"
    assert session(interrupts.Interrupted(signal.SIGTERM)) == "KILLED"
    assert session(keep=True) == "RUNNING"
    assert session(ValueError("after leave_running"), keep=True) == "FAILED"


def test_compiled_training_restores_the_donated_buffer_setting(shapes_tiny, store, tmp_path):
    """train.compile needs compiled backwards without donated buffers, only while a run trains."""
    import torch._functorch.config as functorch_config

    from workbench.data import load_tokenizer
    from workbench.models.vlp import build_model, compile_model, compiled_training

    cfg = _cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]", "train.compile=true")
    before = functorch_config.donated_buffer
    try:
        for setting in (True, False):
            functorch_config.donated_buffer = setting
            compile_model(build_model(cfg, load_tokenizer(cfg.data)))  # compiles lazily; changes no setting
            assert functorch_config.donated_buffer is setting
            with pytest.raises(RunError), compiled_training():
                assert functorch_config.donated_buffer is False
                raise RunError("a run that fails while training")
            assert functorch_config.donated_buffer is setting
    finally:
        functorch_config.donated_buffer = before


def test_a_resumed_run_is_tagged_with_the_slurm_job_carrying_it_on(shapes_tiny, store, tmp_path, monkeypatch):
    from workbench import tags as tag

    monkeypatch.setenv("SLURM_JOB_ID", "101")
    monkeypatch.setenv("SLURMD_NODENAME", "node-a")
    killed = train.run(_cfg(shapes_tiny, store, tmp_path, "eval.tasks=[]", steps=4), progress=False, stop_after=2)
    client = MlflowClient(store)
    assert client.get_run(killed.run_id).data.tags[tag.SLURM_JOB_ID] == "101"
    monkeypatch.setenv("SLURM_JOB_ID", "102")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("SLURMD_NODENAME", "node-b")
    resumed = train.run(recorded_run.load_run_config(killed.run_id, store), resume_run_id=killed.run_id, progress=False)
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags[tag.SLURM_JOB_ID], run.data.tags[tag.SLURM_NODE], run.data.tags[tag.SLURM_RESTART]) == (
        "102",
        "node-b",
        "1",
    )
    assert run.data.tags[tag.SEED] == "0"  # the tags it was created with stay
