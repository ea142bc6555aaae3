"""Reports from the MLflow store; never from the training loop or sweep code.

Ablation reports read MLflow only. The attention report also rebuilds a finished run's
model from its checkpoint (`pretrainer`, `data`, `evaluate.attention`): see INTERFACES.md "Layers".

* `ablations.report_ablations(sweeps, ...)` — per sweep: tables (md, csv, latex, html),
  the figure for the sweep's shape and training curves, the sweep's page, and the
  summary on its MLflow parent run. `store` (+ `sql_read` on SQL stores) reads the runs,
  `stats` summarises them (`significance`: tests, Holm, CI, power; `references`: the
  reference row; `cost`: device-hours), `cells` decides what each cell says,
  `tables`/`latex`/`figures`/`sweep_page` render, `parent_summary` logs to MLflow,
  `outputs` writes atomically and builds the index.
* `attention_figure.report_attention(run_id, compare, n=...)` — per-word cross-attention
  and Grad-CAM maps and attention-in-object scores (`attention_maps` computes them).
* `ui.serve(...)` — the MLflow UI on the project's store, bound to 127.0.0.1.

Nothing is imported here: each command imports only the module it needs.
"""
