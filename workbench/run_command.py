"""`workbench run` below the CLI: which config a run gets and where it runs.

cli.py parses the options into a `RunRequest` and calls `run_training_command`; here the
options are checked against each other, the run is started on more processes
(torchrun for `--nproc`, one SLURM job for `--launcher slurm`) or trained in this
process with the config of an experiment or of a recorded run (`--resume`, `--from`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench import distributed, interrupts, preflight, recorded_run, tracking, train
from workbench import tags as tag
from workbench.cli_support import option_overrides, quick_overrides
from workbench.config import RunConfig, load_config
from workbench.errors import EXIT_OK, ConfigError
from workbench.launch import Launcher, slurm_run
from workbench.launch.slurm import SlurmResources


@dataclass
class RunRequest:
    """The options of one `workbench run`, as parsed."""

    experiment: str | None = None  # None: base, or the recorded run's config
    overrides: list[str] = field(default_factory=list)  # the user's --set, in order
    device: str | None = None
    tracking_uri: str | None = None
    resume: str | None = None  # run id to continue
    rerun_of: str | None = None  # run id to run again (--from)
    nproc: int = 1
    quick: bool = False
    no_eval: bool = False
    launcher: Launcher = Launcher.local
    nodes: int = 1
    slurm: SlurmResources = field(default_factory=SlurmResources)  # gpus: per node
    wait: bool = True
    debug: bool = False

    @property
    def recorded(self) -> str | None:
        """The run whose recorded config this run uses (--resume or --from)."""
        return self.resume or self.rerun_of

    @property
    def presets(self) -> list[str]:
        return [name for name, on in (("quick", self.quick), ("no-eval", self.no_eval)) if on]


def run_training_command(
    request: RunRequest, *, echo: Callable[[str], None], on_start: Callable[[str, str], None]
) -> int:
    """Run it; the exit code (0 after a run in this process, else that of the processes started)."""
    distributed.check_nproc(request.nproc)
    check_options(request)
    overrides = quick_overrides(request.quick, request.no_eval, request.overrides)
    ranks = request.nodes * (request.slurm.gpus or request.nproc) if request.launcher == "slurm" else request.nproc
    if (ranks != 1 or request.launcher == "slurm") and not distributed.ranks_from_env().active:
        return launch(request, overrides, ranks, echo=echo)
    cfg, tags = run_config(request, overrides)
    if request.quick and not request.recorded:
        skip_missing_warm_start(cfg, request.overrides, echo)
    with interrupts.graceful():  # SIGINT/SIGTERM: checkpoint, run KILLED, the resume command printed
        result = train.run(cfg, resume_run_id=request.resume, tags=tags, on_start=on_start)
    if distributed.ranks_from_env().is_main:
        echo(result.summary())
    return EXIT_OK


def skip_missing_warm_start(cfg: RunConfig, user_overrides: list[str], echo: Callable[[str], None]) -> bool:
    """`--quick` uses a cached ViT warm start but does not make one: at `base` size that is
    300 steps (over 10 min on 2 cores), longer than the rest of a quick run. Without one the
    ViT starts from random weights (said, and recorded in the run's config); an explicit
    `--set model.vision.init=...` is kept. True when it switched."""
    from workbench.warmstart.cache import RANDOM, WARMSTART, cached_path

    if cfg.model.vision.init != WARMSTART or any(o.startswith("model.vision.init=") for o in user_overrides):
        return False
    path = cached_path(cfg, "vision")
    if path.is_file():
        return False  # made by an earlier run: used
    cfg.model.vision.init = RANDOM
    echo(
        f"--quick: no cached ViT warm start ({path}), so this run starts the ViT from random weights "
        "(model.vision.init=random); a full run makes the warm start once and later quick runs use it "
        "(--quick --set model.vision.init=warmstart makes it now)"
    )
    return True


def check_options(request: RunRequest) -> None:
    """--resume, --from and --experiment: at most one says where the config comes from."""
    if request.resume and request.rerun_of:
        raise ConfigError("--resume and --from exclude each other: --resume continues a run, --from starts a new one")
    if request.recorded and request.experiment:
        option = "--resume" if request.resume else "--from"
        raise ConfigError(
            f"{option} uses the run's recorded config; drop --experiment {request.experiment} (--set still applies)"
        )


def launch(request: RunRequest, overrides: list[str], ranks: int, *, echo: Callable[[str], None]) -> int:
    """This same command on `ranks` processes: torchrun here, or one SLURM job; their exit code."""
    experiment = request.experiment or "base"
    out_dir = "outputs"
    if not request.recorded:  # a bad key or an uneven batch: one line now, not once per process
        cfg = load_config(experiment, option_overrides(overrides, request.device, request.tracking_uri))
        distributed.local_batch_size(cfg.train.batch_size, ranks)
        preflight.check(
            cfg, fresh=False, data=False
        )  # each objective's rules before a job starts (files: on its hosts)
        out_dir = cfg.train.out_dir
    args = ["--debug"] if request.debug else []
    args += [
        "run",
        *([] if request.recorded else ["--experiment", experiment]),
        *[f"--set={o}" for o in request.overrides],
    ]
    args += [flag for flag, on in (("--quick", request.quick), ("--no-eval", request.no_eval)) if on]
    args += [
        f"--{name}={value}"
        for name, value in (
            ("device", request.device),
            ("tracking-uri", request.tracking_uri),
            ("resume", request.resume),
            ("from", request.rerun_of),
        )
        if value
    ]
    if request.launcher == "slurm":
        return slurm_run.launch(
            args,
            request.slurm,
            nodes=request.nodes,
            tasks_per_node=request.slurm.gpus or request.nproc,
            folder=Path(out_dir) / "slurm",
            wait=request.wait,
            echo=echo,
        )
    return interrupts.run_forwarding(distributed.torchrun_command(request.nproc, args))


def run_config(request: RunRequest, overrides: list[str]) -> tuple[RunConfig, dict[str, str] | None]:
    """The config this process trains and the tags naming where it came from."""
    if not request.recorded:
        experiment = request.experiment or "base"
        cfg = load_config(experiment, option_overrides(overrides, request.device, request.tracking_uri))
        return cfg, tracking.run_tags(experiment, request.overrides, request.presets)
    option = "--resume" if request.resume else "--from"
    try:  # the run's own config; --set may still change e.g. train.device
        cfg = recorded_run.load_run_config(
            request.recorded,
            request.tracking_uri or "",
            option_overrides(overrides, request.device),
            resume=bool(request.resume),
        )
    except ConfigError as err:
        raise ConfigError(f"{option}: {err}") from None
    return cfg, ({tag.RERUN_OF: request.rerun_of} if request.rerun_of else None)
