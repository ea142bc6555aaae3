"""Reports from the MLflow store only (never from training or sweep code).

* `ablations.report_ablations(sweeps, ...)` — per sweep: tables (md, csv, latex, html),
  training curves and mask-ratio figures; `store` reads the runs, `stats` summarises
  them, `tables`/`figures` render, `outputs` writes atomically and builds the index.
* `attention_figure.report_attention(run_id, compare, n=...)` — per-word cross-attention
  and Grad-CAM maps and attention-in-object scores (`attention_maps` computes them).
* `ui.serve(...)` — the MLflow UI on the project's store, bound to 127.0.0.1.

Nothing is imported here: each command imports only the module it needs.
"""
