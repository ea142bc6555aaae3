"""A run already in MLflow: its recorded config, its checkpoint restored, evaluating it.

`restore` is the one way a run's checkpoint is read back, whoever asks:
`workbench run --resume` (model, objectives, optimizer, scheduler, then the RNG
streams), `workbench eval` and `workbench report attention` (model and objectives,
through `rebuild`). `workbench run --from` and `--resume` take the run's config from
`load_run_config`. The checkpoint is `train.out_dir/<run>/last.pt`, else the run's
MLflow artifact (read in place from a local store; a remote one is downloaded to a
scratch folder that is not kept); one that is missing, unreadable or made for another
model is refused in one line naming it, before anything is logged.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from workbench import checkpoint, checkpoint_fit, distributed, run_lease, tracking
from workbench import tags as tag
from workbench.config import RunConfig, flatten, from_dict, to_yaml, validate
from workbench.data import load_tokenizer, prepare_data
from workbench.device import resolve_device, seed_everything
from workbench.errors import ConfigError, DataError
from workbench.evaluate import evaluate_all
from workbench.pretrainer import Pretrainer, build
from workbench.progress import phase

# What `--resume --set` may change: where things are and how fast they run, never what is computed.
RESUME_MAY_CHANGE = (
    "train.device",
    "train.precision",
    "train.compile",
    "train.out_dir",
    "tracking.uri",
    "data.root",
    "data.image_root",
    "data.tokenizer",
    "data.num_workers",
    "data.generate",
)


def load_run_config(
    run_id: str, tracking_uri: str = "", overrides: list[str] | None = None, *, resume: bool = False
) -> RunConfig:
    """The resolved config a run was started with (its config.yaml artifact), plus overrides.
    For `resume`, an override that changes what the run computes (the model, objectives,
    steps, ...) is refused before the run is touched: a resumed run keeps its recorded config."""
    if resume:
        tracking.check_resumable(run_id, tracking_uri)  # FINISHED is refused whatever --set says
    cfg, changed = _recorded_config(run_id, tracking_uri, overrides)
    if resume and changed:
        key, (recorded, wanted) = next(iter(changed.items()))
        raise ConfigError(
            f"{key}={wanted} differs from run {run_id}'s recorded {key}={recorded}; a resumed run keeps "
            "its recorded config (--set may change only the device, precision, compile and paths) and the run is left "
            f"as it was; a new run from its config: workbench run --from {run_id} --set {key}={wanted}"
        )
    return cfg


def _recorded_config(
    run_id: str, tracking_uri: str, overrides: list[str] | None
) -> tuple[RunConfig, dict[str, tuple[Any, Any]]]:
    """(recorded config + overrides, {key: (recorded, now)} for each key the overrides change
    beyond the device, precision, compile and paths)."""
    data = yaml.safe_load(tracking.read_run_config(run_id, tracking_uri))
    extra = list(overrides or []) + ([f"tracking.uri={tracking_uri}"] if tracking_uri else [])
    cfg = from_dict(data, extra)
    recorded, wanted = flatten(from_dict(data)), flatten(cfg)
    changed = {
        key: (recorded.get(key), wanted[key])
        for key in wanted
        if wanted[key] != recorded.get(key) and key not in RESUME_MAY_CHANGE
    }
    return cfg, changed


def lease(cfg: RunConfig, doing: str = "--resume") -> run_lease.RunLease:
    """The lease on a run of this config's store and out_dir (one writer per run; the store opened when taken)."""
    store = (lambda: tracking.client(cfg.tracking.uri)) if cfg.tracking.enabled else None
    return run_lease.RunLease(cfg.train.out_dir, store, doing)


# --------------------------------------------------------------------------- checkpoint: written, restored
def checkpoint_state(pretrainer: Pretrainer, optimizer, scheduler, step: int, cfg: RunConfig) -> dict[str, Any]:
    """What a run's checkpoint holds, all `restore` reads back (collective under DDP: every rank's RNG)."""
    state = {
        "model": pretrainer.model.state_dict(),
        "objectives": pretrainer.objectives.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": checkpoint.rng_state(),
        "config": to_yaml(cfg),
    }
    if distributed.is_active():  # every rank's RNG, so each rank's stream resumes exactly
        state["rng_ranks"] = distributed.all_objects(checkpoint.rng_state())
    return state


@dataclass
class Restored:
    """What `restore` read beside the weights: the step reached, and the RNG streams to continue."""

    step: int
    state: dict[str, Any]

    def restore_rng(self, ranks: distributed.Ranks, seed: int) -> None:
        """Each rank's saved RNG state (a resumed run: after everything else that draws at start-up)."""
        saved = self.state.get("rng_ranks") or [self.state["rng"]]
        if ranks.rank < len(saved):
            checkpoint.set_rng_state(saved[ranks.rank])
        else:  # resumed on more ranks than were saved: a fresh stream of its own
            torch.manual_seed(distributed.rank_seed(seed + self.step, ranks.rank))


def restore(
    run_id: str,
    cfg: RunConfig,
    pretrainer: Pretrainer,
    device: torch.device,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    ranks: distributed.Ranks | None = None,
    doing: str = "",
) -> Restored:
    """Load run `run_id`'s last checkpoint into `pretrainer` (model and objectives) and, when given, into
    `optimizer` and `scheduler`; the RNG streams are restored when the caller asks (`Restored.restore_rng`).
    ConfigError/DataError (prefixed `doing`, e.g. '--resume: ') when the checkpoint is missing, unreadable
    or does not fit; under DDP (`ranks`) every rank reads what rank 0 found."""
    where, state = _read_checkpoint(run_id, cfg, device, ranks, doing)
    label = f"{doing}run {run_id}'s checkpoint {where}"
    step = checkpoint_fit.load_parts(state, {"model": pretrainer.model, "objectives": pretrainer.objectives}, label)
    for part, stateful in (("optimizer", optimizer), ("scheduler", scheduler)):
        if stateful is None:
            continue
        try:
            stateful.load_state_dict(state[part])
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            first = " ".join(str(err).split())[:200] or type(err).__name__
            raise ConfigError(f"{label}: its {part} state does not fit the configured model ({first})") from None
    return Restored(step, state)


def _read_checkpoint(
    run_id: str, cfg: RunConfig, device: torch.device, ranks: distributed.Ranks | None, doing: str
) -> tuple[str, dict[str, Any]]:
    """(how messages name the checkpoint, its state). Rank 0 finds it; every rank reads it. A download
    goes to a scratch folder removed once read: under DDP inside the run's out_dir (other hosts must
    share train.out_dir), else a temporary folder."""
    local = Path(cfg.train.out_dir) / run_id / checkpoint.LAST
    with contextlib.ExitStack() as stack:
        where = path = None
        if ranks is None or ranks.is_main:
            path, where = local, str(local)
            if not local.is_file() and cfg.tracking.enabled:
                if distributed.is_active():
                    local.parent.mkdir(parents=True, exist_ok=True)
                scratch = stack.enter_context(
                    tempfile.TemporaryDirectory(dir=local.parent if distributed.is_active() else None)
                )
                path = tracking.download_checkpoint(tracking.client(cfg.tracking.uri), run_id, Path(scratch))
                in_scratch = path.is_relative_to(scratch)
                where = f"runs:/{run_id}/{tracking.CHECKPOINT_ARTIFACT}" if in_scratch else str(path)
        path, where = distributed.broadcast_object((path, where))
        try:
            state = checkpoint.load(path, map_location=device)
        except DataError as err:
            raise DataError(doing + str(err).replace(str(path), where)) from None
        finally:
            distributed.broadcast_object(None)  # every rank has read it before rank 0 removes the scratch copy
    return where, state


@dataclass
class RebuiltRun:
    """A recorded run's model and objectives, built from its config with its checkpoint's weights."""

    pretrainer: Pretrainer
    tokenizer: Any
    device: torch.device
    step: int


def rebuild(run_id: str, cfg: RunConfig, device: torch.device | None = None) -> RebuiltRun:
    """The model of `cfg` (the run's recorded config) with run `run_id`'s last checkpoint restored
    (`workbench eval`, `workbench report attention`); the data set is made first when it is missing."""
    device = device or resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    prepare_data(cfg.data)
    tokenizer = load_tokenizer(cfg.data)
    pretrainer = build(cfg, tokenizer).to(device)
    restored = restore(run_id, cfg, pretrainer, device)
    return RebuiltRun(pretrainer, tokenizer, device, restored.step)


# --------------------------------------------------------------------------- evaluating
def evaluate(pretrainer: Pretrainer, cfg: RunConfig, tokenizer, device: torch.device) -> dict[str, float]:
    """`eval.tasks` on a run's model, as a timed phase (after training, and for `workbench eval`)."""
    if not cfg.eval.tasks:
        return {}
    with phase("evaluation", summary=lambda _: ", ".join(cfg.eval.tasks)):
        return evaluate_all(pretrainer.model, pretrainer.objectives, cfg, tokenizer, device)


def evaluate_run(
    run_id: str, tasks: list[str] | None = None, tracking_uri: str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, float], str]:
    """`workbench eval RUN_ID`: evaluate a run's final checkpoint. Returns (metrics, the run they went to).

    With the recorded evaluation settings (or only other `--task`s) the metrics are logged
    into the run itself. `overrides` may change `eval.*` (e.g. `eval.rerank_k`, a fine-tune
    recipe): those numbers mean something else than the run's own, whose params say how
    they were made, so they go to a new run tagged `workbench.evaluated_from` (with its
    own params), and the source run stays as it was. Any other key would not describe
    the checkpoint and is refused.
    """
    cfg, changed = _recorded_config(run_id, tracking_uri or "", overrides)
    trained = [key for key in changed if not key.startswith("eval.")]
    if trained:
        key, (recorded, wanted) = trained[0], changed[trained[0]]
        raise ConfigError(
            f"{key}={wanted}: `workbench eval` may change only eval.* (and the device and paths) — run {run_id}'s "
            f"checkpoint was trained with {key}={recorded}; a new run with it: workbench run --from {run_id} "
            f"--set {key}={wanted}"
        )
    if tasks:
        cfg.eval.tasks = list(tasks)
        validate(cfg)
    changed.pop("eval.tasks", None)  # which tasks run does not change what a task's number means
    source = tracking.get_run_or_refuse(tracking.client(cfg.tracking.uri), run_id, cfg.tracking.uri)
    tracking.refuse_if_pruned(source)
    rebuilt = rebuild(run_id, cfg)  # a missing, garbage or other-model checkpoint: refused before any run
    if not changed:
        with lease(cfg, "`workbench eval` into it") as held:  # never into a run another process writes
            held.acquire(run_id)
            return _evaluate_into(rebuilt, cfg, tracking.RunTracker(tracking.client(cfg.tracking.uri), run_id)), run_id
    settings = " ".join(f"{key.removeprefix('eval.')}={wanted}" for key, (_, wanted) in changed.items())
    cfg.tracking.run_name = f"eval {settings} of {source.info.run_name or run_id[: tracking.SHORT_ID]}"[
        : tracking.NAME_MAX
    ]
    run_tags = {tag.EVALUATED_FROM: run_id, tag.OVERRIDES: " ".join(overrides or []), tag.SEED: str(cfg.train.seed)}
    with tracking.start_run(cfg, tags=run_tags) as tracker:  # FINISHED, or FAILED/KILLED when evaluation stops
        return _evaluate_into(rebuilt, cfg, tracker), tracker.run_id


def _evaluate_into(rebuilt: RebuiltRun, cfg: RunConfig, tracker: tracking.RunTracker) -> dict[str, float]:
    """Evaluate a rebuilt run; log the metrics to `tracker` at the checkpoint's step."""
    metrics = evaluate(rebuilt.pretrainer, cfg, rebuilt.tokenizer, rebuilt.device)
    tracker.log_final(metrics, step=rebuilt.step)
    tracker.close_metrics()
    return metrics
