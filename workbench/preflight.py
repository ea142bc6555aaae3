"""What a resolved config can be refused for before any work: no data generated, nothing trained.

`config.validate` checks each field and the rules between fields; what it cannot see
is checked here, where the objectives and the file system are in reach:

* each objective's own rules and needs (``ObjectiveSpec.check``/``needs``: SoftMask
  without ITM, SoftMask's Grad-CAM on the last fusion layer, MLM masking nothing);
* what the eval tasks need from the objectives (retrieval ranks with ITC or ITM);
* the files the config names (``model.*.init`` weights, a timm checkpoint, the data
  files of a data set that will not be generated).

`workbench run` calls it before its data is generated (``train.run``; its data files are read
right after, with their own messages), a sweep for every variant before its first trial
(``sweeps.prechecks``), which also asks `logged_metrics`: every metric key a run of the config
may log.
"""

from __future__ import annotations

from pathlib import Path

from workbench.config import RunConfig
from workbench.data.shapes import GENERATOR, VERSION, read_manifest
from workbench.errors import ConfigError
from workbench.objectives.combiner import config_problems, is_on
from workbench.objectives.combiner import logged_metrics as train_metrics
from workbench.tasks import EVAL_TASKS, RETRIEVALS, TASKS
from workbench.tasks import logged_metrics as eval_metrics

KEEP_AS_BUILT = ("random", "warmstart")  # model.*.init values that name no file


def problems(cfg: RunConfig, *, fresh: bool = True, data: bool = True) -> list[str]:
    """Every problem of `cfg`, one message each (`fresh`: a new run, whose init weights are read;
    `data`: with the data files, `data_problems`)."""
    found = config_problems(cfg.objectives, cfg.model.fusion.layers)
    found += _eval_problems(cfg)
    if fresh:
        found += _weight_files(cfg)
    if data:
        found += data_problems(cfg)
    return found


def check(cfg: RunConfig, *, fresh: bool = True, data: bool = True) -> None:
    """ConfigError naming every problem of `cfg` on one line (none: returns)."""
    found = problems(cfg, fresh=fresh, data=data)
    if found:
        raise ConfigError("; ".join(found))


def logged_metrics(cfg: RunConfig, *, every: bool = False) -> set[str]:
    """Every `train/...` and `eval/...` metric key a run of `cfg` may log; `every`: also those it
    would log with every objective and eval task on (what a metric name may be at all)."""
    if every:
        return train_metrics(cfg.objectives, every=True) | eval_metrics(EVAL_TASKS, itc=True, itm=True, rerank_k=1)
    itc, itm = is_on(cfg.objectives, "itc"), is_on(cfg.objectives, "itm")
    return train_metrics(cfg.objectives) | eval_metrics(cfg.eval.tasks, itc=itc, itm=itm, rerank_k=cfg.eval.rerank_k)


def _eval_problems(cfg: RunConfig) -> list[str]:
    ranked = [task for task in cfg.eval.tasks if task in RETRIEVALS]
    if ranked and not (is_on(cfg.objectives, "itc") or is_on(cfg.objectives, "itm")):
        return [
            f"eval.tasks: {'/'.join(ranked)} needs objectives.itc or objectives.itm enabled with weight > 0 "
            f"— enable one, or drop {'/'.join(ranked)} from eval.tasks"
        ]
    return []


def _weight_files(cfg: RunConfig) -> list[str]:
    found = []
    for part in ("vision", "text"):
        init = getattr(cfg.model, part).init
        if init not in KEEP_AS_BUILT and not Path(init).expanduser().is_file():
            found.append(f"model.{part}.init: {init!r} is not a file — 'random', 'warmstart' or a warm-start file path")
    vision = cfg.model.vision
    if vision.timm_name and not Path(vision.checkpoint).expanduser().is_file():
        found.append(
            f"model.vision.checkpoint: {vision.checkpoint!r} is not a file — the weights of "
            f"model.vision.timm_name={vision.timm_name!r} are never downloaded"
        )
    return found


def will_generate(cfg: RunConfig) -> bool:
    """ShapesWorld will be (re)generated into `data.root` before the run reads it (`data.prepare`):
    the files it names do not exist yet."""
    root = Path(cfg.data.root)
    if not cfg.data.generate:
        return False
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return True
    manifest = read_manifest(root) or {}
    made_here = manifest.get("generator") == GENERATOR
    wanted = (VERSION, cfg.data.shapes_seed, cfg.data.shapes_size)
    return made_here and (manifest.get("version"), manifest.get("seed"), manifest.get("size")) != wanted


def data_problems(cfg: RunConfig) -> list[str]:
    """The data files a run reads that are missing, when the data set is there already (not to be generated)."""
    if will_generate(cfg):
        return []
    root = Path(cfg.data.root)
    if not root.is_dir():
        return [f"data.root: {root} does not exist (set data.generate=true to generate ShapesWorld there)"]
    named = [(f"data.pretrain_files[{i}]", name) for i, name in enumerate(cfg.data.pretrain_files)]
    named += [(f"data.video_pretrain_files[{i}]", name) for i, name in enumerate(cfg.data.video_pretrain_files)]
    for task in cfg.eval.tasks:
        splits = [cfg.eval.split] + (["train"] if TASKS[task].kind == "finetune" else [])
        named += [(f"eval.tasks ({task})", f"{task}_{split}.json") for split in dict.fromkeys(splits)]
    missing = [(key, name) for key, name in named if not _under(root, name).is_file()]
    if not missing:
        return []
    listed = ", ".join(f"{key}: {name}" for key, name in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    return [f"data.root {root} lacks {listed}"]


def _under(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path
