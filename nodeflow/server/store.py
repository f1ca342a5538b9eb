"""The persistent run queue and run history, kept in SQLite.

Why SQLite: a server killed with SIGKILL (or OOM-killed mid-generation) and restarted must lose no
submitted run. Every state change is one committed transaction, so after a restart:

* queued runs are still queued, in the same order (the order lives in integer columns, not memory);
* a run that was executing is marked ``"interrupted"`` by :meth:`RunStore.recover`, *not* silently
  requeued: it may already have written image files or other half-done side effects, and running
  it again could duplicate them or repeat an expensive generation the user no longer wants. The
  user sees why it stopped and decides whether to resubmit;
* finished, failed and cancelled runs keep their outputs and errors for the history view.

Durability: the journal is WAL with ``synchronous=FULL``. WAL with ``NORMAL`` already survives a
*process* crash (committed pages are in the WAL file, which the OS keeps), and only an OS crash or
power cut could lose the last transactions. We pay the extra fsync per commit anyway because a
submission is acknowledged to a client that then forgets it: losing it silently is worse than a
millisecond per submit, and runs arrive at human rates, not thousands per second.

One :class:`RunStore` is shared by the aiohttp loop thread and the executor worker thread, so the
connection is opened with ``check_same_thread=False`` and every use holds a :class:`threading.Lock`
(a sqlite3 connection is not safe for concurrent use). Transactions that read then write (claim,
cancel) also run under ``BEGIN IMMEDIATE``, so even a second process on the same file cannot claim
the same run twice; one server per database file is still the supported setup, because
:meth:`RunStore.recover` assumes every ``"running"`` row belongs to a dead process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"

#: Every status a run can have.
STATUSES = frozenset({QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED})
#: Statuses :meth:`RunStore.finish` accepts: the terminal ones.
FINAL_STATUSES = frozenset({FINISHED, FAILED, CANCELLED, INTERRUPTED})

# Queue order is (priority, seq): front submissions get the smaller priority, so they run before
# every normal run, and seq (monotonic, AUTOINCREMENT never reuses a value) keeps each group FIFO.
_PRIORITY_FRONT = 0
_PRIORITY_NORMAL = 1

INTERRUPTED_MESSAGE = (
    "The server stopped while this run was executing. It was not restarted automatically because "
    "it may have partly run (written files or other side effects); resubmit it to run it again."
)

_SCHEMA = """
CREATE TABLE runs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT    NOT NULL UNIQUE,
    priority     INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    workflow     TEXT    NOT NULL,
    targets      TEXT,
    submitted_at REAL    NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    outputs      TEXT    NOT NULL DEFAULT '{}',
    error        TEXT
);
CREATE INDEX runs_queue_order ON runs (status, priority, seq);
"""

_COLUMNS = (
    "run_id, status, workflow, targets, submitted_at, started_at, finished_at, outputs, error"
)


@dataclass(frozen=True)
class RunRecord:
    """One submitted run as stored: a snapshot, so later store changes never mutate it."""

    run_id: str
    status: str
    workflow: dict[str, Any]
    targets: list[str] | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    outputs: dict[str, Any]
    error: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (deep-copied, so callers may mutate it freely)."""
        return asdict(self)

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> RunRecord:
        run_id, status, workflow, targets, submitted, started, finished, outputs, error = row
        return cls(
            run_id=run_id,
            status=status,
            workflow=json.loads(workflow),
            targets=None if targets is None else json.loads(targets),
            submitted_at=submitted,
            started_at=started,
            finished_at=finished,
            outputs=json.loads(outputs),
            error=None if error is None else json.loads(error),
        )


class RunStore:
    """The run queue and history in one SQLite file, safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating if missing) the database at ``path`` and bring its schema up to date."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each method is exactly one
        # transaction and nothing lingers uncommitted between calls.
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Create the schema on a new file; refuse files written by a newer nodeflow."""
        with self._transaction():
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has run-store schema version {version}, newer than this "
                    f"nodeflow understands ({SCHEMA_VERSION}); upgrade nodeflow"
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before any read."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def submit(
        self,
        workflow: dict[str, Any],
        targets: list[str] | None = None,
        front: bool = False,
        run_id: str | None = None,
    ) -> tuple[RunRecord, int]:
        """Queue a run; return its record and 0-based queue position once committed.

        ``run_id`` is the caller's id for it (ComfyUI clients choose their prompt ids); one that
        is taken raises ``ValueError``. By default a fresh one is made.

        ``front=True`` runs go ahead of every normal queued run but stay FIFO among themselves
        (not a stack): two urgent submissions run in the order they were made, which is what a
        user who clicks "run next" twice expects.
        """
        # Serialise first: a non-JSON workflow fails here, with nothing written. The record gets
        # its own decoded copy so it never aliases the caller's (mutable) dict.
        workflow_text = json.dumps(workflow)
        targets_text = None if targets is None else json.dumps(list(targets))
        record = RunRecord(
            run_id=run_id or uuid.uuid4().hex,
            status=QUEUED,
            workflow=json.loads(workflow_text),
            targets=None if targets is None else list(targets),
            submitted_at=time.time(),
            started_at=None,
            finished_at=None,
            outputs={},
            error=None,
        )
        priority = _PRIORITY_FRONT if front else _PRIORITY_NORMAL
        with self._lock, self._transaction():
            if self._get_by("run_id", record.run_id) is not None:
                raise ValueError(f"run id {record.run_id!r} is taken")
            self._db.execute(
                "INSERT INTO runs (run_id, priority, status, workflow, targets, submitted_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (record.run_id, priority, QUEUED, workflow_text, targets_text, record.submitted_at),
            )
            position = self._position(record.run_id)
        assert position is not None  # just inserted as queued, inside the same transaction
        return record, position

    def claim_next(self) -> RunRecord | None:
        """Atomically mark the first queued run ``"running"`` and return it; None if none queued."""
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT seq FROM runs WHERE status = ? ORDER BY priority, seq LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE runs SET status = ?, started_at = ? WHERE seq = ?",
                (RUNNING, time.time(), row[0]),
            )
            return self._get_by("seq", row[0])

    def finish(
        self,
        run_id: str,
        status: str,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Record a run's end: its final status, outputs, error and ``finished_at``.

        Raises ValueError for a status that is not final or a run id the store does not know, so a
        worker bug shows up at once instead of as a run stuck "running" forever.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"invalid final status {status!r}; expected one of {sorted(FINAL_STATUSES)}"
            )
        outputs_text = json.dumps(outputs or {})
        error_text = None if error is None else json.dumps(error)
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "UPDATE runs SET status = ?, outputs = ?, error = ?, finished_at = ?"
                " WHERE run_id = ?",
                (status, outputs_text, error_text, time.time(), run_id),
            )
            if cursor.rowcount == 0:
                raise ValueError(f"unknown run id {run_id!r}")

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued run (True); a running, finished or unknown run is left alone (False).

        Stopping a running run needs the executor's cooperation, so it is not this store's job.
        """
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ? AND status = ?",
                (CANCELLED, time.time(), run_id, QUEUED),
            )
            return cursor.rowcount == 1

    def get(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        with self._lock:
            return self._get_by("run_id", run_id)

    def queue(self) -> list[RunRecord]:
        """Queued runs in the order :meth:`claim_next` will hand them out."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE status = ? ORDER BY priority, seq", (QUEUED,)
            ).fetchall()
        return [RunRecord._from_row(row) for row in rows]

    def queued_ids(self) -> list[str]:
        """The ids of :meth:`queue`, without reading each run's workflow."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id FROM runs WHERE status = ? ORDER BY priority, seq", (QUEUED,)
            ).fetchall()
        return [row[0] for row in rows]

    def position(self, run_id: str) -> int | None:
        """0-based position among queued runs (0 runs next); None if the run is not queued."""
        with self._lock:
            return self._position(run_id)

    def history(self, limit: int = 100, status: str | None = None) -> list[RunRecord]:
        """Up to ``limit`` runs of every status (or only ``status``), newest submission first.

        Ordered by ``seq`` rather than ``submitted_at`` so a wall-clock jump cannot reorder it.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"invalid status {status!r}; expected one of {sorted(STATUSES)}")
        where, params = ("WHERE status = ?", (status,)) if status is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM runs {where} ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [RunRecord._from_row(row) for row in rows]

    def recover(self) -> list[str]:
        """At startup: mark runs left ``"running"`` by a dead process ``"interrupted"``.

        They are not requeued (see the module docstring): they may have half-run. Returns their
        ids so the server can log or announce them. Call it before the worker claims anything,
        since every ``"running"`` row is assumed to be orphaned.
        """
        error = json.dumps({"message": INTERRUPTED_MESSAGE})
        with self._lock, self._transaction():
            ids = [
                row[0]
                for row in self._db.execute(
                    "SELECT run_id FROM runs WHERE status = ? ORDER BY seq", (RUNNING,)
                )
            ]
            self._db.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE status = ?",
                (INTERRUPTED, error, time.time(), RUNNING),
            )
        return ids

    def close(self) -> None:
        """Close the connection; every change is already committed, so nothing is lost."""
        with self._lock:
            self._db.close()

    def _get_by(self, column: str, value: object) -> RunRecord | None:
        # column is one of our own literals ("seq", "run_id"), never user input.
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE {column} = ?", (value,)
        ).fetchone()
        return None if row is None else RunRecord._from_row(row)

    def _position(self, run_id: str) -> int | None:
        row = self._db.execute(
            "SELECT priority, seq FROM runs WHERE run_id = ? AND status = ?", (run_id, QUEUED)
        ).fetchone()
        if row is None:
            return None
        priority, seq = row
        (ahead,) = self._db.execute(
            "SELECT COUNT(*) FROM runs WHERE status = ?"
            " AND (priority < ? OR (priority = ? AND seq < ?))",
            (QUEUED, priority, priority, seq),
        ).fetchone()
        return int(ahead)
