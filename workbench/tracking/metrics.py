"""Step metrics buffered and sent in batches (``MlflowClient.log_batch``) from a background
thread, so tracking stays a small share of step time."""

from __future__ import annotations

import queue
import threading
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from workbench.errors import RunError


class MetricLogger:
    """Buffers step metrics and sends them with ``log_batch`` from a worker thread.

    ``log`` never blocks on the network/database; ``close`` flushes everything, so a
    metric handed to the logger is never lost when a run ends (also on failure). A batch
    the store refused (locked longer than `store_retry` waits) is kept and sent again
    before the next one; what still cannot be sent at ``close`` is a one-line RunError.
    """

    def __init__(self, mlflow_client: MlflowClient, run_id: str, flush_every: int = 200):
        self._client = mlflow_client
        self._run_id = run_id
        self._flush_every = flush_every
        self._pending: list[Metric] = []
        self._queue: queue.Queue[list[Metric] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._unsent: list[Metric] = []  # refused by the store: sent again with the next batch
        self._thread = threading.Thread(target=self._work, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if len(self._pending) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            self._send(self._unsent + batch)

    def _send(self, batch: list[Metric]) -> None:
        self._unsent = []
        for start in range(0, len(batch), 1000):  # MLflow's per-call metric limit
            try:
                self._client.log_batch(self._run_id, metrics=batch[start : start + 1000])
            except Exception as err:  # noqa: BLE001 - kept, sent again; reported at close
                self._error, self._unsent = err, batch[start:]
                return
        self._error = None

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()
        if self._unsent:
            self._send(self._unsent)  # one last try (waits out a lock again)
        if self._unsent:
            raise RunError(
                f"{len(self._unsent)} metric values of run {self._run_id} could not be written to the MLflow "
                f"store: {' '.join(str(self._error).split())[:300]}"
            )
