"""End to end over real HTTP: RLM and ``recursa ask`` against the fake OpenAI-compatible server.

The server scripts both models with rules: the root answers its first turn with a ```repl block
that asks the sub model about every chunk of the context with ``llm_query_batched``, and its
second turn (which shows the printed candidates) with FINAL; the sub model finds the code in the
one chunk that holds it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recursa import RLM, Limits
from recursa.lm._http import RetryPolicy
from recursa.testing import FakeLLMServer, Fault
from recursa.testing.fake_server import count_tokens

CODE = "XYZZY-42"
CHUNK = 1000
QUESTION = "What is the secret code?"
SUB_PREFIX = "Find the secret code in this text. Reply with the code or NONE.\n"
FILLER = "The quick brown fox jumps over the lazy dog. " * 230  # ~10,300 characters
CONTEXT = FILLER[:4200] + f" SECRET-CODE: {CODE} " + FILLER[4200:]

ROOT_TURN_1 = f"""I will ask a helper about every chunk.
```repl
size = {CHUNK}
chunks = [context[i:i + size] for i in range(0, len(context), size)]
answers = llm_query_batched([{SUB_PREFIX!r} + c for c in chunks])
found = [a for a in answers if a != "NONE"]
print(f"candidates: {{found}}")
```"""
ROOT_TURN_2 = "```repl\nFINAL(found[0])\n```"


def find_code(messages: list[dict[str, str]]) -> str:
    match = re.search(r"SECRET-CODE: (\S+)", messages[-1]["content"])
    return match.group(1) if match else "NONE"


def scripted_server(**kwargs) -> FakeLLMServer:
    rules = [
        ("^" + re.escape(SUB_PREFIX[:20]), find_code),
        (r"candidates: \[", ROOT_TURN_2),
        (r"^Question:", ROOT_TURN_1),
    ]
    return FakeLLMServer(rules=rules, **kwargs)


def prompt_tokens(req) -> int:
    return count_tokens("".join(m["content"] for m in req.messages))


async def test_rlm_over_http_root_and_sub_models():
    n_chunks = math.ceil(len(CONTEXT) / CHUNK)
    with scripted_server(latency_s=0.05, cached_tokens=5) as srv:
        rlm = RLM(
            model="openai:fake-root",
            sub_model="openai:fake-sub",
            base_url=srv.base_url,
            limits=Limits(max_iterations=4),
        )
        result = await rlm.arun(QUESTION, CONTEXT)
        seen = srv.completions()
        overlap = srv.max_in_flight

    assert result.answer == CODE
    assert result.stop_reason.value == "final"
    assert result.iterations == 2

    root = [r for r in seen if r.model == "fake-root"]
    sub = [r for r in seen if r.model == "fake-sub"]
    assert len(root) == 2
    assert len(sub) == n_chunks
    assert len(seen) == 2 + n_chunks
    # Each sub-call carried exactly one chunk of the context, and together they cover it.
    expected = {SUB_PREFIX + CONTEXT[i : i + CHUNK] for i in range(0, len(CONTEXT), CHUNK)}
    assert {r.last_user for r in sub} == expected
    assert overlap >= 2  # the batch ran concurrently
    # The root conversation is append-only (provider prompt caches keep hitting).
    first, second = root[0].body["messages"], root[1].body["messages"]
    assert second[: len(first)] == first
    assert second[len(first)] == {"role": "assistant", "content": ROOT_TURN_1}
    assert "candidates: ['XYZZY-42']" in second[-1]["content"]
    assert all("authorization" not in r.headers for r in seen)  # local server: no key sent

    by_model = result.usage_by_model
    assert set(by_model) == {"openai:fake-root", "openai:fake-sub"}
    for name, reqs in (("openai:fake-root", root), ("openai:fake-sub", sub)):
        usage = by_model[name]
        assert usage.calls == len(reqs)
        assert usage.input_tokens == sum(prompt_tokens(r) for r in reqs)
        assert usage.output_tokens == sum(count_tokens(r.reply or "") for r in reqs)
        assert usage.cached_tokens == 5 * len(reqs)
    assert result.usage_by_depth[0].calls == 2
    assert result.usage_by_depth[0].input_tokens == by_model["openai:fake-root"].input_tokens
    assert result.usage_by_depth[1].calls == n_chunks
    assert result.usage_by_depth[1].output_tokens == by_model["openai:fake-sub"].output_tokens
    assert result.usage.calls == 2 + n_chunks


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(CONTEXT, encoding="utf-8")
    return path


def ask(srv: FakeLLMServer, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "recursa", "ask", QUESTION, "--model", "openai:fake-root"]
    cmd += ["--sub-model", "openai:fake-sub", "--base-url", srv.base_url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_prints_the_answer_alone(context_file):
    with scripted_server() as srv:
        proc = ask(srv, "--context", str(context_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == CODE + "\n"


def test_cli_json_output(context_file):
    with scripted_server() as srv:
        proc = ask(srv, "--context", str(context_file), "--json", "--quiet")
        n_requests = len(srv.completions())
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == CODE
    assert data["stop_reason"] == "final"
    assert data["partial"] is False
    assert data["usage"]["calls"] == n_requests
    assert data["usage_by_model"]["openai:fake-root"]["calls"] == 2


def test_cli_exits_1_when_the_server_keeps_failing(context_file):
    with scripted_server() as srv:
        # Retry-After: 0 keeps the client's back-off out of the test's running time.
        srv.fail_next(Fault.http(500, "upstream exploded", {"retry-after": "0"}), times=None)
        proc = ask(srv, "--context", str(context_file), "--quiet")
        statuses = [r.status for r in srv.completions()]
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "upstream exploded" in proc.stderr
    assert statuses == [500] * (RetryPolicy().max_retries + 1)


def test_cli_exits_2_for_a_missing_context_file(tmp_path):
    with scripted_server() as srv:
        proc = ask(srv, "--context", str(tmp_path / "missing.txt"))
        n_requests = len(srv.requests)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "missing.txt" in proc.stderr
    assert n_requests == 0
