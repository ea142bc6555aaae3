"""One writer per run: the process training (or evaluating into) a run holds its lease.

Two `workbench run --resume RUN` at once both resumed, and their steps were logged
twice; a `--resume` while the original process still trained resumed it too. The
lease has two halves:

* a lock file `<train.out_dir>/<run id>/.lease` held with `flock` for as long as
  the process works on the run (the kernel drops it when the process dies, even
  by kill -9), holding who owns it;
* the MLflow tag `workbench.owner` (host, pid, since, heartbeat), refreshed every
  `heartbeat_s()` seconds, for a writer on another host or another `train.out_dir`.

A second writer is refused in one line naming the owner. An owner that is gone is
taken over: the lock is free and the tag names a process that is not alive on this
host, or (another host) its heartbeat is older than `stale_s()`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench import tags as tag
from workbench.errors import ConfigError
from workbench.pids import pid_alive

OWNER_TAG = f"{tag.PREFIX}owner"
LEASE_FILE = ".lease"
HEARTBEAT_ENV = "WORKBENCH_LEASE_HEARTBEAT_S"
STALE_ENV = "WORKBENCH_LEASE_STALE_S"


def heartbeat_s() -> float:
    return float(os.environ.get(HEARTBEAT_ENV) or 30.0)


def stale_s() -> float:
    """A heartbeat older than this (default four heartbeats) is a dead owner's."""
    return float(os.environ.get(STALE_ENV) or 4 * heartbeat_s())


class RunBusy(ConfigError):
    """Another live process owns the run (exit code 2: nothing was changed)."""


@dataclass
class Owner:
    host: str
    pid: int
    since: float
    heartbeat: float

    @classmethod
    def me(cls) -> Owner:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now)

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        try:
            data = json.loads(text or "")
            return cls(str(data["host"]), int(data["pid"]), float(data["since"]), float(data["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.host} pid {self.pid} since {since}"

    def alive(self) -> bool:
        """Is this owner still working? Here: its process lives (and beats); elsewhere: it beat lately."""
        if self.host == socket.gethostname() and self.pid == os.getpid():
            return False  # ourselves (a lease left by this very process)
        fresh = time.time() - self.heartbeat < stale_s()
        if self.host == socket.gethostname():
            return pid_alive(self.pid) and fresh
        return fresh


def _refusal(run_id: str, owner: Owner | None, doing: str) -> RunBusy:
    who = owner.describe() if owner else "another process"
    return RunBusy(
        f"run {run_id} is in use: {who} is working on it; {doing} refused and the run is left as it is "
        f"(wait for it to end, or stop that process: its lease is taken over once it is gone)"
    )


class RunLease:
    """Context manager; `acquire(run_id)` inside takes the lease (or raises RunBusy), leaving releases it.
    `mlflow_client` may be a function returning the client: the store is opened only when a lease is
    taken (a run refused before it starts creates no store)."""

    def __init__(self, out_dir: str | Path, mlflow_client: Any | None, doing: str = "--resume") -> None:
        self.out_dir = Path(out_dir).absolute()
        self._client = mlflow_client
        self.doing = doing
        self.run_id: str | None = None
        self._fd: int | None = None
        self._folder: Path | None = None
        self._made: Path | None = None  # the topmost folder made for the lease (removed again if empty)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLease:
        return self

    @property
    def client(self) -> Any | None:
        if callable(self._client) and not hasattr(self._client, "get_run"):
            self._client = self._client()
        return self._client

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, run_id: str) -> None:
        owner = Owner.me()
        self._lock_file(run_id, owner)
        try:
            recorded = Owner.parse(self._tags(run_id).get(OWNER_TAG))
            if recorded is not None and recorded.alive():  # on another host, or another train.out_dir
                raise _refusal(run_id, recorded, self.doing)
            self.run_id = run_id
            self._write_tag(owner)
        except BaseException:
            self._unlock()
            raise
        if self.client is not None:
            self._thread = threading.Thread(target=self._beat, args=(owner,), name="run-lease", daemon=True)
            self._thread.start()

    def _lock_file(self, run_id: str, owner: Owner) -> None:
        folder = self.out_dir / run_id
        while True:
            try:
                self._made = self._made or _first_missing(folder)
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return  # an unwritable train.out_dir: the tag alone (the run itself reports the folder)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                self._drop_folder(folder)
                raise _refusal(run_id, Owner.parse(text), self.doing) from None
            try:
                if os.fstat(fd).st_ino == os.stat(folder / LEASE_FILE).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the previous owner removed the file as we opened it: lock the new one
        self._folder = folder
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.dump().encode(), 0)
        self._fd = fd

    def _tags(self, run_id: str) -> dict[str, str]:
        if self.client is None:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.tags)
        except Exception:  # noqa: BLE001 - no such run yet / unreachable: the caller reports it
            return {}

    def _write_tag(self, owner: Owner) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_tag(self.run_id, OWNER_TAG, owner.dump())

    def _beat(self, owner: Owner) -> None:
        while not self._stop.wait(heartbeat_s()):
            owner.heartbeat = time.time()
            try:
                self._write_tag(owner)
            except Exception:  # noqa: BLE001 - a missed beat; the next one tries again
                pass

    def release(self) -> None:
        """Stop the heartbeat, remove the tag and the lock file (best effort: never raises)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.run_id is not None and self.client is not None:
            try:
                self.client.delete_tag(self.run_id, OWNER_TAG)
            except Exception:  # noqa: BLE001 - a stale tag is taken over by the next writer
                pass
        self._unlock()
        self.run_id = None

    def _unlock(self) -> None:
        if self._fd is None:
            return
        folder = self._folder
        try:
            (folder / LEASE_FILE).unlink(missing_ok=True)  # unlinked while still locked: no one else holds it now
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._drop_folder(folder)

    def _drop_folder(self, folder: Path) -> None:
        """Remove the folders made for the lease alone, innermost first, while they are empty."""
        if self._made is None:
            return
        for path in [folder, *folder.parents]:
            try:
                path.rmdir()
            except OSError:
                return
            if path == self._made:
                return


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (None: it exists)."""
    missing = None
    for path in [folder, *folder.parents]:
        if path.exists():
            return missing
        missing = path
    return missing
