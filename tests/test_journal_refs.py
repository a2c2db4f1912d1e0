"""The journal keeps a context by reference: files by path, size, mtime and hash; text in the
content-addressed store, once; old journals (the whole context in the journal) still resume."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
import zlib
from pathlib import Path

import pytest

from recursa import RLM, JournalError, ScriptedLM, load_context
from recursa import context_ref as context_ref_module
from recursa.blobs import BlobStore, blobs_dir
from recursa.context_ref import complete, describe, rebuild, value_chunks
from recursa.journal import Journal, remove_run

from .conftest import repl

TAIL = repl("FINAL(str(len(context)) + ':' + context[-13:])")


def run(tmp_path: Path, context, replies=(TAIL,)):
    return RLM(ScriptedLM(list(replies), name="root"), runs_root=tmp_path).run("q", context)


def resume(tmp_path: Path, run_id: str):
    root = ScriptedLM([], name="root")  # every answer must come from the journal
    again = RLM(root, runs_root=tmp_path).resume(run_id)
    assert root.calls == []
    return again


def refs(tmp_path: Path, run_id: str) -> dict[int, dict]:
    conn = sqlite3.connect(tmp_path / "runs" / run_id / "journal.sqlite")
    try:
        return {n: json.loads(r) for n, r in conn.execute("SELECT n, ref FROM context_refs")}
    finally:
        conn.close()


def settled_ref(tmp_path: Path, run_id: str) -> dict:
    """Context 0's reference once its files are hashed (done after the run, in a thread)."""
    deadline = time.monotonic() + 30
    while (ref := refs(tmp_path, run_id)[0])["state"] == "pending":
        assert time.monotonic() < deadline, "the context was never hashed"
        time.sleep(0.01)
    return ref


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # the journal's tables are being created
        return 0
    finally:
        conn.close()


def blob_files(tmp_path: Path) -> list[Path]:
    folder = blobs_dir(tmp_path)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_file_context_is_kept_by_reference_and_read_again(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("alpha\n" * 1000 + "the last line")
    r = run(tmp_path, f)
    assert r.answer == "6013:the last line"
    ref = settled_ref(tmp_path, r.run_id)
    st = f.stat()
    assert ref["origin"]["files"] == [[str(f), st.st_size, st.st_mtime_ns]]
    assert ref["blob"] is None and len(ref["hashes"][0]) == 64 and ref["state"] == "done"
    assert blob_files(tmp_path) == []  # the file can be found again: no copy kept
    assert resume(tmp_path, r.run_id).answer == r.answer


def test_a_changed_file_with_no_copy_is_a_clear_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("first version")
    r = run(tmp_path, f)
    f.write_text("second version, longer")
    with pytest.raises(JournalError, match=r"notes\.txt changed.*Put the file back"):
        resume(tmp_path, r.run_id)


def test_a_file_changed_under_the_same_size_and_mtime_is_caught_by_its_hash(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("first version")
    r = run(tmp_path, f)
    assert settled_ref(tmp_path, r.run_id)["hashes"]
    st = f.stat()
    f.write_text("other version")  # same length
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(JournalError, match=r"notes\.txt changed \(its content\)"):
        resume(tmp_path, r.run_id)


def test_a_new_file_in_a_folder_is_noticed(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("hello")
    r = run(tmp_path, folder, [repl("FINAL(','.join(sorted(context)))")])
    assert r.answer == "a.md"
    assert resume(tmp_path, r.run_id).answer == "a.md"
    (folder / "b.md").write_text("new")
    with pytest.raises(JournalError, match="are not the same"):
        resume(tmp_path, r.run_id)


def test_a_file_that_changed_before_it_was_hashed_is_stored(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("what the run read")
    ctx = load_context(f)
    ref = describe(ctx)
    f.write_text("changed while the run went on")
    store = BlobStore(blobs_dir(tmp_path))
    done = complete(ref, ctx.value, store)
    assert done["blob"] and done["hashes"] is None
    # The file no longer matches, so the stored copy is what a resume gets.
    assert rebuild(done, store, "r").value == "what the run read"


def test_text_is_stored_once_however_many_runs_use_it(tmp_path):
    text = "the same context " * 5000
    first, second = run(tmp_path, text), run(tmp_path, text)
    [blob] = blob_files(tmp_path)
    assert refs(tmp_path, first.run_id)[0]["blob"] == blob.name
    assert refs(tmp_path, second.run_id)[0]["blob"] == blob.name
    assert resume(tmp_path, second.run_id).answer == second.answer
    run(tmp_path, "another context")
    assert len(blob_files(tmp_path)) == 2
    remove_run(first.run_id, tmp_path)
    assert blob in blob_files(tmp_path)  # the second run still refers to it
    remove_run(second.run_id, tmp_path)
    assert blob not in blob_files(tmp_path)


def test_the_blob_store_is_private_and_checks_what_it_reads(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    digest = store.put([b"secret ", b"context"])
    path = store.path(digest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.get(digest) == b"secret context"
    assert not list(store.folder.glob(".*.tmp"))
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    with pytest.raises(JournalError, match="damaged"):
        store.get(digest)
    with pytest.raises(JournalError, match="not a blob digest"):
        store.path("../../etc/passwd")
    packed = BlobStore(tmp_path / "packed", compress=True)
    assert packed.get(packed.put([b"abc" * 1000])) == b"abc" * 1000


def test_values_are_stored_in_chunks_and_read_back_as_they_were():
    big = "x" * (3 << 20)
    data = {
        "big": big,
        "many": [f"item {i}" for i in range(10_000)],
        "nested": [{"a": [1, 2.5, None, True]}, "\ud800 lone surrogate", big],
        'quote"key': "tab\tand \\ backslash",
        "": [],
    }
    for value in (data, big, [big, "small"], {"k": {}}, ["é", 1]):
        chunks = list(value_chunks(value))
        assert max(len(c) for c in chunks) < 3 << 20  # never one copy of the whole
        ctx = context_ref_module._value_from(b"".join(chunks), "r")
        assert ctx == value


def _block_storing(monkeypatch) -> threading.Event:
    release = threading.Event()
    real = context_ref_module.complete

    def slow(ref, value, store):
        release.wait(10)
        return real(ref, value, store)

    monkeypatch.setattr(context_ref_module, "complete", slow)
    return release


def test_a_run_stopped_before_its_text_was_stored_says_so(tmp_path, monkeypatch):
    release = _block_storing(monkeypatch)
    ctx = load_context("text passed in memory")
    j = Journal.create("r1", question="q", context=ctx, config={}, root=tmp_path)
    try:
        # What a resume would find if the process were killed now.
        seen = Journal.open("r1", root=tmp_path)
        with pytest.raises(JournalError, match="stopped before its context was stored"):
            seen.context()
        seen._conn.close()
    finally:
        release.set()
        j.close()  # waits for the store
    again = Journal.open("r1", root=tmp_path)
    assert again.context().value == "text passed in memory"
    again.close()


def test_a_file_context_resumes_even_before_it_was_hashed(tmp_path, monkeypatch):
    f = tmp_path / "notes.txt"
    f.write_text("file text")
    release = _block_storing(monkeypatch)
    j = Journal.create("r2", question="q", context=load_context(f), config={}, root=tmp_path)
    try:
        seen = Journal.open("r2", root=tmp_path)
        assert seen.context().value == "file text"
        seen._conn.close()
    finally:
        release.set()
        j.close()


def test_a_context_that_cannot_be_stored_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    def refuse(ref, value, store):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(context_ref_module, "complete", refuse)
    r = run(tmp_path, "some text")
    assert r.answer == "9:some text"
    assert any("No space left" in w and "cannot be resumed" in w for w in r.warnings)


def test_a_journal_of_the_first_format_still_resumes(tmp_path):
    r = run(tmp_path, "an old context")
    path = tmp_path / "runs" / r.run_id / "journal.sqlite"
    old = {
        "value": "an old context",
        "kind": "text",
        "warnings": [],
        "sources": ["text"],
        "multi": False,
    }
    conn = sqlite3.connect(path)
    with conn:  # what version 1 wrote: the whole context in the journal, no references
        conn.execute("DROP TABLE context_refs")
        blob = zlib.compress(json.dumps(old).encode(), level=1)
        conn.execute("INSERT INTO context (id, data) VALUES (1, ?)", (blob,))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    for p in blob_files(tmp_path):
        p.unlink()  # nothing outside the journal
    assert resume(tmp_path, r.run_id).answer == "14:n old context"


def test_a_journal_from_a_newer_recursa_says_which_to_use(tmp_path):
    r = run(tmp_path, "text")
    conn = sqlite3.connect(tmp_path / "runs" / r.run_id / "journal.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(JournalError, match="newer recursa"):
        Journal.open(r.run_id, root=tmp_path)


def test_no_cell_is_journaled_before_the_text_is_stored(tmp_path, monkeypatch):
    release = _block_storing(monkeypatch)
    done: list = []
    worker = threading.Thread(target=lambda: done.append(run(tmp_path, "held text")))
    worker.start()
    try:
        runs = tmp_path / "runs"
        deadline = time.monotonic() + 30
        while not (runs.exists() and any(runs.iterdir())):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        path = next(runs.iterdir()) / "journal.sqlite"
        # The root turn is journaled while the text is still being stored...
        while not count(path, "lm_calls"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        assert count(path, "cells") == 0  # ...but not its cell
        assert refs(tmp_path, path.parent.name)[0]["state"] == "pending"
    finally:
        release.set()
        worker.join(30)
    [result] = done
    assert result.answer == "9:held text"
    assert refs(tmp_path, result.run_id)[0]["blob"]
