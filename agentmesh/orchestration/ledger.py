"""The router's durable ledger: every task's state, written before the router acts on it.

One row per task holding the task's whole state as JSON. A 5-step task is a few KB, and SQLite in
WAL mode with synchronous=NORMAL commits such a row in well under a millisecond, so writing the
whole state each time is simpler than a normalised schema and fast enough. A crash loses nothing
that was acted on: the state is committed before the assignment or event goes out, and on restart
every unfinished task is loaded and resumed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from agentmesh.orchestration.state import Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    cleared INTEGER NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS tasks_unfinished;
CREATE INDEX IF NOT EXISTS tasks_lifecycle ON tasks(cleared, finished_at);
"""

# One index serves the restart's query and the three that housekeeping runs every few seconds over
# days of finished tasks, each a range of it rather than a scan of the table; one index also
# keeps the page writes of each hot-path commit down (an unfinished task is never cleared).
UNFINISHED = "SELECT state FROM tasks WHERE cleared = 0 AND finished_at IS NULL"
FINISHED_SINCE = "SELECT state FROM tasks WHERE cleared = 0 AND finished_at >= ?"
RESULTS_TO_CLEAR = "SELECT task_id FROM tasks WHERE cleared = 0 AND finished_at < ?"
PRUNE = "DELETE FROM tasks WHERE cleared = 1 AND finished_at < ?"


_UPSERT = (
    "INSERT INTO tasks(task_id, status, state, updated_at, finished_at) VALUES (?,?,?,?,?) "
    "ON CONFLICT(task_id) DO UPDATE SET status=excluded.status, state=excluded.state, "
    "updated_at=excluded.updated_at, finished_at=excluded.finished_at"
)


class Ledger:
    """``background_checkpoint``: the owner calls ``checkpoint()`` (from a worker thread) instead of
    SQLite copying the WAL into the database, with its fsync, inside whichever commit crosses the
    WAL's size threshold; that halves the average commit on the router's hot path."""

    def __init__(self, path: str | Path, *, background_checkpoint: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if background_checkpoint:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()  # close() must not pull the connection from under it

    def save(self, task: Task) -> None:
        self.save_many([task])

    def save_many(self, tasks: Iterable[Task]) -> None:
        """Commit several tasks' states in one transaction."""
        now = time.time()
        rows = [(t.task_id, t.status, t.model_dump_json(), now, t.finished_at) for t in tasks]
        if not rows:
            return
        if len(rows) == 1:
            self._db.execute(_UPSERT, rows[0])  # autocommit: one statement is one transaction
            return
        # In autocommit mode each row of an executemany would be a transaction (and a WAL write)
        # of its own.
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_UPSERT, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, task_id: str) -> Task | None:
        row = self._db.execute("SELECT state FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return Task.model_validate_json(row[0]) if row else None

    def exists(self, task_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)).fetchone() is not None

    def unfinished(self) -> Iterator[Task]:
        for (state,) in self._db.execute(UNFINISHED).fetchall():
            yield Task.model_validate_json(state)

    def finished_since(self, since: float) -> Iterator[Task]:
        rows = self._db.execute(FINISHED_SINCE, (since,)).fetchall()
        for (state,) in rows:
            yield Task.model_validate_json(state)

    def results_to_clear(self, before: float) -> list[str]:
        """Finished tasks whose retained result is older than ``before`` and still on the broker."""
        rows = self._db.execute(RESULTS_TO_CLEAR, (before,)).fetchall()
        return [tid for (tid,) in rows]

    def mark_cleared(self, task_id: str) -> None:
        self._db.execute("UPDATE tasks SET cleared = 1 WHERE task_id=?", (task_id,))

    def prune(self, before: float) -> int:
        cur = self._db.execute(PRUNE, (before,))
        return cur.rowcount

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database (PASSIVE: never waits for the writer).
        Blocking (it fsyncs): call it from a worker thread, one call at a time."""
        if self.path == ":memory:":
            return
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self._db.close()
