"""The run journal: everything a run did, on disk as it happens, so a killed run can resume.

Each run gets a folder ``<data_dir>/runs/<run_id>/`` holding ``journal.sqlite`` (WAL mode) and
its trace. The journal records the run's configuration, question and context before the first
call, then every LM response (root turns and sub-calls, keyed by the exact request) and every
cell's code and output as they complete. A response is committed before the engine uses it.

The context is recorded by reference (:mod:`recursa.context_ref`): files and folders by their
paths, sizes and modification times, and their bytes' SHA-256; text passed in memory in the
content-addressed store beside the runs (:mod:`recursa.blobs`), once however many runs use it.
Only the reference is written before the first request; the hashing and storing run in a thread
while the request is under way, and a cell is journaled only once they are done, so a run that
has run code can always be resumed (a run killed earlier lost one root turn at most).

Resuming replays: the run starts again from the beginning, every request already in the journal
is answered from it instead of the model, the REPL state is rebuilt by re-running the model's
cells in order, and real calls resume where the journal ends. Model code is deterministic given
the same responses; where it is not (it reads the clock, draws random numbers, reads files it
wrote), a re-run cell prints something else, the divergence is reported as a warning, and from
there on requests that differ from the journaled ones go to the model again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from recursa import context_ref
from recursa.blobs import BlobStore, blobs_dir
from recursa.context import Context
from recursa.errors import JournalError
from recursa.paths import DIR_MODE, data_dir, private_dir
from recursa.store import completion_from_json, completion_to_json, connect
from recursa.trace.jsonl import JSONLWriter
from recursa.types import CellResult, Completion

__all__ = [
    "Journal",
    "Replay",
    "RunSummary",
    "list_runs",
    "owner_alive",
    "process_identity",
    "remove_run",
    "runs_dir",
]

# 2: the context by reference (context_refs). Version 1 journals (the whole context in the
# context table) are still read.
SCHEMA_VERSION = 2
_READABLE = (1, 2)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lm_calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, model TEXT NOT NULL,
    role TEXT NOT NULL, depth INTEGER NOT NULL, response TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS lm_calls_by_key ON lm_calls(key);
CREATE TABLE IF NOT EXISTS cells (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, engine TEXT NOT NULL, code TEXT NOT NULL,
    result TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS context (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS context_refs (n INTEGER PRIMARY KEY, ref TEXT NOT NULL);
"""
# What the caller's tools returned (recursa.toolcalls), keyed by tool, arguments and engine.
# Created on first use too, so journals written before tools existed still resume.
_TOOL_CALLS = (
    "CREATE TABLE IF NOT EXISTS tool_calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "key TEXT NOT NULL, tool TEXT NOT NULL, outcome TEXT NOT NULL, created REAL NOT NULL)"
)


def trace_writer(
    trace: str | Path | None,
    journal: Journal | None,
    run_id: str,
    meta: dict[str, Any] | None = None,
) -> JSONLWriter | None:
    """The writer of a run's (or a session's) trace: to ``trace`` if given, else to the
    journal's own trace file, whose earlier content (a resumed run's) is kept beside it as
    ``.before-resume.jsonl``; the journal records where it goes. None: no trace at all."""
    if trace is None and journal is not None and journal.trace_path.exists():
        journal.trace_path.replace(journal.trace_path.with_suffix(".before-resume.jsonl"))
    path = trace if trace is not None else (journal.trace_path if journal else None)
    if path is None:
        return None
    writer = JSONLWriter(path, run_id=run_id, meta=meta)
    if journal is not None:
        with contextlib.suppress(sqlite3.Error):
            journal.set_meta("trace", str(writer.path.resolve()))
    return writer


def runs_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "runs"


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Who owns a run: a pid and, where the OS tells it, the process's start time (so a pid
    reused by another process after the owner died is not taken for the owner)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": _start_time(pid)}


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22: start time in clock ticks


def owner_alive(owner: object) -> TypeGuard[dict[str, Any]]:
    """Whether the process recorded as a run's owner is still running (so ``owner`` is a dict
    holding an int ``pid``)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    except OSError:
        return False
    start = owner.get("start")
    return start is None or _start_time(pid) in (None, start)


def _broken(run_id: str, why: str) -> JournalError:
    return JournalError(
        f"the journal of run {run_id} cannot be used ({why}); other runs are not affected. "
        f"Remove it with `recursa runs rm {run_id}`"
    )


@dataclass(frozen=True)
class RunSummary:
    """One line of ``recursa runs list``."""

    run_id: str
    status: str
    created: float
    question: str
    answer: str
    calls: int
    cost_usd: float | None
    path: Path
    trace: str | None = None


class Replay:
    """Journaled responses by request key, handed out in the order they were recorded."""

    def __init__(
        self,
        responses: dict[str, deque[Completion]],
        tools: dict[str, deque[dict[str, Any]]] | None = None,
    ) -> None:
        self._responses = responses
        self._tools = tools or {}
        self.replayed = 0

    def take_tool(self, key: str) -> dict[str, Any] | None:
        """The journaled outcome of a tool call (``{"value": ...}`` or ``{"error": "..."}``),
        the n-th of n identical calls getting the n-th recorded; ``None`` if none is left."""
        queue = self._tools.get(key)
        return queue.popleft() if queue else None

    def take(self, key: str) -> Completion | None:
        queue = self._responses.get(key)
        if not queue:
            return None
        self.replayed += 1
        return queue.popleft()

    @property
    def remaining(self) -> int:
        return sum(len(q) for q in self._responses.values())


class Journal:
    """One run's journal. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(
        self, conn: sqlite3.Connection, folder: Path, run_id: str, sync: str = "normal"
    ) -> None:
        self._conn = conn
        self.folder = folder
        self.run_id = run_id
        self.cells_seen: dict[str, int] = defaultdict(int)  # cells already in the journal
        self._journaled_cells: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.blobs = BlobStore(blobs_dir(folder.parent.parent))
        self._sync = sync
        self._storing: list[threading.Thread] = []  # contexts being hashed or stored
        self._store_failed: str | None = None

    @property
    def path(self) -> Path:
        return self.folder / "journal.sqlite"

    @property
    def trace_path(self) -> Path:
        return self.folder / "trace.jsonl"

    # ---- creating and opening -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        run_id: str,
        *,
        question: str,
        context: Context,
        config: dict[str, Any],
        root: Path | None = None,
        sync: str = "normal",
    ) -> Journal:
        folder = runs_dir(root) / run_id
        # Journals hold the question, the whole context and every answer: private to the user.
        private_dir(folder.parent)
        folder.mkdir(mode=DIR_MODE)
        conn = connect(folder / "journal.sqlite", sync=sync)
        conn.executescript(_SCHEMA)
        journal = cls(conn, folder, run_id, sync)
        ref = context_ref.describe(context)
        with conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO context_refs (n, ref) VALUES (0, ?)", (json.dumps(ref),))
            for key, value in {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "created": time.time(),
                "status": "running",
                "question": question,
                "config": config,
                "owner": process_identity(),
            }.items():
                conn.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        journal._complete_later(0, ref, context)
        return journal

    @classmethod
    def open(cls, run_id: str, *, root: Path | None = None, sync: str = "normal") -> Journal:
        folder = runs_dir(root) / run_id
        path = folder / "journal.sqlite"
        if not path.is_file():
            raise JournalError(
                f"no run {run_id!r} in {runs_dir(root)}; `recursa runs list` shows the runs"
            )
        try:
            conn = connect(path, sync=sync)
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _broken(run_id, f"integrity check: {check}")
            journal = cls(conn, folder, run_id, sync)
            version = journal.meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise _broken(run_id, str(exc)) from None
        if version not in _READABLE:
            raise _broken(
                run_id,
                f"schema version {version!r}, this recursa reads {_READABLE}: a newer recursa "
                "wrote it, so resume it with that one",
            )
        return journal

    def close(self) -> None:
        self.settle()
        self._conn.close()

    # ---- the context, completed in the background ---------------------------------------------
    def _complete_later(self, n: int, ref: dict[str, Any], context: Context) -> None:
        """Hash or store context ``n`` in a thread, so the first request need not wait.

        Only a context that must be stored is waited for (see :meth:`settle`). Files can be
        found again by path, size and mtime alone, so their hashes (which only catch a file
        rewritten with the same size and mtime) are not worth holding the run for: a process
        that ends first leaves a reference without them, which still resumes."""
        thread = threading.Thread(
            target=self._complete, args=(n, ref, context.value), name="recursa-journal-context"
        )
        thread.daemon = True  # a kill loses at most a temporary file (blobs are renamed in)
        if context.origin is None:
            self._storing.append(thread)
        thread.start()

    def _complete(self, n: int, ref: dict[str, Any], value: Any) -> None:
        try:
            done = context_ref.complete(ref, value, self.blobs)
        except (OSError, JournalError) as exc:
            self._store_failed = f"the context could not be stored in {self.blobs.folder} ({exc})"
            done = dict(ref, state="failed")
        try:
            context_ref.write_ref(self.path, n, done, self._sync)
        except sqlite3.Error as exc:
            self._store_failed = f"the context's reference could not be written ({exc})"

    def settle(self) -> str | None:
        """Wait until the contexts that must be stored are; why they could not be, if so."""
        while self._storing:
            self._storing.pop().join()
        return self._store_failed

    def claim(self) -> None:
        """Take ownership of the run for this process, to resume it. Raises
        :class:`~recursa.errors.ConfigError` while another live process owns it; the lock of a
        process that is gone is stale and is taken over."""
        from recursa.errors import ConfigError

        me = process_identity()
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()
                owner = json.loads(row[0]) if row else None
                if owner_alive(owner) and owner.get("pid") != me["pid"]:
                    raise ConfigError(
                        f"run {self.run_id} is still going in process {owner['pid']}; "
                        "stop it first or wait for it to end"
                    )
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('owner', ?)", (json.dumps(me),)
                )
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('status', ?)", (json.dumps("running"),)
                )
        except sqlite3.DatabaseError as exc:
            raise _broken(self.run_id, str(exc)) from None

    def set_meta(self, key: str, value: Any) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ---- reading --------------------------------------------------------------------------------
    def meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _broken(self.run_id, str(exc)) from None
        return default if row is None else json.loads(row[0])

    def _refs(self) -> dict[int, dict[str, Any]]:
        try:
            rows = self._conn.execute("SELECT n, ref FROM context_refs").fetchall()
            return {n: json.loads(raw) for n, raw in rows}
        except sqlite3.OperationalError:  # a version 1 journal: no such table
            return {}
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise _broken(self.run_id, f"the context cannot be read: {exc}") from None

    def context(self) -> Context:
        """The run's context: from its files if they are unchanged, else its stored copy."""
        ref = self._refs().get(0)
        if ref is not None:
            return context_ref.rebuild(ref, self.blobs, self.run_id)
        try:
            row = self._conn.execute("SELECT data FROM context WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _broken(self.run_id, f"the context cannot be read: {exc}") from None
        if row is None:
            raise _broken(self.run_id, "the context is missing")
        return self._context_from(row[0])

    def _context_from(self, blob: bytes) -> Context:
        try:
            d = json.loads(zlib.decompress(blob).decode("utf-8", "surrogatepass"))
        except (zlib.error, ValueError) as exc:
            raise _broken(self.run_id, f"the context cannot be read: {exc}") from None
        from recursa.context import _parts_of, _size

        value = d["value"]
        parts = (
            tuple((label, _size(v)) for label, v in zip(d["sources"], value, strict=False))
            if d["multi"]
            else _parts_of(value)
        )
        return Context(
            value, d["kind"], tuple(d["warnings"]), tuple(d["sources"]), d["multi"], parts
        )

    # ---- sessions: more contexts, added after the first ---------------------------------------
    def add_context(self, index: int, context: Context) -> None:
        """Record a session's context number ``index`` (``context_1``...): kept with the
        session so that resuming it loads the same values."""
        ref = context_ref.describe(context)
        self._conn.execute(
            "INSERT OR REPLACE INTO context_refs (n, ref) VALUES (?, ?)", (index, json.dumps(ref))
        )
        self._complete_later(index, ref, context)

    def extra_contexts(self) -> list[Context]:
        """The contexts :meth:`add_context` recorded, in order (none in a version 1 journal:
        sessions came with version 2)."""
        refs = self._refs()
        return [context_ref.rebuild(refs[n], self.blobs, self.run_id) for n in sorted(refs) if n]

    def replay(self) -> Replay:
        """The journaled responses, ready to be replayed."""
        responses: dict[str, deque[Completion]] = defaultdict(deque)
        try:
            for key, raw in self._conn.execute("SELECT key, response FROM lm_calls ORDER BY seq"):
                responses[key].append(completion_from_json(raw))
            for engine, code, raw in self._conn.execute(
                "SELECT engine, code, result FROM cells ORDER BY seq"
            ):
                self._journaled_cells.setdefault(engine, []).append((code, json.loads(raw)))
            tools: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
            self._conn.execute(_TOOL_CALLS)
            for key, raw in self._conn.execute("SELECT key, outcome FROM tool_calls ORDER BY seq"):
                outcome = json.loads(raw)
                if isinstance(outcome, dict) and ("value" in outcome or "error" in outcome):
                    tools[key].append(outcome)
        except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
            raise _broken(self.run_id, str(exc)) from None
        return Replay(responses, tools)

    def counts(self) -> tuple[int, int]:
        """(LM calls, cells) recorded."""
        calls = self._conn.execute("SELECT COUNT(*) FROM lm_calls").fetchone()[0]
        cells = self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        return calls, cells

    # ---- writing --------------------------------------------------------------------------------
    def record_lm(self, key: str, model: str, role: str, depth: int, c: Completion) -> None:
        self._conn.execute(
            "INSERT INTO lm_calls (key, model, role, depth, response, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, role, depth, completion_to_json(c), time.time()),
        )

    def record_tool(self, key: str, tool: str, outcome: dict[str, Any]) -> None:
        """Commit what a tool call returned (or the error it raised) before the model sees it."""
        row = (key, tool, json.dumps(outcome, ensure_ascii=False), time.time())
        sql = "INSERT INTO tool_calls (key, tool, outcome, created) VALUES (?, ?, ?, ?)"
        try:
            self._conn.execute(sql, row)
        except sqlite3.OperationalError:  # a journal from before tools: make the table
            self._conn.execute(_TOOL_CALLS)
            self._conn.execute(sql, row)

    def record_cell(self, engine: str, code: str, result: CellResult) -> str | None:
        """Record a cell, or, while replaying, compare it with the journaled one.

        Returns a warning when a replayed cell's output differs from the journaled output, or
        when the context could not be stored (the run then cannot be resumed).
        """
        # A journal holding a cell must hold what it ran on: wait for the context (in practice
        # it was done long before, during the first LM call).
        failed = self.settle()
        warning = self._record_cell(engine, code, result)
        if failed is not None:
            self._store_failed = None  # said once
            return f"{failed}: this run cannot be resumed"
        return warning

    def _record_cell(self, engine: str, code: str, result: CellResult) -> str | None:
        index = self.cells_seen[engine]
        self.cells_seen[engine] += 1
        output = {"stdout": result.stdout, "error": result.error, "final": result.final}
        journaled = self._journaled_cells.get(engine, [])
        if index < len(journaled):
            old_code, old = journaled[index]
            if old_code == code and old != output:
                return (
                    f"replay diverged at cell {index + 1} of {engine}: the same code printed "
                    "something else (it depends on time, randomness or outside state); "
                    "requests from here on that differ go to the model again"
                )
            if old_code == code:
                return None
        self._conn.execute(
            "INSERT INTO cells (engine, code, result, created) VALUES (?, ?, ?, ?)",
            (engine, code, json.dumps(output, ensure_ascii=False), time.time()),
        )
        return None

    def finish(self, status: str, result: dict[str, Any]) -> None:
        self.settle()
        with self._conn:
            self._conn.execute("BEGIN")
            for key, value in (("status", status), ("result", result), ("finished", time.time())):
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value))
                )
            self._conn.execute("DELETE FROM meta WHERE key = 'owner'")


def _summary(folder: Path) -> RunSummary:
    try:
        j = Journal.open(folder.name, root=folder.parent.parent)
    except JournalError:
        return RunSummary(folder.name, "broken", folder.stat().st_mtime, "", "", 0, None, folder)
    try:
        result = j.meta("result") or {}
        calls, _ = j.counts()
        status = j.meta("status", "?")
        if status == "running" and not owner_alive(j.meta("owner")):
            status = "dead"  # killed (kill -9, a crash): its owner is gone; it can be resumed
        return RunSummary(
            run_id=folder.name,
            status=status,
            created=float(j.meta("created", 0.0)),
            question=str(j.meta("question", "")),
            answer=str(result.get("answer", "")),
            calls=calls,
            cost_usd=result.get("cost_usd"),
            path=folder,
            trace=j.meta("trace"),
        )
    except JournalError:
        return RunSummary(folder.name, "broken", folder.stat().st_mtime, "", "", 0, None, folder)
    finally:
        j.close()


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run under the data folder, newest first."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    found = [_summary(f) for f in base.iterdir() if f.is_dir()]
    return sorted(found, key=lambda s: s.created, reverse=True)


def remove_run(run_id: str, root: Path | None = None) -> Path:
    base = runs_dir(root)
    folder = base / run_id
    if "/" in run_id or run_id in ("", ".", "..") or not folder.is_dir():
        raise JournalError(f"no run {run_id!r}; `recursa runs list` shows the runs")
    mine = context_ref.blobs_of(folder / "journal.sqlite")
    shutil.rmtree(folder)
    if mine:  # blobs are shared: keep those another run still refers to
        journals = (f / "journal.sqlite" for f in base.iterdir() if f.is_dir())
        others = set().union(*(context_ref.blobs_of(j) for j in journals))
        BlobStore(blobs_dir(root)).remove(mine - others)
    return folder
