"""The router's durable ledger: every task's state, written before the router acts on it.

One row per task holding the task's whole state as JSON. A 5-step task is a few KB, so writing the
whole state each time is simpler than a normalised schema. A crash loses nothing that was acted
on: the state is written before the assignment or event goes out, and on restart every unfinished
task is loaded and resumed.

With ``pending_file`` (the router's setting) a save is one ``write()`` of the states to an
append-only file beside the database, ``<db>-pending``, and ``apply_pending()`` moves them into
SQLite later, many tasks in one transaction. Two SQLite commits per task were the largest part of
the router's time on a task's path: 50-150 us each on a router woken from idle, against a few us
for the write. The guarantee is the one SQLite's WAL gives with synchronous=NORMAL: the bytes are
in the kernel when the call returns, so a killed process loses nothing (a power cut can lose the
last writes, as it can lose the WAL's). The next owner replays the file into SQLite on open.
Readers in other processes (``agentmesh trace``) read the file too, so they see the newest state.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from agentmesh.errors import ConfigError
from agentmesh.orchestration.state import Task

log = logging.getLogger(__name__)

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


# A row as the pending file holds it: (task_id, status, state JSON, updated_at, finished_at).
_Row = tuple[str, str, str, float, float | None]


def _line(row: _Row) -> str:
    # Tab-separated with the state last: IDs and statuses hold no tabs, and JSON escapes them (and
    # newlines) inside strings, so one line is one save and needs no escaping of its own.
    task_id, status, state, updated_at, finished_at = row
    finished = "" if finished_at is None else repr(finished_at)
    return f"{task_id}\t{status}\t{updated_at!r}\t{finished}\t{state}\n"


def read_pending(path: str) -> dict[str, _Row]:
    """The newest pending row of each task in a pending file (empty when there is none). A last
    line cut short (the disk filled up mid-write) is skipped with a warning."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    rows: dict[str, _Row] = {}
    lines = data.split(b"\n")
    if lines[-1]:
        log.warning("ledger %s: skipped an incomplete last line (%d bytes)", path, len(lines[-1]))
    for number, raw in enumerate(lines[:-1], 1):
        try:
            task_id, status, updated, finished, state = raw.decode().split("\t", 4)
            Task.model_validate_json(state)  # a bad state would stop every later restart
            rows[task_id] = (task_id, status, state, float(updated), float(finished) if finished else None)
        except ValueError as exc:  # pydantic's ValidationError is one
            log.warning("ledger %s: skipped line %d, which is not a saved task: %s", path, number, exc)
    return rows


class _IdFilter:
    """A Bloom filter of task IDs: "surely not in the ledger" in a microsecond, so a new task's
    duplicate check skips SQLite (30-40 us on a router woken from idle). 8 MiB; at ten million IDs
    one lookup in 25 still goes to SQLite, which stays the answer whenever the filter says maybe.
    Python's str hash is salted per process, which is fine: the filter lives as long as its Ledger."""

    def __init__(self, bits_log2: int = 26) -> None:
        self._mask = (1 << bits_log2) - 1
        self._bits = bytearray(1 << max(0, bits_log2 - 3))

    def _positions(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        a, b, m = h & 0xFFFFFFFF, (h >> 32) | 1, self._mask
        return a & m, (a + b) & m, (a + 2 * b) & m, (a + 3 * b) & m

    def add(self, key: str) -> None:
        bits = self._bits
        for p in self._positions(key):
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        bits = self._bits
        return all(bits[p >> 3] >> (p & 7) & 1 for p in self._positions(key))


class Ledger:
    """``background_checkpoint``: the owner calls ``checkpoint()`` (from a worker thread) instead of
    SQLite copying the WAL into the database, with its fsync, inside whichever commit crosses the
    WAL's size threshold; that halves the average commit on the router's hot path.

    ``pending_file``: saves go to ``<path>-pending`` first and the owner calls ``apply_pending()``
    every so often (see the module's docstring). Only one Ledger per database may use it: it
    replays and truncates the file. Without it, a Ledger only reads the file (``get``). Only the
    owner keeps a filter of the IDs for ``exists``: another process's writes would not be in it."""

    def __init__(
        self,
        path: str | Path,
        *,
        background_checkpoint: bool = False,
        pending_file: bool = False,
        id_filter_bits_log2: int = 26,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self.pending_path = None if self.path == ":memory:" else self.path + "-pending"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if background_checkpoint:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()  # close() must not pull the connection from under it
        self._pending: dict[str, _Row] = {}
        self._pending_fd: int | None = None
        self._pending_bytes = 0  # the file's length
        self._ids: _IdFilter | None = None
        if pending_file and self.pending_path is not None:
            fd = os.open(self.pending_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # Two owners would replay and truncate each other's writes (two routers given one
                # ledger): the second is refused. The lock goes with the process, even on SIGKILL.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._pending_fd = fd
                # What a killed owner wrote goes into SQLite before anything is read.
                self._pending = read_pending(self.pending_path)
                self.apply_pending()
                os.ftruncate(fd, 0)  # also when it held only lines that were skipped
                self._ids = _IdFilter(id_filter_bits_log2)
                for (task_id,) in self._db.execute("SELECT task_id FROM tasks"):
                    self._ids.add(task_id)
            except BaseException as exc:
                os.close(fd)
                self._db.close()
                if isinstance(exc, BlockingIOError):
                    raise ConfigError(
                        "the ledger is in use by another router: one with this router_id is running "
                        "already (`agentmesh up` in another terminal?); stop it, or give each router "
                        "its own ledger",
                        path=self.path,
                    ) from None
                raise

    def save(self, task: Task) -> None:
        self.save_many([task])

    def save_many(self, tasks: Iterable[Task]) -> None:
        """Write several tasks' states at once: one write to the pending file, or one transaction."""
        now = time.time()
        rows: list[_Row] = [(t.task_id, t.status, t.model_dump_json(), now, t.finished_at) for t in tasks]
        if not rows:
            return
        if self._pending_fd is not None:
            data = "".join(_line(row) for row in rows).encode()
            try:
                written = 0
                while written < len(data):  # a regular file takes it all unless the disk is full
                    written += os.write(self._pending_fd, data[written:])
            except OSError:
                # No half line may stay for the next save to be appended to.
                os.ftruncate(self._pending_fd, self._pending_bytes)
                raise
            self._pending_bytes += written
            self._pending.update((row[0], row) for row in rows)
            return
        self._upsert(rows)

    def _upsert(self, rows: list[_Row]) -> None:
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

    def apply_pending(self) -> int:
        """Move the pending file's states into SQLite in one transaction, then empty the file.
        Returns how many tasks moved. A crash in between only makes the next open apply them again."""
        if self._pending_fd is None or not self._pending:
            return 0
        rows = list(self._pending.values())
        self._upsert(rows)
        if self._ids is not None:  # here rather than on each save: exists() asks _pending first
            for row in rows:
                self._ids.add(row[0])
        os.ftruncate(self._pending_fd, 0)
        self._pending_bytes = 0
        self._pending.clear()
        return len(rows)

    def get(self, task_id: str) -> Task | None:
        row = self._pending.get(task_id)
        if row is None and self._pending_fd is None and self.pending_path is not None:
            row = read_pending(self.pending_path).get(task_id)  # another process owns the file
        if row is not None:
            return Task.model_validate_json(row[2])
        found = self._db.execute("SELECT state FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return Task.model_validate_json(found[0]) if found else None

    def exists(self, task_id: str) -> bool:
        if task_id in self._pending:
            return True
        if self._ids is not None and task_id not in self._ids:
            return False
        return self._db.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)).fetchone() is not None

    # The queries below read SQLite alone, so the pending states go in first.

    def unfinished(self) -> Iterator[Task]:
        self.apply_pending()
        for (state,) in self._db.execute(UNFINISHED).fetchall():
            yield Task.model_validate_json(state)

    def finished_since(self, since: float) -> Iterator[Task]:
        self.apply_pending()
        rows = self._db.execute(FINISHED_SINCE, (since,)).fetchall()
        for (state,) in rows:
            yield Task.model_validate_json(state)

    def results_to_clear(self, before: float) -> list[str]:
        """Finished tasks whose retained result is older than ``before`` and still on the broker."""
        self.apply_pending()
        rows = self._db.execute(RESULTS_TO_CLEAR, (before,)).fetchall()
        return [tid for (tid,) in rows]

    def mark_cleared(self, task_id: str) -> None:
        self.apply_pending()
        self._db.execute("UPDATE tasks SET cleared = 1 WHERE task_id=?", (task_id,))

    def prune(self, before: float) -> int:
        self.apply_pending()
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
        if self._pending_fd is not None:
            # The empty file stays: removing it would let a router that opened it meanwhile lock
            # a file no one else can find, and replay.
            self.apply_pending()
            os.close(self._pending_fd)
            self._pending_fd = None
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self._db.close()
