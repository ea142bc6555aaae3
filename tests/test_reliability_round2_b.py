"""Reliability round 2 (issue 29, classes 2, 3, 4, 10, 11): real processes, real signals, real SQLite locks.

* one writer per run: a `--resume` of a run another live process trains is refused naming
  it; two resumes of a dead owner's run at once: one takes it over, the other is refused;
* a user's data is never replaced: a resume on data whose fingerprint changed is refused
  naming both hashes; regenerating never deletes a file workbench did not make;
* SIGHUP ends a run KILLED like SIGTERM; a second signal while a checkpoint is written
  waits for it (no temp file, no RUNNING run, no hang);
* a store locked by another process mid-run is waited for: every step's metrics arrive and
  the run ends FINISHED; a disk that fills while a checkpoint is written is one line and
  leaves no temp file;
* `~` in path settings is expanded; `data check` refuses a FIFO instead of hanging.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tiny_config import tiny_run

from workbench import checkpoint

TESTS = Path(__file__).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
}


def _sets(shapes: Path, store: str, out: Path, *extra: str, steps: int = 6) -> list[str]:
    overrides = tiny_run(shapes, store, out, "eval.tasks=[]", "train.log_every=1", *extra, steps=steps)
    return [arg for override in overrides for arg in ("--set", override)]


def _start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args],
        cwd=cwd,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_id(process: subprocess.Popen) -> str:
    """The run id the command prints before its first step."""
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()[-2000:]
        match = re.search(r"run ([0-9a-f]{32}) started", line)
        if match:
            return match.group(1)


def _wait_for_steps(client: MlflowClient, run_id: str, process: subprocess.Popen, n: int = 1) -> None:
    deadline = time.monotonic() + 120
    while len(client.get_metric_history(run_id, "train/loss/total")) < n:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/loss/total"))


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def store(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


# ------------------------------------------------------------ 2: one writer per run
def test_a_resume_of_a_run_another_process_trains_is_refused_naming_it(shapes_tiny, store, tmp_path):
    original = _start(["run", *_sets(shapes_tiny, store, tmp_path / "out", steps=5000)], tmp_path)
    run_id = _run_id(original)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, original)
    second = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "--resume", run_id, "--tracking-uri", store],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = second.stderr.strip().splitlines()
    assert f"run {run_id} is in use:" in line and f"pid {original.pid} since" in line, line
    assert original.poll() is None  # the original trains on
    original.send_signal(signal.SIGTERM)
    _, stderr = original.communicate(timeout=120)
    assert original.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert client.get_run(run_id).info.status == "KILLED"
    steps = _steps(client, run_id)
    assert steps == list(range(1, len(steps) + 1))  # every step logged once, by the original alone
    assert "workbench.owner" not in client.get_run(run_id).data.tags  # released


def test_two_resumes_of_a_dead_owners_run_one_takes_it_over_the_other_is_refused(shapes_tiny, store, tmp_path):
    out = tmp_path / "out"
    original = _start(["run", *_sets(shapes_tiny, store, out, "train.checkpoint_every=2", steps=5000)], tmp_path)
    run_id = _run_id(original)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, original, 4)
    while not (out / run_id / checkpoint.LAST).is_file():
        time.sleep(0.05)
    original.kill()  # kill -9: the run stays RUNNING with its owner tag; the lock dies with the process
    original.communicate()
    assert client.get_run(run_id).info.status == "RUNNING"
    assert f'"pid": {original.pid}' in client.get_run(run_id).data.tags["workbench.owner"]
    resumes = [_start(["run", "--resume", run_id, "--tracking-uri", store], tmp_path) for _ in range(2)]
    deadline = time.monotonic() + 300
    while all(p.poll() is None for p in resumes):  # the refused one ends first; the owner trains on
        assert time.monotonic() < deadline
        time.sleep(0.1)
    refused = next(p for p in resumes if p.poll() is not None)
    owner = next(p for p in resumes if p is not refused)
    stderr = refused.communicate()[1]
    assert refused.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and f"run {run_id} is in use: " in stderr, stderr
    assert f"pid {owner.pid} since" in stderr
    _wait_for_steps(client, run_id, owner, len(client.get_metric_history(run_id, "train/loss/total")) + 2)
    owner.send_signal(signal.SIGTERM)  # the run it took over ends KILLED, resumable
    owner.communicate(timeout=120)
    assert owner.returncode == 128 + signal.SIGTERM
    assert client.get_run(run_id).info.status == "KILLED"
    steps = _steps(client, run_id)
    assert steps == list(range(1, len(steps) + 1))  # each step logged once: no second writer


# ------------------------------------------------------------ 4: signals
def test_sighup_ends_the_run_killed_with_a_checkpoint(shapes_tiny, store, tmp_path):
    process = _start(["run", *_sets(shapes_tiny, store, tmp_path / "out", steps=60)], tmp_path)
    run_id = _run_id(process)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGHUP, stderr[-2000:]
    assert "Traceback" not in stderr
    assert re.search(rf"interrupted \(SIGHUP\) at step \d+/60: run {run_id} marked KILLED", stderr), stderr
    assert client.get_run(run_id).info.status == "KILLED"
    assert (tmp_path / "out" / run_id / checkpoint.LAST).is_file()


def test_a_second_sigint_while_the_checkpoint_is_written_waits_for_it(shapes_tiny, store, tmp_path):
    """The first SIGINT asks for a checkpoint at the step's end; the second comes the moment its
    temp file appears. The write completes, the run ends KILLED, nothing hangs or is left half-written."""
    out = tmp_path / "out"
    wide = ["model.vision.width=256", "model.text.width=256", "model.fusion.width=256"]  # a checkpoint of ~25 MB
    process = _start(["run", *_sets(shapes_tiny, store, out, *wide, steps=200)], tmp_path)
    run_id = _run_id(process)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, process)
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    while not _temp_files(out) and process.poll() is None:
        assert time.monotonic() < deadline
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr
    assert client.get_run(run_id).info.status == "KILLED"
    assert not _temp_files(out)
    step = int(re.search(r"at step (\d+)/200", stderr).group(1))
    assert checkpoint.load(out / run_id / checkpoint.LAST)["step"] == step  # the complete checkpoint


# ------------------------------------------------------------ 10: tracking store faults
def test_a_store_locked_mid_run_is_waited_for_and_no_metric_is_lost(shapes_tiny, store, tmp_path):
    """MLflow's SQLite sessions wait 20 s for a lock, then fail: the lock here is held for longer."""
    process = _start(["run", *_sets(shapes_tiny, store, tmp_path / "out", steps=150)], tmp_path)
    run_id = _run_id(process)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, process)
    database = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None)
    database.execute("BEGIN EXCLUSIVE")  # another process holding the store
    time.sleep(24)
    database.execute("COMMIT")
    database.close()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "database is locked" not in stderr
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _steps(client, run_id) == list(range(1, 151))


def test_a_store_locked_when_a_command_opens_it_is_waited_for(tmp_path):
    """Opening a locked store fails after SQLite's 5 s wait ("failed unexpectedly" before); now it is retried."""
    import threading

    from workbench import tracking

    uri = f"sqlite:///{tmp_path / 'locked.db'}"
    subprocess.run(
        [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient({uri!r}).search_experiments()"],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=120,
    )  # the store exists; this process never opened it
    database = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    database.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release() -> None:
        database.execute("COMMIT")
        released.set()

    timer = threading.Timer(12.0, release)
    timer.start()
    try:
        experiment = tracking.experiment_id("opened-while-locked", uri)
    finally:
        timer.join()
        database.close()
    assert released.is_set()
    assert MlflowClient(uri).get_experiment(experiment).name == "opened-while-locked"


WRITE_A_CHECKPOINT = """
import resource, signal, sys, torch
from pathlib import Path
from workbench import checkpoint
from workbench.errors import RunError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG, as on a full disk
path = Path(sys.argv[1])
checkpoint.save(path, {"w": torch.zeros(1000)})  # the previous checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
try:
    checkpoint.save(path, {"w": torch.zeros(1_000_000)})  # 4 MB
except RunError as err:
    print(err)
"""


def test_a_disk_that_fills_during_a_checkpoint_is_one_line_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "out" / "run" / checkpoint.LAST
    done = subprocess.run(
        [sys.executable, "-c", WRITE_A_CHECKPOINT, str(path)], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"disk full: cannot write checkpoint {path} (File too large)"), done.stdout
    assert not _temp_files(tmp_path)
    assert checkpoint.load(path)["w"].numel() == 1000  # the previous checkpoint is intact


# ------------------------------------------------------------ 3: a user's data never replaced
def _stopped_run(root: Path, store: str, out: Path) -> str:
    """A RUNNING, resumable 2-of-4-step run on ShapesWorld tiny (seed 0) in `root`."""
    from workbench import train
    from workbench.config import load_config

    cfg = load_config("base", tiny_run(root, store, out, "eval.tasks=[]", steps=4))
    result = train.run(cfg, progress=False, stop_after=2)
    assert result.status == "RUNNING"
    return result.run_id


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("generate", ["true", "false"])
def test_a_resume_on_data_with_another_fingerprint_is_refused_and_changes_nothing(
    shapes_tiny, store, tmp_path, generate
):
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.data.shapes import generate as make_shapes

    root = tmp_path / "data"
    run_id = _stopped_run(root, store, tmp_path / "out")
    make_shapes(tmp_path / "other", seed=1, size="tiny")  # the user's data set, made with another seed
    (tmp_path / "other" / "notes.txt").write_text("mine")
    import shutil

    shutil.rmtree(root)
    (tmp_path / "other").rename(root)
    before = _tree(root)
    result = CliRunner().invoke(
        app, ["run", "--resume", run_id, "--tracking-uri", store, "--set", f"data.generate={generate}"]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert f"holds other data than run {run_id} was trained on" in line
    assert f"recorded {tags['workbench.data_hash'][:12]}" in line and "data hash now " in line
    assert _tree(root) == before  # the user's data set and file as they were
    assert MlflowClient(store).get_run(run_id).info.status == "RUNNING"  # the run as it was


def test_regenerating_keeps_what_workbench_did_not_make_and_data_a_run_reads(shapes_tiny, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.data.data_guard import in_use
    from workbench.data.shapes import generate as make_shapes

    root = tmp_path / "data"
    make_shapes(root, seed=0, size="tiny")
    (root / "images" / "mine.png").write_bytes(b"the user's")
    before = _tree(root)
    result = CliRunner().invoke(app, ["data", "shapes", "--out", str(root), "--seed", "1", "--size", "tiny"])
    assert result.exit_code == 2, result.output
    assert "would delete what workbench did not make there: images/ (files added or changed)" in result.stderr
    assert _tree(root) == before
    (root / "images" / "mine.png").unlink()
    with in_use(root):  # a run reads it
        result = CliRunner().invoke(app, ["data", "shapes", "--out", str(root), "--seed", "1", "--size", "tiny"])
    assert result.exit_code == 2, result.output
    assert "refused: a run in progress reads that data set" in result.stderr
    (root / "warmstart").mkdir()
    (root / "warmstart" / "vision-x.pt").write_bytes(b"cache")
    result = CliRunner().invoke(app, ["data", "shapes", "--out", str(root), "--seed", "1", "--size", "tiny"])
    assert result.exit_code == 0, result.output  # nothing foreign, no reader: regenerated
    assert json.loads((root / "manifest.json").read_text())["seed"] == 1
    assert (root / "warmstart" / "vision-x.pt").read_bytes() == b"cache"  # workbench's cache kept
    assert not _temp_files(tmp_path)


# ------------------------------------------------------------ 11: paths and data under a run
def test_home_and_variables_in_path_settings_are_expanded_or_refused(tmp_path, monkeypatch):
    from workbench.config import load_config
    from workbench.errors import ConfigError

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WB_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("WB_NOT_SET", raising=False)
    cfg = load_config("base", ["train.out_dir=~/runs", "data.root=${WB_DATA}/shapes", "tracking.uri=sqlite:///~/m.db"])
    assert cfg.train.out_dir == str(tmp_path / "home" / "runs")
    assert cfg.data.root == str(tmp_path / "elsewhere" / "shapes")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'home' / 'm.db'}"
    with pytest.raises(ConfigError, match=r"data.root: '\$WB_NOT_SET/x' names the environment variable \$WB_NOT_SET"):
        load_config("base", ["data.root=$WB_NOT_SET/x"])


def test_data_check_refuses_a_fifo_where_an_image_should_be(shapes_tiny, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    os.mkfifo(root / "images" / "pipe.png")  # open() of it would wait for a writer forever
    (root / "pretrain.json").write_text(json.dumps([{"image": "images/pipe.png", "caption": "a red square."}]))
    overrides = [
        f"data.root={root}",
        "data.generate=false",
        f"data.tokenizer={shapes_tiny / 'tokenizer'}",
        "eval.tasks=[]",
    ]
    result = CliRunner().invoke(app, ["data", "check", *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code != 0
    assert f"{root / 'images' / 'pipe.png'} is not a regular file" in result.output


def test_eval_into_a_run_another_process_trains_is_refused(shapes_tiny, store, tmp_path):
    original = _start(
        ["run", *_sets(shapes_tiny, store, tmp_path / "out", "train.checkpoint_every=2", steps=5000)], tmp_path
    )
    run_id = _run_id(original)
    client = MlflowClient(store)
    _wait_for_steps(client, run_id, original, 2)
    while not (tmp_path / "out" / run_id / checkpoint.LAST).is_file():
        time.sleep(0.05)
    evaluated = subprocess.run(
        [sys.executable, "-m", "workbench", "eval", run_id, "--tracking-uri", store, "--task", "retrieval"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    original.send_signal(signal.SIGTERM)
    original.communicate(timeout=120)
    assert evaluated.returncode == 2, evaluated.stderr[-2000:]
    (line,) = evaluated.stderr.strip().splitlines()
    assert (
        f"run {run_id} is in use: " in line
        and f"pid {original.pid}" in line
        and "`workbench eval` into it refused" in line
    )
    assert not [k for k in client.get_run(run_id).data.metrics if k.startswith("eval/")]  # nothing logged into it


def test_a_truncated_warm_start_cache_is_made_again(shapes_tiny, tmp_path):
    import shutil

    from workbench import warmstart
    from workbench.config import load_config
    from workbench.data import load_tokenizer

    root = tmp_path / "data"
    shutil.copytree(shapes_tiny, root)
    cfg = load_config(
        "base",
        tiny_run(
            root,
            "",
            tmp_path / "out",
            "model.vision.init=warmstart",
            "warmstart.vision_steps=2",
            "warmstart.batch_size=4",
        ),
    )
    tokenizer = load_tokenizer(cfg.data)
    said: list[str] = []
    path = warmstart.ensure(cfg, tokenizer, progress=False, announce=said.append)["vision"]
    path.write_bytes(path.read_bytes()[:100])  # truncated (a full disk, a copy cut short)
    again = warmstart.ensure(cfg, tokenizer, progress=False, announce=said.append)["vision"]
    assert again == path and "cannot be read (truncated?) — making them again" in said[-2]
    assert warmstart.cache._usable(path, "vision")
    (root / "warmstart").rename(tmp_path / "moved")
    (root / "warmstart").write_text("a file where the cache folder should be")
    from workbench.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"model.vision.init=warmstart: cannot write the warm-start cache .* "
        r"`workbench data warmstart --out FILE`",
    ):
        warmstart.ensure(cfg, tokenizer, progress=False, announce=said.append)


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_run_whose_disk_fills_at_a_checkpoint_ends_failed_in_one_line(shapes_tiny, store, tmp_path):
    out = tmp_path / "out"
    wide = ["model.vision.width=256", "model.text.width=256", "model.fusion.width=256"]  # a checkpoint of ~25 MB
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench",
            "run",
            *_sets(shapes_tiny, store, out, *wide, "train.checkpoint_every=2", steps=6),
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_file_size_limit(8_000_000),
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-2000:]
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: disk full: cannot write checkpoint ") and "(File too large)" in line, line
    run_id = re.search(r"run ([0-9a-f]{32}) started", stdout).group(1)
    assert MlflowClient(store).get_run(run_id).info.status == "FAILED"
    assert not _temp_files(tmp_path)


def test_a_signal_during_evaluation_ends_the_run_killed(shapes_tiny, store, tmp_path):
    """Outside the training loop a signal acts at once: the evaluation stops and the run ends KILLED."""
    overrides = tiny_run(shapes_tiny, store, tmp_path / "out", "eval.tasks=[vqa]", "eval.finetune_steps=5000", steps=2)
    process = _start(["run", *[a for o in overrides for a in ("--set", o)]], tmp_path)
    run_id = _run_id(process)
    while "pre-training: done" not in (line := process.stdout.readline()):
        assert line, process.stderr.read()[-2000:]
    time.sleep(1.0)  # inside the fine-tune of the evaluation
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGHUP, stderr[-2000:]
    assert "Traceback" not in stderr
    assert MlflowClient(store).get_run(run_id).info.status == "KILLED"


def test_a_lease_refuses_a_second_holder_and_leaves_no_folder_it_made(tmp_path, monkeypatch):
    from workbench.run_lease import RunBusy, RunLease

    monkeypatch.chdir(tmp_path)
    with RunLease("outputs", None) as first:  # relative, as train.out_dir's default
        first.acquire("run1")
        assert (tmp_path / "outputs" / "run1" / ".lease").is_file()
        with (
            RunLease("outputs", None) as second,
            pytest.raises(RunBusy, match=rf"run run1 is in use: \S+ pid {os.getpid()} since"),
        ):
            second.acquire("run1")
    assert list(tmp_path.iterdir()) == []  # the lease file and the folders made for it are gone
    with RunLease("outputs", None) as again:  # free again
        again.acquire("run1")
