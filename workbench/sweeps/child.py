"""One trial = one child process, so a crash or an OOM kill ends that trial, not the sweep.

Children are forked from a ``forkserver`` that has imported ``workbench.train``
(torch, timm, transformers, mlflow) once: a trial starts in well under a second
instead of re-importing for several seconds, and the forking process is a
clean single-threaded server, not the sweep with its threads and DB handles.

The child: takes its slot's environment (``CUDA_VISIBLE_DEVICES`` before anything
touches CUDA), writes stdout/stderr to the trial's log file, resolves the config
(``load_config(base, overrides)``), then calls the trainer. It reports through
its exit code and a small JSON file. It ends itself when the sweep process dies
(kill -9 included): SIGTERM/parent death -> KeyboardInterrupt -> the trainer
marks its MLflow run KILLED. Before training it settles earlier unfinished
attempts of the same variant x seed: the newest one with a checkpoint is resumed
in the same MLflow run (``train.run(resume_run_id=...)``, which skips steps it
already logged); other RUNNING ones are marked KILLED, so no variant x seed ever
has two FINISHED runs and a stale run never looks alive.
"""

from __future__ import annotations

import _thread
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import tags as tag
from workbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR
from workbench.pids import pid_alive

PRELOAD = ["workbench.sweeps.preload"]
ORPHAN_GRACE_S = 20.0  # after the sweep died: time to mark the run KILLED before a hard exit


@dataclass
class TrialJob:
    """Everything a child needs; pickled to the forkserver child."""

    base: str  # resolved base experiment YAML
    overrides: dict[str, Any]
    result_path: str
    log_path: str
    cwd: str
    env: dict[str, str]
    sweep_pid: int
    trainer: Callable[..., Any] | None = None  # None: workbench.train.run (pickled by reference: importable)
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    earlier_runs: list[dict[str, str]] = field(
        default_factory=list
    )  # unfinished attempts [{"run_id", "status"}], newest first
    threads: int = 0  # torch intra-op threads (0 = leave as is)


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up(wait: bool = False) -> None:
    """Start the forkserver now (its imports overlap the sweep's set-up); `wait` until it is ready."""
    ctx = _context()
    if wait:
        process = ctx.Process(target=_noop, name="forkserver-warm-up")
        process.start()
        process.join()
    else:
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _noop() -> None:
    pass


def start(job: TrialJob) -> multiprocessing.Process:
    Path(job.result_path).unlink(missing_ok=True)  # never read a report left by an older study's trial
    phase_path(job.result_path).unlink(missing_ok=True)
    process = _context().Process(target=main, args=(job,), name=f"trial:{Path(job.result_path).stem}")
    process.start()
    return process


def stop(process: multiprocessing.Process, grace_s: float = 30.0) -> None:
    """SIGTERM (the trainer marks its run KILLED), then SIGKILL after `grace_s`."""
    if process.is_alive():
        process.terminate()
        process.join(grace_s)
    if process.is_alive():
        process.kill()
        process.join()


def read_result(job: TrialJob, exitcode: int | None) -> dict[str, Any]:
    """The child's report; a child that died without one (signal, OOM) gets a FAILED one."""
    path = Path(job.result_path)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = f"the trial process was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    else:
        why = f"the trial process exited with code {exitcode} without a result"
    return {"status": "FAILED", "error": f"{why}; log: {job.log_path}"}


# ------------------------------------------------------------------ in the child
def main(job: TrialJob) -> None:
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    _redirect_output(job.log_path)
    _watch_sweep(job.sweep_pid)
    # SIGHUP: a closed terminal or ssh session; SIGUSR2: SLURM's time-limit warning (submitit)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(signum, _interrupt)
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    from workbench import progress

    progress.configure(bars=False, status_file=phase_path(job.result_path))  # the sweep's live table reads it
    code, report = _run(job)
    _write_json(Path(job.result_path), report)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _run(job: TrialJob) -> tuple[int, dict[str, Any]]:
    from workbench.config import load_config
    from workbench.errors import USER_ERRORS, one_line

    try:
        _log_start(job)
        cfg = load_config(job.base, job.overrides)
        resume_run_id, killed = _settle_earlier_runs(cfg, job.earlier_runs)
        if resume_run_id:
            print(f"resuming MLflow run {resume_run_id}", flush=True)
        if killed:
            print(f"earlier attempts marked KILLED: {', '.join(killed)}", flush=True)
        trainer = job.trainer or _train_run()
        result = trainer(
            cfg, resume_run_id=resume_run_id, parent_run_id=job.parent_run_id, tags=job.tags, progress=False
        )
        _log_result(result)
        report = {
            "status": result.status,
            "run_id": result.run_id,
            "metrics": dict(result.metrics),
            "final_loss": result.final_loss,
            "steps": result.steps,
            "resumed": resume_run_id,
            "killed_runs": killed,
        }
        return (EXIT_OK if result.status == "FINISHED" else EXIT_FAILED), report
    except USER_ERRORS as err:
        return EXIT_USER_ERROR, {"status": "USER_ERROR", "error": one_line(err).removeprefix("error: ")}
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, {"status": "KILLED", "error": "interrupted"}
    except BaseException as err:  # noqa: BLE001 - any crash is this trial's failure, reported to the sweep
        traceback.print_exc()
        from workbench.errors import worker_message

        text = " ".join(worker_message(str(err)).split()) or type(err).__name__
        return EXIT_FAILED, {"status": "FAILED", "error": f"{type(err).__name__}: {text}; log: {job.log_path}"}


def _log_start(job: TrialJob) -> None:
    """The trial log (referenced from the study) says what ran, not only what crashed."""
    tags = job.tags
    print(
        f"workbench sweep {tags.get(tag.SWEEP, '?')}: trial {tags.get(tag.TRIAL, '?')}, "
        f"variant {tags.get(tag.VARIANT, '?')}, seed {tags.get(tag.SEED, '?')}",
        flush=True,
    )
    print(f"base {job.base}; overrides: " + ", ".join(f"{k}={v}" for k, v in job.overrides.items()), flush=True)


def _log_result(result: Any) -> None:
    number = lambda x: f"{x:.4g}" if isinstance(x, (int, float)) else str(x)  # noqa: E731
    print(
        f"MLflow run {result.run_id}: {result.status} after {result.steps} steps, "
        f"final loss {number(result.final_loss)}",
        flush=True,
    )
    for key, value in sorted(dict(result.metrics).items()):
        print(f"  {key} = {number(value)}", flush=True)


def _settle_earlier_runs(cfg: Any, earlier: list[dict[str, str]]) -> tuple[str | None, list[str]]:
    """Resume the newest earlier attempt that has a checkpoint; mark other RUNNING ones KILLED."""
    from workbench import checkpoint, tracking

    resume, killed = None, []
    for run in earlier:
        has_checkpoint = (Path(cfg.train.out_dir) / run["run_id"] / checkpoint.LAST).is_file()
        if resume is None and has_checkpoint:
            resume = run["run_id"]
        elif run["status"] == "RUNNING":
            tracking.client(cfg.tracking.uri).set_terminated(run["run_id"], status="KILLED")
            killed.append(run["run_id"])
    return resume, killed


def phase_path(result_path: str | Path) -> Path:
    """The file where a trial child writes its current phase (beside its result file)."""
    return Path(result_path).with_suffix(".phase")


def _train_run() -> Callable[..., Any]:
    """The trainer: the sweeps -> train edge. Imported here, in the trial process (whose forkserver
    has preloaded it), so that the sweep process and `workbench sweep list` never import torch."""
    from workbench.train import run

    return run


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C (the whole process group) and the sweep's SIGTERM often both arrive: act on the
    first only, so a second one cannot cut short the trainer marking its run KILLED."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _redirect_output(log_path: str) -> None:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _watch_sweep(sweep_pid: int, every_s: float = 0.5) -> None:
    """End this trial when the sweep process is gone (its forkserver exits and we are re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent or not pid_alive(sweep_pid):
                print(f"workbench sweep: the sweep process {sweep_pid} is gone; stopping this trial", flush=True)
                _thread.interrupt_main()
                time.sleep(ORPHAN_GRACE_S)
                os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="sweep-watchdog", daemon=True).start()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)
