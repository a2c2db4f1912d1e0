"""The command line: answer on stdout only, one-line errors with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recursa.cli import main


def script(tmp_path: Path, replies: list[str], **extra) -> str:
    f = tmp_path / "script.json"
    f.write_text(json.dumps({"replies": replies, **extra}))
    return f"scripted:{f}"


FIND = "```repl\ni = context.find('launch date')\nprint(context[i:i+40])\n```"
DONE = "```repl\nFINAL('2031-04-05')\n```"


def test_answer_alone_on_stdout(tmp_path, doc, capsys):
    code = main(
        [
            "ask",
            "--context",
            str(doc),
            "--model",
            script(tmp_path, [FIND, DONE]),
            "When is the launch?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "2031-04-05\n"
    assert "final after 2 iteration(s)" in err


def test_json_and_trace(tmp_path, doc, capsys):
    trace = tmp_path / "t.jsonl"
    code = main(
        [
            "ask",
            "-c",
            str(doc),
            "-m",
            script(tmp_path, [FIND, DONE]),
            "--json",
            "--trace",
            str(trace),
            "-q",
            "When?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["answer"] == "2031-04-05"
    assert data["stop_reason"] == "final" and data["iterations"] == 2
    assert data["trace_path"] == str(trace)
    assert main(["trace", "show", str(trace)]) == 0
    assert "2031-04-05" in capsys.readouterr().out


def test_partial_answer_exits_3(tmp_path, doc, capsys):
    code = main(
        [
            "ask",
            "-c",
            str(doc),
            "-m",
            script(tmp_path, [FIND, "FINAL(maybe 2031)"]),
            "--max-iterations",
            "1",
            "When?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 3
    assert out == "maybe 2031\n"
    assert "max_iterations" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "q"], "no context given"),
        (["ask", "-c", "/nonexistent/file.txt", "-m", "scripted:x.json", "q"], "no such file"),
        (["ask", "-c", "{doc}", "-m", "nosuch:model", "q"], "unknown provider 'nosuch'"),
        (["ask", "-c", "{doc}", "-m", "openai:gpt-5-mini", "q"], "OPENAI_API_KEY"),
        (["ask", "-c", "{doc}", "-m", "anthropic:claude-sonnet-4-5", "q"], "ANTHROPIC_API_KEY"),
        (["ask", "-c", "{doc}", "-m", "scripted:/nonexistent.json", "q"], "cannot read script"),
        (["ask", "-c", "{doc}", "-m", "scripted:x.json", " "], "question is empty"),
        (
            ["ask", "-c", "{doc}", "--max-iterations", "0", "-m", "scripted:x.json", "q"],
            "at least 1",
        ),
        (["trace", "show", "/nonexistent.jsonl"], "no such trace file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, doc, capsys):
    argv = [a.replace("{doc}", str(doc)) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_trace_error_exit_code_is_2_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    assert main(["trace", "show", str(bad)]) == 2


def test_empty_folder_context(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ask", "-c", str(empty), "-m", "scripted:x.json", "q"]) == 2
    assert "no readable text" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["ask", "--bogus"]) == 2


def test_help_for_every_command(capsys):
    for argv in (["--help"], ["ask", "--help"], ["trace", "--help"], ["trace", "show", "--help"]):
        assert main(argv) == 0
    out = capsys.readouterr().out
    for option in (
        "--context",
        "--model",
        "--sub-model",
        "--base-url",
        "--max-depth",
        "--max-iterations",
        "--max-cost",
        "--timeout",
        "--json",
        "--trace",
        "--quiet",
    ):
        assert option in out


def test_stdin_and_the_console_script(tmp_path, doc):
    model = script(tmp_path, [FIND, DONE])
    proc = subprocess.run(
        [sys.executable, "-m", "recursa", "ask", "-c", "-", "-m", model, "-q", "When?"],
        input=doc.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == "2031-04-05\n"
