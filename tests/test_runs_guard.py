"""Resume guards (issue 14): `RLM.resume(run_id)` on the class, a different question or a run
still owned by a live process is refused, dead runs are shown as such, `runs list` never cuts a
run id, the trace path is recorded, `runs rm` takes several ids and `runs prune`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from recursa import RLM
from recursa.cli import main
from recursa.errors import ConfigError
from recursa.journal import Journal, list_runs, process_identity

from .test_cli import DONE, FIND, script


def _one_run(tmp_path, doc, question="When?") -> str:
    model = script(tmp_path, [FIND, DONE])
    assert main(["ask", "-c", str(doc), "-m", model, "-q", question]) == 0
    [run] = [r for r in list_runs() if r.question == question]
    return run.run_id


def _set_meta(run_id: str, key: str, value) -> None:
    j = Journal.open(run_id)
    try:
        j.set_meta(key, value)
    finally:
        j.close()


def test_resume_works_on_the_class_as_documented(tmp_path, doc, capsys):
    run_id = _one_run(tmp_path, doc)
    result = RLM.resume(run_id)
    assert result.answer == "2031-04-05"
    assert result.replayed_calls == 2
    # The instance form still works.
    again = RLM.from_journal(run_id).resume(run_id)
    assert again.answer == "2031-04-05" and again.replayed_calls == 2


def test_resume_with_another_question_is_refused(tmp_path, doc, capsys):
    run_id = _one_run(tmp_path, doc)
    capsys.readouterr()
    assert main(["ask", "--resume", run_id, "Something else entirely?"]) == 2
    err = capsys.readouterr().err
    assert "resume it without a question" in err
    assert len(err.strip().splitlines()) == 1
    # The same question (spacing aside) is fine, and so is none.
    assert main(["ask", "-q", "--resume", run_id, " When? "]) == 0
    assert main(["ask", "-q", "--resume", run_id]) == 0


def test_resume_of_a_run_owned_by_a_live_process_is_refused(tmp_path, doc, capsys):
    run_id = _one_run(tmp_path, doc)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _set_meta(run_id, "status", "running")
        _set_meta(run_id, "owner", process_identity(owner.pid))
        assert [r.status for r in list_runs()] == ["running"]
        capsys.readouterr()
        assert main(["ask", "-q", "--resume", run_id]) == 2
        err = capsys.readouterr().err
        assert f"still going in process {owner.pid}" in err
        with pytest.raises(ConfigError):
            RLM.resume(run_id)
    finally:
        owner.kill()
        owner.wait()
    # The owner is gone: its lock is stale, the run is dead and can be resumed.
    assert [r.status for r in list_runs()] == ["dead"]
    assert main(["runs", "show", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "dead"
    assert main(["ask", "-q", "--resume", run_id]) == 0
    assert capsys.readouterr().out == "2031-04-05\n"
    assert [r.status for r in list_runs()] == ["final"]


def test_runs_list_never_cuts_the_run_id(tmp_path, doc, capsys, monkeypatch):
    question = "What is the launch date, and who decided it, and why was it moved twice? " * 3
    run_id = _one_run(tmp_path, doc, question)
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert run_id in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_trace_path_is_recorded_and_used(tmp_path, doc, capsys):
    trace = tmp_path / "elsewhere" / "my-trace.jsonl"
    trace.parent.mkdir()
    model = script(tmp_path, [FIND, DONE])
    assert main(["ask", "-c", str(doc), "-m", model, "-q", "--trace", str(trace), "When?"]) == 0
    [run] = list_runs()
    assert run.trace == str(trace.resolve())
    capsys.readouterr()
    assert main(["runs", "show", run.run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"] == str(trace.resolve())
    assert main(["view", run.run_id]) == 0
    page = capsys.readouterr().out.strip()
    assert page.endswith("my-trace.html")


def test_rm_takes_several_ids(tmp_path, doc, capsys):
    a = _one_run(tmp_path, doc, "first?")
    b = _one_run(tmp_path, doc, "second?")
    c = _one_run(tmp_path, doc, "third?")
    capsys.readouterr()
    assert main(["runs", "rm", a, b]) == 0
    out = capsys.readouterr().out
    assert a in out and b in out
    assert [r.run_id for r in list_runs()] == [c]
    # An unknown id removes nothing.
    assert main(["runs", "rm", c, "no-such-run"]) == 2
    assert [r.run_id for r in list_runs()] == [c]


def test_prune_older_than(tmp_path, doc, capsys):
    old = _one_run(tmp_path, doc, "old?")
    busy = _one_run(tmp_path, doc, "old and still running?")
    new = _one_run(tmp_path, doc, "new?")
    long_ago = time.time() - 40 * 86400
    for run_id in (old, busy):
        _set_meta(run_id, "created", long_ago)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _set_meta(busy, "status", "running")
        _set_meta(busy, "owner", process_identity(owner.pid))
        capsys.readouterr()
        assert main(["runs", "prune", "--older-than", "30d", "--dry-run"]) == 0
        out, err = capsys.readouterr()
        assert f"would remove {old}" in out and busy not in out and new not in out
        assert f"kept {busy}: still running" in err
        assert len(list_runs()) == 3
        assert main(["runs", "prune", "--older-than", "30d"]) == 0
        out = capsys.readouterr().out
        assert old in out and busy not in out
        assert sorted(r.run_id for r in list_runs()) == sorted([busy, new])
        assert main(["runs", "prune", "--older-than", "thirty days"]) == 2
    finally:
        owner.kill()
        owner.wait()
