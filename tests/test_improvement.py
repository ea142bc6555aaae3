"""The across-tasks aggregate (`reports/improvement.py`): probability of improvement and its
stratified bootstrap CI, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.reports.improvement import improvement, probability, table_improvements, task_metrics


def test_probability_counts_wins_and_half_ties():
    assert probability([3, 4], [1, 2]) == 1.0
    assert probability([1, 2], [1, 2]) == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)
    assert probability([0], [1, 2]) == 0.0


def test_improvement_averages_tasks_equally_and_bootstraps_within_each():
    # task 1: always wins (P 1); task 2, on another scale: always loses (P 0) -> 0.5
    found = improvement(
        [np.array([10.0, 11.0, 12.0]), np.array([0.1, 0.2, 0.3])],
        [np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.6, 0.7])],
    )
    assert found.probability == 0.5 and found.tasks == 2
    assert found.ci_low == found.ci_high == 0.5  # resampling within a task cannot change a clean win or loss
    mixed = improvement([np.array([1.0, 3.0, 5.0]), np.array([2.0, 4.0])], [np.array([2.0, 4.0]), np.array([1.0, 3.0])])
    assert mixed.probability == pytest.approx((3 / 6 + 3 / 4) / 2)
    assert mixed.ci_low < mixed.probability < mixed.ci_high
    assert improvement([np.array([1.0, 3.0, 5.0])], [np.array([2.0, 4.0])], seed=0) == improvement(
        [np.array([1.0, 3.0, 5.0])], [np.array([2.0, 4.0])], seed=0
    )  # deterministic


def test_one_metric_per_task_and_none_for_a_single_task():
    lower = lambda m: "loss" in m  # noqa: E731
    metrics = ["eval/retrieval/tr_r1", "eval/retrieval/r_mean", "eval/vqa/acc", "train/loss/total"]
    assert task_metrics(metrics, lower) == ["eval/retrieval/tr_r1", "eval/vqa/acc"]
    wide = pd.DataFrame({("eval/vqa/acc", "base"): [1.0, 2.0], ("eval/vqa/acc", "v"): [3.0, 4.0]})
    assert table_improvements(wide, ["eval/vqa/acc"], ["base", "v"], "base") == {}
