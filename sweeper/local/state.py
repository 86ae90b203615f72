"""The local service's state: files, jobs, events and checkpoints in one SQLite file.

SQLite (stdlib ``sqlite3``) in WAL mode makes every write a transaction, so a SIGKILL at any
instant leaves the last committed state; nothing is half-written. Objects are kept as the JSON the
API serves, plus a ``seq`` column that orders lists. One connection, guarded by a lock, is shared
by the HTTP threads and the training workers; every call is one short transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    obj TEXT NOT NULL, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, obj TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, obj TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, step_number INTEGER NOT NULL, obj TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS checkpoints_job ON checkpoints (job_id, seq);
"""


class State:
    """Typed access to ``state.db`` inside the service's state folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            folder / "state.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against process death
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> Obj | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _many(self, sql: str, *args: Any) -> list[Obj]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [json.loads(r[0]) for r in rows]

    # --- files --------------------------------------------------------------------------------

    def add_file(self, obj: Obj, content: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (id, obj, content) VALUES (?, ?, ?)",
                (obj["id"], json.dumps(obj), content),
            )

    def file(self, file_id: str) -> Obj | None:
        return self._one("SELECT obj FROM files WHERE id = ?", file_id)

    def file_content(self, file_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT content FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def files(self, purpose: str | None, after: str | None, limit: int) -> list[Obj]:
        """Newest first; ``after`` is the id of the last file of the previous page."""
        sql = "SELECT obj FROM files WHERE (? IS NULL OR json_extract(obj, '$.purpose') = ?)"
        args: list[Any] = [purpose, purpose]
        if after is not None:
            sql += " AND seq < coalesce((SELECT seq FROM files WHERE id = ?), -1)"
            args.append(after)
        return self._many(sql + " ORDER BY seq DESC LIMIT ?", *args, limit)

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    # --- jobs ---------------------------------------------------------------------------------

    def add_job(self, obj: Obj, event: Obj) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, obj) VALUES (?, ?)", (obj["id"], json.dumps(obj)))
            self._insert_event(db, obj["id"], event)

    def job(self, job_id: str) -> Obj | None:
        return self._one("SELECT obj FROM jobs WHERE id = ?", job_id)

    def jobs(self, after: str | None, limit: int) -> list[Obj]:
        """Newest first."""
        if after is None:
            return self._many("SELECT obj FROM jobs ORDER BY seq DESC LIMIT ?", limit)
        return self._many(
            "SELECT obj FROM jobs WHERE seq < coalesce((SELECT seq FROM jobs WHERE id = ?), -1)"
            " ORDER BY seq DESC LIMIT ?",
            after,
            limit,
        )

    def active_jobs(self) -> list[Obj]:
        """Jobs not yet terminal, oldest first (the order to resume them in)."""
        return self._many(
            "SELECT obj FROM jobs WHERE json_extract(obj, '$.status')"
            " IN ('validating_files', 'queued', 'running') ORDER BY seq"
        )

    def count_jobs(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def update_job(
        self,
        job_id: str,
        change: Callable[[Obj], Obj | None],
        events: Sequence[Obj] = (),
        checkpoint: Obj | None = None,
        files: Sequence[tuple[Obj, bytes]] = (),
    ) -> Obj | None:
        """Apply ``change`` to the job in one transaction, with the rows that go with it.

        ``change`` gets the current object and returns the new one, or None to leave the job (and
        the events, checkpoint and files) untouched, e.g. because it was cancelled meanwhile.
        Returns the stored object, or None when nothing was written.
        """
        with self._tx() as db:
            row = db.execute("SELECT obj FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            new = change(json.loads(row[0]))
            if new is None:
                return None
            db.execute("UPDATE jobs SET obj = ? WHERE id = ?", (json.dumps(new), job_id))
            for event in events:
                self._insert_event(db, job_id, event)
            for obj, content in files:
                db.execute(
                    "INSERT INTO files (id, obj, content) VALUES (?, ?, ?)",
                    (obj["id"], json.dumps(obj), content),
                )
            if checkpoint is not None:
                db.execute(
                    "INSERT INTO checkpoints (id, job_id, step_number, obj) VALUES (?, ?, ?, ?)",
                    (checkpoint["id"], job_id, checkpoint["step_number"], json.dumps(checkpoint)),
                )
            return new

    # --- events and checkpoints ---------------------------------------------------------------

    @staticmethod
    def _insert_event(db: sqlite3.Connection, job_id: str, event: Obj) -> None:
        db.execute(
            "INSERT INTO events (id, job_id, obj) VALUES (?, ?, ?)",
            (event["id"], job_id, json.dumps(event)),
        )

    def add_event(self, job_id: str, event: Obj) -> None:
        with self._tx() as db:
            self._insert_event(db, job_id, event)

    def events(self, job_id: str, after: str | None, limit: int) -> list[Obj]:
        """Oldest first, as Nebius lists them."""
        return self._many(
            "SELECT obj FROM events WHERE job_id = ? AND seq > coalesce("
            "(SELECT seq FROM events WHERE id = ?), -1) ORDER BY seq LIMIT ?",
            job_id,
            after,
            limit,
        )

    def checkpoints(self, job_id: str, after: str | None, limit: int) -> list[Obj]:
        """Oldest first (by step): the last item is the final model, as the cookbook reads it."""
        return self._many(
            "SELECT obj FROM checkpoints WHERE job_id = ? AND seq > coalesce("
            "(SELECT seq FROM checkpoints WHERE id = ?), -1) ORDER BY seq LIMIT ?",
            job_id,
            after,
            limit,
        )

    def checkpoint(self, job_id: str, checkpoint_id: str) -> Obj | None:
        return self._one(
            "SELECT obj FROM checkpoints WHERE job_id = ? AND id = ?", job_id, checkpoint_id
        )

    def checkpoint_steps(self, job_id: str) -> set[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT step_number FROM checkpoints WHERE job_id = ?", (job_id,)
            ).fetchall()
        return {int(r[0]) for r in rows}
