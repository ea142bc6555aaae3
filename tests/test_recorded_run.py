"""`recorded_run.restore`: the one way a run's checkpoint is read back (`--resume`, `workbench eval`,
`workbench report attention`), on real tiny runs in a real MLflow store."""

import torch
from tiny_config import tiny_run

from workbench import checkpoint, distributed, recorded_run, tracking, train
from workbench.config import load_config
from workbench.data import load_tokenizer
from workbench.optim import build_optimizer, build_scheduler
from workbench.pretrainer import build
from workbench.reports.attention_maps import load_run


def _cfg(shapes, store, out, *extra, steps=6):
    return load_config("base", tiny_run(shapes, store, out, "eval.tasks=[]", *extra, steps=steps))


def _same(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return own.keys() == weights.keys() and all(torch.equal(own[key], weights[key]) for key in own)


def test_report_attention_restores_the_weights_eval_restores_read_in_place_from_the_store(shapes_tiny, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train.run(_cfg(shapes_tiny, store, tmp_path / "out"), progress=False)
    assert result.status == "FINISHED" and not (tmp_path / "out" / result.run_id / checkpoint.LAST).exists()
    stored = tracking.local_artifact_path(tracking.client(store), result.run_id)  # the one copy: MLflow's
    saved = checkpoint.load(stored)

    cfg = recorded_run.load_run_config(result.run_id, store)
    fresh = build(cfg, load_tokenizer(cfg.data))
    assert not _same(fresh.model, saved["model"])  # the check below can fail: training moved the weights
    rebuilt = recorded_run.rebuild(result.run_id, cfg, torch.device("cpu"))  # what `workbench eval` evaluates
    attention = load_run(result.run_id, store)  # what `workbench report attention` draws

    assert rebuilt.step == attention.cfg.train.steps == 6
    eval_parts = (rebuilt.pretrainer.model, rebuilt.pretrainer.objectives)
    for model, objectives in (eval_parts, (attention.model, attention.objectives)):
        assert _same(model, saved["model"]) and _same(objectives, saved["objectives"])


def test_restore_loads_optimizer_scheduler_and_rng_only_when_asked(shapes_tiny, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = train.run(_cfg(shapes_tiny, store, tmp_path / "out"), progress=False, stop_after=3)
    assert killed.status == "RUNNING"
    saved = checkpoint.load(tmp_path / "out" / killed.run_id / checkpoint.LAST)
    cfg = recorded_run.load_run_config(killed.run_id, store, resume=True)
    tokenizer, cpu = load_tokenizer(cfg.data), torch.device("cpu")

    def parts():
        pretrainer = build(cfg, tokenizer)
        optimizer = build_optimizer(pretrainer.model, pretrainer.objectives, cfg.train)
        return pretrainer, optimizer, build_scheduler(optimizer, cfg.train)

    torch.manual_seed(123)
    pretrainer, optimizer, scheduler = parts()
    rng_before = torch.get_rng_state()
    weights_only = recorded_run.restore(killed.run_id, cfg, pretrainer, cpu)
    assert weights_only.step == 3 and _same(pretrainer.model, saved["model"])
    assert optimizer.state_dict()["state"] == {} and scheduler.last_epoch == 0  # not asked: untouched
    assert torch.equal(torch.get_rng_state(), rng_before)

    pretrainer, optimizer, scheduler = parts()
    rng_before = torch.get_rng_state()
    resumed = recorded_run.restore(killed.run_id, cfg, pretrainer, cpu, optimizer=optimizer, scheduler=scheduler)
    moments = optimizer.state_dict()["state"]
    assert moments.keys() == saved["optimizer"]["state"].keys() and moments  # AdamW's moments after 3 steps
    assert all(torch.equal(moments[k]["exp_avg"], saved["optimizer"]["state"][k]["exp_avg"]) for k in moments)
    assert scheduler.last_epoch == 3 and scheduler.get_last_lr() == saved["scheduler"]["_last_lr"]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the RNG waits until the caller asks
    resumed.restore_rng(distributed.Ranks(), cfg.train.seed)
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert not torch.equal(saved["rng"]["torch"], rng_before)
