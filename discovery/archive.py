"""The campaign archive: one SQLite file (``DIR/archive.sqlite``) and a folder per candidate.

Every baseline and every proposal is one row, written *before* any work is done on it, and moved
through its states in short transactions::

    proposed -> invalid | duplicate | training -> done | failed

``proposed`` rows are validated next; ``training`` rows found by ``disco resume`` were cut off by a
crash, and are trained again from scratch (``attempts`` counts how often training started).
``invalid``, ``duplicate``, ``done`` and ``failed`` are final. WAL mode keeps readers (``disco
status`` while a campaign runs) from blocking the writer; each write is its own transaction, so a
``kill -9`` at any moment leaves the database at a state boundary.

The rows hold the code, hypothesis, reasons, checks, metrics (JSON), fitness, timings, token usage,
fingerprint and the resolved campaign configuration. API keys are never given to this module.
Text is untrusted (a model's reply, a candidate's error): every string is stored with lone
surrogates replaced (SQLite refuses them), and a reason is cut at
:data:`~discovery.text.MAX_REASON_CHARS`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from discovery.proposal import Context, Entry, normalise_code
from discovery.text import MAX_REASON_CHARS, cap, clean

DB_NAME = "archive.sqlite"
STATUSES = ("proposed", "invalid", "duplicate", "training", "done", "failed")
FINAL = ("invalid", "duplicate", "done", "failed")
FAILED = ("invalid", "failed")
ADDED_COLUMNS = {"idea": "TEXT NOT NULL DEFAULT ''"}  # column -> declaration, for older archives
JSON_COLUMNS = ("parents", "checks", "inspection", "fingerprint", "metrics", "timings", "config")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('baseline', 'candidate')),
    name TEXT NOT NULL,
    thought TEXT NOT NULL DEFAULT '',
    idea TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL DEFAULT '',
    proposer TEXT NOT NULL DEFAULT '',
    parents TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    reason TEXT,
    checks TEXT,
    inspection TEXT,
    fingerprint_key TEXT,
    fingerprint TEXT,
    duplicate_of INTEGER,
    metrics TEXT,
    fitness REAL,
    fitness_se REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    folder TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    timings TEXT NOT NULL DEFAULT '{{}}',
    config TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates (status);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    after_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_fingerprint ON candidates (fingerprint_key);
"""


class ArchiveError(RuntimeError):
    pass


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in JSON_COLUMNS:
        if d.get(key) is not None:
            d[key] = json.loads(d[key])
    return d


def _encode(value):
    if isinstance(value, (dict, list, tuple)):  # json.dumps escapes lone surrogates: ASCII out
        return json.dumps(value, sort_keys=True, default=str)
    return clean(value) if isinstance(value, str) else value


class Archive:
    """A campaign directory: the SQLite database and the candidates/ folders."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)  # autocommit
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe against process crashes
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions introduced to an archive written by an earlier one."""
        have = {r["name"] for r in self.db.execute("PRAGMA table_info(candidates)")}
        for column, decl in ADDED_COLUMNS.items():
            if column not in have:
                self.db.execute(f"ALTER TABLE candidates ADD COLUMN {column} {decl}")

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path, config: dict) -> "Archive":
        d = Path(directory)
        if (d / DB_NAME).exists():
            raise ArchiveError(f"{d} already holds a campaign; continue it with `disco resume {d}`")
        d.mkdir(parents=True, exist_ok=True)
        archive = cls(d)
        archive.set_meta("config", config)
        archive.set_meta("created_at", time.time())
        return archive

    @classmethod
    def open(cls, directory: str | Path) -> "Archive":
        d = Path(directory)
        if not (d / DB_NAME).exists():
            raise ArchiveError(f"no campaign in {d} (expected {d / DB_NAME})")
        return cls(d)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- meta ---------------------------------------------------------------------------------

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value = excluded.value", (key, json.dumps(value, sort_keys=True)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    @property
    def config(self) -> dict:
        return self.meta("config", {})

    # -- writing ------------------------------------------------------------------------------

    def add(self, *, kind: str, name: str, code: str = "", thought: str = "", proposer: str = "",
            parents=(), prompt_tokens=None, completion_tokens=None, status: str = "proposed",
            reason: str | None = None, idea: str = "") -> int:
        """Insert a row (in state ``proposed`` unless told) and give it its folder; return its id."""
        name, code, thought, proposer, idea = (clean(x) for x in (name, code, thought, proposer, idea))
        reason = None if reason is None else cap(clean(reason), MAX_REASON_CHARS)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "INSERT INTO candidates (kind, name, code, thought, idea, proposer, parents, status, "
                "reason, prompt_tokens, completion_tokens, created_at, config) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, name, code, thought, idea, proposer, json.dumps([clean(p) for p in parents]),
                 status, reason,
                 prompt_tokens, completion_tokens, time.time(), json.dumps(self.config)))
            cid = cur.lastrowid
            folder = f"candidates/{cid:04d}-{name}"
            self.db.execute("UPDATE candidates SET folder = ? WHERE id = ?", (folder, cid))
        (self.dir / folder).mkdir(parents=True, exist_ok=True)
        return cid

    def update(self, cid: int, *, expect: str | tuple[str, ...] | None = None, **fields) -> None:
        """Set ``fields`` on row ``cid`` in one transaction; with ``expect``, only from that state."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ArchiveError(f"unknown status {fields['status']!r}")
        if isinstance(fields.get("reason"), str):
            fields["reason"] = cap(fields["reason"], MAX_REASON_CHARS)
        cols = ", ".join(f"{k} = ?" for k in fields)
        values = [_encode(v) for v in fields.values()]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if expect is not None:
                states = (expect,) if isinstance(expect, str) else tuple(expect)
                row = self.db.execute("SELECT status FROM candidates WHERE id = ?", (cid,)).fetchone()
                if row is None or row["status"] not in states:
                    raise ArchiveError(f"candidate {cid} is {row and row['status']!r}, expected "
                                       f"{' or '.join(states)}")
            self.db.execute(f"UPDATE candidates SET {cols} WHERE id = ?", (*values, cid))

    def start_training(self, cid: int) -> int:
        """Move a row to ``training`` and count the attempt; return the attempt number."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE candidates SET status = 'training', attempts = attempts + 1, "
                            "started_at = ? WHERE id = ?", (time.time(), cid))
            return self.db.execute("SELECT attempts FROM candidates WHERE id = ?",
                                   (cid,)).fetchone()["attempts"]

    # -- reading ------------------------------------------------------------------------------

    def get(self, cid: int) -> dict:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise ArchiveError(f"no candidate {cid}")
        return _decode(row)

    def find(self, ref: str) -> dict:
        """A row by id (``12``) or by name (the newest row of that name)."""
        if str(ref).isdigit():
            return self.get(int(ref))
        row = self.db.execute("SELECT * FROM candidates WHERE name = ? OR folder = ? "
                              "ORDER BY id DESC LIMIT 1", (ref, f"candidates/{ref}")).fetchone()
        if row is None:
            raise ArchiveError(f"no candidate with id or name {ref!r}")
        return _decode(row)

    def rows(self, *, kind: str | None = None, status=None, order: str = "id") -> list[dict]:
        sql, args = "SELECT * FROM candidates WHERE 1 = 1", []
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if status:
            states = (status,) if isinstance(status, str) else tuple(status)
            sql += f" AND status IN ({', '.join('?' * len(states))})"
            args.extend(states)
        return [_decode(r) for r in self.db.execute(f"{sql} ORDER BY {order}", args)]

    def count(self, *, kind: str | None = None, status=None) -> int:
        return len(self.rows(kind=kind, status=status))

    def counts(self) -> dict[str, int]:
        got = dict(self.db.execute("SELECT status, COUNT(*) FROM candidates WHERE kind = "
                                   "'candidate' GROUP BY status").fetchall())
        return {s: got.get(s, 0) for s in STATUSES}

    def fingerprints(self, key: str) -> list[tuple[int, dict]]:
        """(id, fingerprint dict) of every row with this coarse key that is not itself a duplicate."""
        cur = self.db.execute("SELECT id, fingerprint FROM candidates WHERE fingerprint_key = ? "
                              "AND fingerprint IS NOT NULL AND status != 'duplicate' ORDER BY id",
                              (key,))
        return [(r["id"], json.loads(r["fingerprint"])) for r in cur]

    def leaderboard(self) -> list[dict]:
        """Done rows, baselines included, best fitness first."""
        return self.rows(status="done", order="fitness IS NULL, fitness DESC, id")

    def context(self, *, task: str, beta: float, metric: str, n_best: int, n_recent: int,
                n_failures: int) -> Context:
        """The bounded view of the archive that a proposer is given."""
        def entry(r):
            return Entry(id=r["id"], name=r["name"], kind=r["kind"], status=r["status"],
                         thought=r["thought"], code=r["code"], fitness=r["fitness"],
                         fitness_se=r["fitness_se"], reason=r["reason"] or "", idea=r.get("idea") or "",
                         proposer=r["proposer"] or "", parents=tuple(r["parents"] or ()),
                         duplicate_of=r["duplicate_of"], metrics=r["metrics"] if isinstance(r["metrics"], dict) else None)

        def query(sql, *args):
            return tuple(entry(_decode(r)) for r in self.db.execute(sql, args))

        baselines = query("SELECT * FROM candidates WHERE kind = 'baseline' ORDER BY id")
        best = query("SELECT * FROM candidates WHERE kind = 'candidate' AND status = 'done' AND "
                     "fitness IS NOT NULL ORDER BY fitness DESC, id LIMIT ?", n_best)
        recent = query("SELECT * FROM (SELECT * FROM candidates WHERE kind = 'candidate' "
                       "ORDER BY id DESC LIMIT ?) ORDER BY id", n_recent)
        failures = query("SELECT * FROM (SELECT * FROM candidates WHERE kind = 'candidate' AND "
                         "status IN ('invalid', 'failed') ORDER BY id DESC LIMIT ?) ORDER BY id",
                         n_failures)
        n = self.db.execute("SELECT COUNT(*) FROM candidates WHERE kind = 'candidate'").fetchone()[0]
        codes = frozenset(normalise_code(r[0]) for r in self.db.execute("SELECT code FROM candidates"))
        history = query("SELECT * FROM candidates WHERE kind = 'candidate' ORDER BY id")
        return Context(task=task, beta=beta, metric=metric, n_proposed=n, baselines=baselines,
                       best=best, recent=recent, failures=failures, known_codes=codes, history=history)
