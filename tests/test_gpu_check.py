"""benchmarks/gpu_check.py: its --dry-run (what a CPU-only machine can check) and its concurrency count."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_checks_imports_paper_model_slot_plan_and_configs():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    *body, verdict = done.stdout.strip().splitlines()
    result = json.loads("\n".join(body))
    assert result["dry_run"] is True and verdict.startswith("GPU CHECK DRY RUN OK")
    assert all(result[name]["ok"] for name in ("imports", "paper_model", "slot_plan", "tiny_configs"))
    assert 300 < result["paper_model"]["parameters_m"] < 400  # ViT-B/16 + BERT-base + 6 fusion layers + heads
    assert [s["name"] for s in result["slot_plan"]["slots"]] == ["gpu0.0", "gpu0.1"]
    assert result["tiny_configs"]["sweep_trials"] == 4
    assert "paper_step" not in result  # nothing that needs a GPU ran


def test_max_concurrent_counts_overlapping_trials():
    gpu_check = _module()
    assert gpu_check.max_concurrent([(0, 10), (1, 9), (10, 20), (11, 19)]) == 2  # two waves of two
    assert gpu_check.max_concurrent([(0, 5), (5, 10), (10, 15), (15, 20)]) == 1  # back to back: serial
    assert gpu_check.max_concurrent([(0, 10), (1, 10), (2, 10), (3, 10)]) == 4


def test_a_failing_check_is_recorded_and_fails_the_verdict():
    gpu_check = _module()
    results = {}
    gpu_check._stage(results, "boom", lambda: 1 / 0)
    gpu_check._stage(results, "fine", lambda: {"value": 1})
    assert results["boom"]["ok"] is False and "ZeroDivisionError" in results["boom"]["error"]
    assert results["fine"] == {"ok": True, "value": 1, "seconds": results["fine"]["seconds"]}
    assert gpu_check.verdict(results, dry_run=True) == "GPU CHECK FAILED: boom (see the JSON's error and trace fields)"
