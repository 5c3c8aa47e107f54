"""The submission ledger: one SQLite row per upload attempt, written before and after it.

A row is inserted as `pending` before any byte leaves the machine and updated when the
outcome is known, so a crash or a lost connection leaves a row that says exactly that.
Statuses:
    pending     the attempt started; its outcome is not known (yet): a crash, or a
                CreateSubmission without an answer and a submissions list that could not
                be read. The next upload of the same file settles it with Kaggle's list.
    submitted   Kaggle listed the new submission; not scored yet
    complete    scored (public/private score filled in when Kaggle shows them)
    error       Kaggle accepted the file but its scoring failed (see `error`)
    rejected    Kaggle refused it (daily limit, bad file, ...)
    failed      never got through (network, 5xx after every retry, credentials)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

STATUSES = ("pending", "submitted", "complete", "error", "rejected", "failed")
# Rows whose file reached (or may have reached) Kaggle: re-uploading it needs --force
# (`upload_submission` first settles `pending` rows with Kaggle's submissions list).
UPLOADED_STATUSES = ("pending", "submitted", "complete", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    competition   TEXT NOT NULL,
    ensemble      TEXT NOT NULL,
    cv_score      REAL,
    file_path     TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    description   TEXT NOT NULL,
    kaggle_ref    TEXT,
    status        TEXT NOT NULL,
    error         TEXT,
    public_score  REAL,
    private_score REAL
);
CREATE INDEX IF NOT EXISTS uploads_sha ON uploads (competition, sha256);
"""


def now_utc() -> str:
    """The current time as ISO 8601 UTC with seconds, as stored in the ledger."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LedgerRow:
    """One upload attempt, as stored."""

    id: int
    created_at: str
    updated_at: str
    competition: str
    ensemble: str
    cv_score: float | None
    file_path: str
    sha256: str
    description: str
    kaggle_ref: str | None
    status: str
    error: str | None
    public_score: float | None
    private_score: float | None


_COLUMNS = [f.name for f in fields(LedgerRow)]
_UPDATABLE = set(_COLUMNS) - {"id", "created_at", "competition", "sha256"}


class Ledger:
    """The ledger at `path` (an SQLite file, created on first use).

    Every method opens its own short connection and commits before returning, so each
    change is on disk before the network step that follows it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            with conn:  # commits, or rolls back on error
                yield conn
        finally:
            conn.close()

    def add_pending(self, *, competition: str, ensemble: str, cv_score: float | None,
                    file_path: Path, sha256: str, description: str) -> LedgerRow:
        """Insert a `pending` row for an attempt about to start; returns it."""
        stamp = now_utc()
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT INTO uploads (created_at, updated_at, competition, ensemble, cv_score, "
                "file_path, sha256, description, status) VALUES (?,?,?,?,?,?,?,?, 'pending')",
                (stamp, stamp, competition, ensemble, cv_score, str(file_path), sha256,
                 description),
            )
            row_id = cursor.lastrowid
        return self.get(row_id)

    def update(self, row_id: int, **changes: object) -> LedgerRow:
        """Set columns of row `row_id` (status, kaggle_ref, error, scores ...); returns it."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update ledger columns {sorted(unknown)}")
        if "status" in changes and changes["status"] not in STATUSES:
            raise ValueError(f"unknown ledger status {changes['status']!r}")
        changes["updated_at"] = now_utc()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._connect() as conn:
            conn.execute(f"UPDATE uploads SET {assignments} WHERE id = ?",
                         (*changes.values(), row_id))
        return self.get(row_id)

    def get(self, row_id: int) -> LedgerRow:
        """The row with id `row_id`."""
        with self._connect() as conn:
            values = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM uploads WHERE id = ?",
                                  (row_id,)).fetchone()
        if values is None:
            raise KeyError(f"no ledger row {row_id} in {self.path}")
        return LedgerRow(*values)

    def rows(self, competition: str | None = None) -> list[LedgerRow]:
        """Every row (of one competition), oldest first."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM uploads"
        args: tuple = ()
        if competition is not None:
            query += " WHERE competition = ?"
            args = (competition,)
        with self._connect() as conn:
            return [LedgerRow(*values) for values in conn.execute(query + " ORDER BY id", args)]

    def uploaded_with_hash(self, competition: str, sha256: str) -> list[LedgerRow]:
        """Rows of earlier attempts with the same file that reached, or may have reached, Kaggle."""
        return [r for r in self.rows(competition)
                if r.sha256 == sha256 and r.status in UPLOADED_STATUSES]
