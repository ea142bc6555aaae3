"""The MLflow side of a sweep: one parent run, each trial a nested child run.

Parent: tags ``workbench.sweep`` (the study name), ``workbench.role=sweep``,
``workbench.baseline``, ``workbench.spec``; artifact ``sweep.yaml`` (the spec as
run, variants expanded). Children are created by ``train.run`` with
``mlflow.parentRunId`` and the tags ``workbench.sweep|variant|seed|trial``.
The sweep logs no metrics itself, so no metric appears twice.
"""

from __future__ import annotations

import mlflow
from mlflow.entities import Run

from workbench import sweep_file, tags, tracking
from workbench.errors import ConfigError
from workbench.sweeps.space import TrialPlan
from workbench.sweeps.spec import SweepSpec


def trial_tags(study_name: str, plan: TrialPlan, number: int) -> dict[str, str]:
    return {tags.SWEEP: study_name, tags.VARIANT: plan.variant, tags.SEED: str(plan.seed), tags.TRIAL: str(number)}


def create_parent_run(spec: SweepSpec, study_name: str, *, uri: str, experiment: str, storage: str) -> str:
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(experiment, uri)
    parent_tags = {
        tags.SWEEP: study_name,
        tags.ROLE: "sweep",
        tags.SPEC: spec.name,
        tags.BASELINE: spec.baseline or "",
        tags.STORAGE: storage,
        tags.GIT_COMMIT: tracking.git_commit(),
        tags.DESCRIPTION: spec.description,
    }
    run = client.create_run(exp_id, run_name=study_name, tags=parent_tags)
    tracking.opened(run.info.run_id, uri)
    client.log_text(run.info.run_id, sweep_file.dump(spec.sweep_file()), sweep_file.ARTIFACT)
    return run.info.run_id


def reopen_parent_run(run_id: str, uri: str) -> None:
    client = tracking.client(uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(
            f"the sweep's parent MLflow run {run_id} is not in {tracking.resolve_uri(uri)} "
            "(was the sweep started with another --tracking-uri?)"
        ) from None
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    tracking.opened(run_id, uri)


def finish_parent_run(run_id: str, uri: str, status: str) -> None:
    tracking.client(uri).set_terminated(run_id, status=status)
    tracking.closed(run_id)


def experiment_of(run_id: str, uri: str) -> str:
    return tracking.client(uri).get_run(run_id).info.experiment_id


def child_runs(
    uri: str,
    experiment_id: str,
    parent_run_id: str,
    *,
    variant: str | None = None,
    seed: int | None = None,
    trial: int | None = None,
) -> list[Run]:
    """Child runs of the sweep (newest first), optionally of one variant x seed or one trial."""
    wanted = {tags.PARENT_RUN_ID: parent_run_id, tags.VARIANT: variant, tags.SEED: seed, tags.TRIAL: trial}
    terms = [f"tags.`{tag}` = '{value}'" for tag, value in wanted.items() if value is not None]
    client = tracking.client(uri)
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            " and ".join(terms),
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in tracking.client(uri).get_metric_history(run_id, key)]


def logged_metrics(uri: str, run_id: str) -> dict[str, float]:
    """A run's latest value of every metric it logged, as MLflow holds them (a resumed run's
    result holds only what its last session computed: no training loss when it only evaluated)."""
    return dict(tracking.client(uri).get_run(run_id).data.metrics)
