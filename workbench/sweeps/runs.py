"""The MLflow side of a sweep: one parent run, each trial a nested child run.

Parent: tags ``workbench.sweep`` (the study name), ``workbench.role=sweep``,
``workbench.baseline``, ``workbench.spec``; artifact ``sweep.yaml`` (the spec as
run, variants expanded). Children are created by ``train.run`` with
``mlflow.parentRunId`` and the tags ``workbench.sweep|variant|seed|trial``.
The sweep logs no metrics itself, so no metric appears twice.
"""

from __future__ import annotations

import mlflow
import yaml
from mlflow.entities import Run

from workbench import tracking
from workbench.config import ConfigError
from workbench.sweeps.space import TrialPlan
from workbench.sweeps.spec import SweepSpec

ROLE_TAG = "workbench.role"


def trial_tags(study_name: str, plan: TrialPlan, number: int) -> dict[str, str]:
    return {
        "workbench.sweep": study_name,
        "workbench.variant": plan.variant,
        "workbench.seed": str(plan.seed),
        "workbench.trial": str(number),
    }


def create_parent_run(spec: SweepSpec, study_name: str, *, uri: str, experiment: str, storage: str) -> str:
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(experiment, uri)
    tags = {
        "workbench.sweep": study_name,
        ROLE_TAG: "sweep",
        "workbench.spec": spec.name,
        "workbench.baseline": spec.baseline or "",
        "workbench.storage": storage,
        "workbench.git_commit": tracking.git_commit(),
        "mlflow.note.content": spec.description,
    }
    run = client.create_run(exp_id, run_name=study_name, tags=tags)
    tracking.opened(run.info.run_id, uri)
    client.log_text(run.info.run_id, yaml.safe_dump(spec.resolved(), sort_keys=False), "sweep.yaml")
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
    terms = [f"tags.mlflow.parentRunId = '{parent_run_id}'"]
    if variant is not None:
        terms.append(f"tags.`workbench.variant` = '{variant}'")
    if seed is not None:
        terms.append(f"tags.`workbench.seed` = '{seed}'")
    if trial is not None:
        terms.append(f"tags.`workbench.trial` = '{trial}'")
    client = tracking.client(uri)
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], " and ".join(terms), max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in tracking.client(uri).get_metric_history(run_id, key)]
