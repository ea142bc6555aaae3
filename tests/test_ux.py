"""What a user sees: run names, progress per phase, `ui`, CLI conventions, stored checkpoints."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_config import TINY_MODEL, tiny_run
from typer.testing import CliRunner

from workbench import progress, tracking
from workbench import tags as tag
from workbench.cli import app
from workbench.cli_support import missing_equals, quick_overrides
from workbench.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _workbench(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, **kwargs
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ conventions
def test_version_names_workbench_torch_mlflow_optuna():
    result = _cli("--version")
    assert result.exit_code == 0
    for name in ("workbench", "torch", "mlflow", "optuna"):
        assert name in result.output
    assert torch.__version__.split("+")[0] in result.output


def test_short_help_and_completion_are_on():
    result = _cli("-h")
    assert result.exit_code == 0 and "Usage" in result.output
    assert "--install-completion" in result.output
    run_help = _cli("run", "-h").output
    assert "--quick" in run_help and "--no-eval" in run_help and "eval.tasks=[]" in run_help


def test_config_keys_show_type_default_and_help():
    result = _cli("config", "keys", "train.steps")
    assert result.exit_code == 0
    (row,) = [line for line in result.output.splitlines() if line.startswith("train.steps ")]
    assert row.split()[1:3] == ["int", "300"] and "pre-training optimiser steps" in row
    ratio = _cli("config", "keys", "*image_mask_ratio").output
    assert "objectives.scl.image_mask_ratio" in ratio and "float" in ratio and "in [0.0, 1.0)" in ratio
    literal = _cli("config", "keys", "train.schedule").output
    assert "cosine | linear | constant" in literal
    assert _cli("config", "keys", "no_such_key").exit_code == 2


def test_set_key_space_value_gets_a_hint_not_clicks_extra_argument():
    result = _cli("run", "--set", "train.steps", "20")
    assert result.exit_code == 2
    assert "missing '=' — write --set train.steps=20" in result.output
    assert "unexpected extra argument" not in result.output
    assert missing_equals(["run", "--set", "train.steps=20", "-e", "base"]) is None
    assert (
        missing_equals(["run", "--set=train.steps", "20"])
        == "error: --set train.steps 20: missing '=' — write --set train.steps=20"
    )


def test_type_errors_read_as_english():
    result = _cli("config", "show", "--set", "train.steps=1.5")
    assert result.exit_code == 2 and "train.steps: 1.5 is not an int" in result.output


def test_quick_preset_shortens_training_and_evaluation_and_set_still_wins():
    quick = load_config("base", quick_overrides(True, False, None))
    assert quick.train.steps == 20 and quick.eval.finetune_steps == 10 and quick.eval.tasks == ["retrieval", "vqa"]
    assert quick.eval.rerank_k == 0  # ITC ranks alone: ITM re-ranking took 1:37 of a ~4 min quick run
    assert load_config("base", quick_overrides(True, False, ["train.steps=7"])).train.steps == 7
    assert load_config("base", quick_overrides(False, True, ["eval.tasks=[vqa]"])).eval.tasks == []


# ------------------------------------------------------------------ runs: names, phases, checkpoints
def test_default_run_names_are_unique_and_overrides_are_tagged(shapes_tiny, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = tiny_run(shapes_tiny, uri, tmp_path / "out", "objectives.scl.mvsc=false")
    outputs = []
    for _ in range(2):  # same config, same seed
        result = _cli("run", "--no-eval", *[f"--set={o}" for o in sets])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    runs = tracking.client(uri).search_runs([tracking.experiment_id("workbench", uri)])
    names = [run.info.run_name for run in runs]
    assert len(set(names)) == 2
    for run in runs:
        assert run.info.run_name.startswith(
            f"base {run.info.run_id[: tracking.SHORT_ID]} no-eval model.vision.width=32 "
        )
        assert "data.root" not in run.info.run_name and len(run.info.run_name) <= tracking.NAME_MAX
        assert run.data.tags[tag.OVERRIDES] == " ".join(sets)
        assert run.data.tags[tag.PRESET] == "no-eval"
        assert run.data.params["eval.tasks"] == "[]"
        # one stored copy of the checkpoint: the artifact; locally a reference to it
        local = tmp_path / "out" / run.info.run_id
        assert sorted(p.name for p in local.iterdir()) == ["last.pt.ref"]
        assert (local / "last.pt.ref").read_text().startswith(f"runs:/{run.info.run_id}/checkpoints/last.pt")
        assert tracking.local_artifact_path(tracking.client(uri), run.info.run_id).is_file()
    # the phases a person watches, each with its time
    assert "pre-training: done in" in outputs[0]
    tags = tracking.run_tags("base", ["objectives.scl.mvsc=false", f"data.root={shapes_tiny}"])
    assert tracking.default_run_name("3fa2c1d0e9", tags) == "base 3fa2c1 scl.mvsc=false"


def test_progress_shows_every_phase_with_its_time(shapes_tiny, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = tiny_run(shapes_tiny, uri, tmp_path / "out", "eval.tasks=[retrieval,vqa]", "eval.finetune_steps=2")
    result = _cli("run", *[f"--set={o}" for o in sets])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if ": done in " in line]
    assert [line.split(":")[0] for line in lines] == [
        "pre-training",
        "eval retrieval",
        "eval vqa",
        "eval attention",
        "eval grad-cam",
        "evaluation",
    ]
    # `workbench eval` reads the one stored copy (the artifact) and gives the same numbers
    run_id = re.search(r"run ([0-9a-f]{32})", result.output).group(1)
    again = _cli("eval", run_id, "--task", "retrieval", "--tracking-uri", uri)
    assert again.exit_code == 0, again.output
    assert "eval/retrieval_itc/r_mean" in again.output


def test_eval_with_other_settings_logs_a_new_run_and_leaves_the_source_as_it_was(shapes_tiny, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _cli("run", *[f"--set={o}" for o in tiny_run(shapes_tiny, uri, tmp_path / "out")])
    run_id = re.search(r"run ([0-9a-f]{32})", result.output).group(1)
    client = tracking.client(uri)
    before = client.get_run(run_id).data
    history = client.get_metric_history(run_id, "eval/retrieval/r_mean")
    other = _cli(
        "eval",
        run_id,
        "--set",
        "eval.rerank_k=1",
        "--set",
        "eval.rerank_score=itm",
        "--set",
        "eval.tasks=[retrieval]",
        "--tracking-uri",
        uri,
    )
    assert other.exit_code == 0, other.output
    new_id = re.search(r"logged to a new run ([0-9a-f]{32})", other.output).group(1)
    new = client.get_run(new_id)
    assert new.info.status == "FINISHED" and new.data.tags[tag.EVALUATED_FROM] == run_id
    assert new.data.params["eval.rerank_k"] == "1" and new.data.params["eval.rerank_score"] == "itm"
    assert "eval/retrieval/r_mean" in new.data.metrics and "rerank_k=1 rerank_score=itm" in new.info.run_name
    after = client.get_run(run_id)
    assert after.data.params == before.params and after.data.metrics == before.metrics
    assert client.get_metric_history(run_id, "eval/retrieval/r_mean") == history and after.info.status == "FINISHED"
    # only the evaluation may change: anything else would not describe the checkpoint
    for override in ("model.fusion.layers=3", "objectives.itm.negatives=hard"):
        refused = _cli("eval", run_id, "--set", override, "--tracking-uri", uri)
        assert refused.exit_code == 2 and override in refused.output and "may change only eval.*" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert len(client.search_runs([new.info.experiment_id])) == 2  # nothing was created by the refusals


def test_phase_status_file_names_what_a_trial_is_doing(tmp_path):
    status = tmp_path / "trial-0001.phase"
    progress.configure(status_file=status)
    try:
        with progress.phase("eval vqa", total=10) as task:
            task.describe("fine-tune")
            progress.STATUS_EVERY_S, before = 0.0, progress.STATUS_EVERY_S
            try:
                task.advance(3)
            finally:
                progress.STATUS_EVERY_S = before
            assert progress.read_status(status) == "eval vqa: fine-tune 3/10"
        assert progress.read_status(status) == ""
    finally:
        progress.configure(status_file=None)
    from workbench.sweeps.progress import SlotView, Snapshot, render

    view = SlotView("cpu0", trial=1, variant="mvsc", seed=0, started=0.0, phase="eval vqa: fine-tune 3/10")
    text = "\n".join(str(line) for line in render(Snapshot("s", 0, 2, 0, [view]), now=5.0).renderables)
    assert "eval vqa: fine-tune 3/10" in text


def test_attention_score_from_retrieval_encodings_equals_a_fresh_pass(shapes_tiny):
    from workbench.data import load_tokenizer, task_dataset
    from workbench.evaluate.attention import attention_in_object
    from workbench.evaluate.retrieval import encode_split
    from workbench.evaluate.retrieval_attention import attention_in_object_encoded
    from workbench.models import build_model

    cfg = load_config(
        "base",
        TINY_MODEL + [f"data.root={shapes_tiny}", "data.shapes_size=tiny", "train.device=cpu", "eval.batch_size=16"],
    )
    tokenizer = load_tokenizer(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    dataset, _ = task_dataset(cfg, tokenizer, "retrieval", cfg.eval.split)
    encoded = encode_split(model, dataset, tokenizer, cfg, torch.device("cpu"))
    reused = attention_in_object_encoded(model, dataset, encoded, cfg, torch.device("cpu"))
    fresh = attention_in_object(model, cfg, tokenizer, torch.device("cpu"))
    assert reused.keys() == fresh.keys() == {"eval/attention/in_object"}
    assert reused["eval/attention/in_object"] == pytest.approx(fresh["eval/attention/in_object"], abs=1e-5)


def test_prune_deletes_old_checkpoints_and_keeps_the_newest(shapes_tiny, tmp_path):
    from workbench.tags import CHECKPOINT_PRUNED as PRUNED_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [f"--set={o}" for o in tiny_run(shapes_tiny, uri, tmp_path / "out", "eval.tasks=[]", steps=2)]
    for _ in range(2):
        assert _cli("run", *sets).exit_code == 0
    client = tracking.client(uri)
    older, newer = sorted(
        client.search_runs([tracking.experiment_id("workbench", uri)]), key=lambda r: r.info.start_time
    )
    dry = _cli(
        "runs",
        "prune",
        "--older-than",
        "0",
        "--keep",
        "1",
        "--dry-run",
        "--out-dir",
        str(tmp_path / "out"),
        "--tracking-uri",
        uri,
    )
    assert dry.exit_code == 0 and older.info.run_id[:12] in dry.output and newer.info.run_id[:12] not in dry.output
    assert tracking.local_artifact_path(client, older.info.run_id) is not None  # a dry run deletes nothing
    done = _cli(
        "runs", "prune", "--older-than", "0", "--keep", "1", "--out-dir", str(tmp_path / "out"), "--tracking-uri", uri
    )
    assert done.exit_code == 0 and "pruned the checkpoints of 1 run(s)" in done.output
    assert tracking.local_artifact_path(client, older.info.run_id) is None
    assert not (tmp_path / "out" / older.info.run_id).exists()
    assert tracking.local_artifact_path(client, newer.info.run_id) is not None
    assert client.get_run(older.info.run_id).data.tags[PRUNED_TAG]
    assert client.get_run(older.info.run_id).data.metrics  # metrics stay


# ------------------------------------------------------------------ ui
def test_ui_on_a_busy_port_exits_non_zero_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _workbench("ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
        out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert err.strip().splitlines() == [
        f"error: --port {port}: 127.0.0.1:{port} is already in use "
        "(another `workbench ui`?); choose another port with --port"
    ]


def _server_pids(port: int) -> list[int]:
    """Processes whose command line serves this port (mlflow ui, uvicorn, its workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(port).encode() in args and any(b"mlflow" in a or b"uvicorn" in a for a in args):
            pids.append(int(proc.name))
    return pids


def test_ui_prints_its_url_once_it_answers_and_leaves_no_server_after_sigterm(tmp_path):
    from workbench.reports.ui import answers

    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # the server's chatter: a full pipe would stall it
    process = _workbench("ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", stderr=log)
    try:
        line = process.stdout.readline()  # printed only once the server answers
        url = f"http://127.0.0.1:{port}"
        assert url in line, line + (tmp_path / "server.log").read_text()[-2000:]
        assert answers(url)
        assert _server_pids(port)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:  # a failed assertion above: still stop the server (SIGKILL would orphan it)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    assert process.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while _server_pids(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _server_pids(port) == []
    assert not answers(url)


def test_sweep_slots_split_the_cores_for_every_threading_library(monkeypatch):
    from workbench.sweeps.slots import THREAD_VARIABLES, plan_slots

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for slot in plan_slots(None, slots=2, cpu_count=4, gpu_count=0):
        assert slot.threads == 2 and all(slot.env[name] == "2" for name in THREAD_VARIABLES)
        assert slot.env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU slot sees no GPU
    gpu = plan_slots("1", gpu_count=2, cpu_count=8)
    assert [(s.env["CUDA_VISIBLE_DEVICES"], s.env["OMP_NUM_THREADS"]) for s in gpu] == [("1", "8")]
