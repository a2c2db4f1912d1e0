"""`recursa runs`, `recursa cache`, and `ask --resume / --no-journal / --cache`."""

from __future__ import annotations

import json

from recursa.cli import main
from recursa.journal import list_runs

from .test_cli import DONE, FIND, script


def test_runs_are_recorded_listed_shown_resumed_and_removed(tmp_path, doc, capsys):
    model = script(tmp_path, [FIND, DONE])
    assert main(["ask", "-c", str(doc), "-m", model, "-q", "When?"]) == 0
    [run] = list_runs()
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    assert run.run_id in capsys.readouterr().out
    assert main(["runs", "show", run.run_id, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "final"
    assert info["result"]["answer"] == "2031-04-05"
    assert info["journaled_calls"] == 2
    # Resuming a finished run replays it: same answer, no new model call (the script is spent).
    assert main(["ask", "--resume", run.run_id]) == 0
    out, err = capsys.readouterr()
    assert out == "2031-04-05\n"
    assert "2 call(s) replayed from the journal" in err
    assert main(["runs", "rm", run.run_id]) == 0
    assert list_runs() == []
    assert main(["runs", "show", run.run_id]) == 2
    assert "no run" in capsys.readouterr().err


def test_no_journal(tmp_path, doc, capsys):
    assert main(["ask", "-c", str(doc), "-m", script(tmp_path, [DONE]), "--no-journal", "q"]) == 0
    assert list_runs() == []


def test_cache_flag_and_cache_commands(tmp_path, doc, capsys):
    model = script(tmp_path, [FIND, DONE])
    for _ in range(2):
        assert main(["ask", "-c", str(doc), "-m", model, "--cache", "--no-journal", "q"]) == 0
    err = capsys.readouterr().err
    assert "2 from the cache" in err
    assert main(["cache", "stats"]) == 0
    assert "2 cached responses, 2 hits" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 2" in capsys.readouterr().out
