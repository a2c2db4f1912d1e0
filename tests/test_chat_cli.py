"""``recursa chat``: questions from stdin in one REPL, and a killed session resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from recursa.testing import FakeLLMServer

from .test_resume_kill import journaled_sub_answers
from .waiting import wait_until

N = 40
BATCH = (
    f"```repl\nanswers = llm_query_batched([f'item {{i}}' for i in range({N})])\n"
    "total = base + sum(int(a.split()[-1]) for a in answers)\nprint('batch done', total)\n```"
)


def reply(messages) -> str:
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if last.startswith("item "):
        return "ans " + last.split()[-1]
    if "batch done" in last:
        return "```repl\nFINAL(str(total))\n```"
    if "question 1 of a session" in last:
        return "```repl\nbase = len(context.split())\nFINAL(base)\n```"
    if "question 2 of a session" in last:
        return BATCH
    return "```repl\nFINAL(f'{total} after {len(history)}')\n```"


def chat(env, *args, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recursa", "chat", "-q", "--json", *args],
        env=env,
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout,
    )


def test_json_lines_in_one_repl_and_errors_are_clear(tmp_path):
    ctx = tmp_path / "notes.txt"
    ctx.write_text("one two three four")
    env = {**os.environ, "RECURSA_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "k"}
    with FakeLLMServer(responder=reply) as srv:
        model = ["--model", "openai:fake", "--base-url", srv.base_url, "-c", str(ctx)]
        done = chat(env, *model, stdin="How many words?\n")
        assert done.returncode == 0, done.stderr.decode()
        [line] = done.stdout.decode().splitlines()
        out = json.loads(line)
        assert out["question"] == "How many words?" and out["answer"] == "4"
    missing = chat(env, "--model", "openai:fake", stdin="q\n")
    assert missing.returncode == 2
    assert "--context" in json.loads(missing.stdout)["error"]["message"]


def test_kill_9_during_a_question_then_resume(tmp_path):
    ctx = tmp_path / "notes.txt"
    ctx.write_text("a b c d e")
    data = tmp_path / "data"
    env = {**os.environ, "RECURSA_DATA_DIR": str(data), "OPENAI_API_KEY": "k"}
    with FakeLLMServer(responder=reply, latency_s=0.15) as srv:
        cmd = [sys.executable, "-m", "recursa", "chat", "-q", "--json", "--concurrency", "4"]
        proc = subprocess.Popen(
            [*cmd, "--model", "openai:fake", "--base-url", srv.base_url, "-c", str(ctx)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write(b"How many letters?\nAnd the total?\n")
        proc.stdin.flush()
        runs = data / "runs"

        def far_enough() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode()
            found = list(runs.glob("*/journal.sqlite")) if runs.exists() else []
            try:
                return bool(found) and len(journaled_sub_answers(found[0])) >= 10
            except Exception:
                return False

        wait_until(far_enough, "ten journaled sub-calls", timeout=60, poll_s=0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        [journal] = list(runs.glob("*/journal.sqlite"))
        session_id = journal.parent.name
        before = journaled_sub_answers(journal)
        assert 10 <= len(before) < N
        resumed = chat(env, "--resume", session_id, stdin="Once more?\n")
        assert resumed.returncode == 0, resumed.stderr.decode()
        lines = [json.loads(x) for x in resumed.stdout.decode().splitlines()]
        total = 5 + sum(range(N))
        assert [x["answer"] for x in lines] == [str(total), f"{total} after 2"]
        assert lines[0]["question"] == "And the total?"
    items = Counter(r.last_user for r in srv.requests if r.last_user.startswith("item "))
    for i in before:
        assert items[f"item {i}"] == 1, f"item {i} was asked {items[f'item {i}']} times"
    assert set(items) == {f"item {i}" for i in range(N)}
    roots = [r for r in srv.requests if not r.last_user.startswith("item ")]
    # Asked once each: question 1, question 2's first turn, its last turn, question 3.
    assert len(roots) == 4


def test_interactive_commands_without_a_terminal(tmp_path):
    ctx = tmp_path / "notes.txt"
    ctx.write_text("one two three")
    more = tmp_path / "more.txt"
    more.write_text("extra text")
    env = {**os.environ, "RECURSA_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "k"}

    def answer(messages) -> str:
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if "question 1 of a session" in last:
            return "```repl\nFINAL(len(context.split()))\n```"
        return "```repl\nFINAL(context_1)\n```"

    with FakeLLMServer(responder=answer) as srv:
        chat_cmd = [sys.executable, "-m", "recursa", "chat", "--model", "openai:fake"]
        script = f"How many?\n/context {more}\nWhat was added?\n/history\n/nope\n/exit\n"
        done = subprocess.run(
            [*chat_cmd, "--base-url", srv.base_url, "-c", str(ctx)],
            env=env,
            input=script.encode(),
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["3", "extra", "text"]
    err = done.stderr.decode()
    assert "loaded as context_1" in err
    assert "1. How many?" in err and "unknown command /nope" in err


def test_ctrl_c_cancels_the_question_not_the_session(tmp_path):
    ctx = tmp_path / "notes.txt"
    ctx.write_text("hello")
    env = {**os.environ, "RECURSA_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "k"}

    def answer(messages) -> str:
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if "question 1 of a session" in last:
            return "```repl\nimport time\ntime.sleep(60)\n```"
        restarted = "REPL was restarted" in last
        return "```repl\nFINAL(f'second {len(history)} " + str(restarted) + "')\n```"

    with FakeLLMServer(responder=answer) as srv:
        chat_cmd = [sys.executable, "-m", "recursa", "chat", "--model", "openai:fake"]
        proc = subprocess.Popen(
            [*chat_cmd, "--base-url", srv.base_url, "-c", str(ctx)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write(b"slow one?\n")
        proc.stdin.flush()
        wait_until(lambda: len(srv.requests) >= 1, "the first question's request", timeout=60)
        time.sleep(1.0)  # its cell is sleeping in the worker now
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"next?\n/exit\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    assert "cancelled (the session goes on)" in err
    assert out.strip() == "second 0 True"
