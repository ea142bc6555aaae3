"""Where a report goes, spelled once: the local folder (`--out`'s default) and, on a sweep's
MLflow parent run, the artifact folder and the sweep's page. The sweep writes the page's
address into its Optuna study before any report exists (`sweeps/sweep.py`); `workbench report
ablations` then logs the page there (`reports/parent_summary.py`), so both must agree."""

from pathlib import Path

OUT_DIR = Path("reports")  # `workbench report ... --out` and `workbench demo --out` default
ARTIFACT_DIR = "reports"  # on a run (a sweep's parent): the report's files
PAGE = "report.html"  # a sweep's own page: in <out>/<sweep>/ and in ARTIFACT_DIR of its parent run
ATTENTION_DIR = "attention"  # attention reports: <out>/attention/<runs>/, ARTIFACT_DIR/attention/<runs>/


def page_artifact(run_id: str) -> str:
    """The `runs:/` address of a sweep's page on its parent run (once a report has logged it)."""
    return f"runs:/{run_id}/{ARTIFACT_DIR}/{PAGE}"
