"""The bench methods on scripted models: direct (with its cut to the window), rag, summarize,
the RLM variants, their traces (with the score) and the model's window."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from recursa import ScriptedLM
from recursa.bench.baselines import chunk_text, fit_middle
from recursa.bench.methods import (
    DEFAULT_WINDOW,
    MethodEnv,
    _plain_options,
    build_env,
    model_window,
    run_method,
)
from recursa.bench.scoring import score
from recursa.bench.tasks import Task, make_tasks
from recursa.cache import CallCache
from recursa.errors import LMRequestError
from recursa.limits import Limits
from recursa.lm.base import BaseLM, Capabilities, ProviderOptions
from recursa.trace.jsonl import read_trace
from recursa.types import Completion, LMSettings, Message, Usage
from tests.conftest import repl


def needle_reply(messages: Sequence[Message]) -> str:
    """Answers an S-NIAH prompt from what the prompt shows (as a perfect reader would)."""
    text = messages[-1].content
    key = re.search(r"special magic number for ([\w-]+) mentioned", text)
    found = key and re.search(rf"numbers for {re.escape(key.group(1))} is: (\d{{7}})", text)
    return f"Answer: {found.group(1)}" if found else "Answer: unknown"


class WindowLM(BaseLM):
    """Refuses prompts longer than ``limit`` characters, as a server with a real window does."""

    capabilities = Capabilities(greedy_by_default=True)

    def __init__(self, limit: int, reply=needle_reply) -> None:
        self.name = "scripted:window"
        self.limit = limit
        self.reply = reply
        self.refused = 0
        self.prompts: list[str] = []

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        size = sum(len(m.content) for m in messages)
        if size > self.limit:
            self.refused += 1
            raise LMRequestError(f"{size} characters is too long", model=self.name)
        self.prompts.append(messages[-1].content)
        usage = Usage(input_tokens=size // 4, output_tokens=4, calls=1)
        return Completion(self.reply(messages), usage, self.name, "stop")


def env_for(lm, tmp_path: Path, window: int, **kw) -> MethodEnv:
    env = build_env(lm, window=window, limits=Limits(max_iterations=4), **kw)
    env.trace_dir = tmp_path / "traces"
    return env


def scorer(task: Task):
    return lambda answer: score(task.scoring, answer, task.gold)


def test_fit_middle_keeps_both_ends() -> None:
    text = "A" * 500 + "B" * 500
    cut, was_cut = fit_middle(text, 300)
    assert was_cut and len(cut) <= 300
    assert cut.startswith("A") and cut.endswith("B") and "characters cut" in cut
    assert fit_middle("short", 300) == ("short", False)


def test_chunk_text_respects_lines_and_size() -> None:
    text = "".join(f"line {i}\n" for i in range(100)) + "x" * 250
    chunks = chunk_text(text, 100)
    assert "".join(chunks) == text
    assert all(len(c) <= 100 for c in chunks)


async def test_direct_fits_the_window_and_scores(tmp_path: Path) -> None:
    task = make_tasks("niah", [2048], 1, seed=0)[0]
    env = env_for(WindowLM(100_000), tmp_path, window=8192)
    out = await run_method("direct", task, env, scorer(task))
    assert out.answer == f"Answer: {task.gold}"
    assert out.notes["cut"] is False and out.notes["window_tokens"] == 8192
    assert out.usage.calls == 1
    root = next(s for s in read_trace(out.trace_path).spans if s.kind == "run")
    assert root.attrs["score"] == 1.0 and root.attrs["method"] == "direct"
    assert root.attrs["stop_reason"] == "final"


async def test_direct_cuts_in_the_middle_and_remembers_the_fit(tmp_path: Path) -> None:
    # The window says 4096 tokens (16K characters); the model really takes 9,000 characters.
    lm = WindowLM(9_000)
    tasks = make_tasks("niah", [8192], 3, seed=0)
    env = env_for(lm, tmp_path, window=4096)
    first = await run_method("direct", tasks[0], env, scorer(tasks[0]))
    assert first.notes["cut"] is True
    assert first.notes["kept_tokens"] < first.notes["context_tokens"]
    assert lm.refused >= 1
    refused = lm.refused
    # The next question on the same window starts from the size that fitted: no refusal.
    await run_method("direct", tasks[1], env, scorer(tasks[1]))
    assert lm.refused == refused
    assert "characters cut here to fit" in lm.prompts[-1]
    # The needle at depth 1.0 (the end) survives the middle cut.
    assert first.answer == f"Answer: {tasks[0].gold}"


async def test_rag_retrieves_the_needle(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    task = make_tasks("niah", [16384], 3, seed=0)[1]  # a needle in the middle
    lm = WindowLM(100_000)
    env = env_for(lm, tmp_path, window=8192, rag_tokens=512)
    out = await run_method("rag", task, env, scorer(task))
    assert score(task.scoring, out.answer, task.gold) == 1.0
    assert out.notes["chunks"] == 2 and out.notes["of_chunks"] > 50
    assert len(lm.prompts[-1]) < 4000  # only the excerpts were sent


async def test_summarize_notes_then_answers(tmp_path: Path) -> None:
    task = make_tasks("niah", [4096], 1, seed=0)[0]
    lm = ScriptedLM(
        rules=[(r"^Here is part", lambda m: "NOTHING"), (r"^Notes taken", "Answer: 42")],
        name="notes",
    )
    env = env_for(lm, tmp_path, window=2048)
    out = await run_method("summarize", task, env, scorer(task))
    parts = out.notes["parts"]
    assert parts >= 4 and out.usage.calls == parts + 1
    assert out.answer == "Answer: 42"


@pytest.mark.parametrize("method", ["rlm", "rlm-nosub", "rlm-depth2"])
async def test_rlm_methods_write_the_score_into_the_trace(tmp_path: Path, method: str) -> None:
    task = make_tasks("niah", [2048], 1, seed=0)[0]
    code = (
        "import re\n"
        "m = re.findall(r'special magic numbers for [\\w-]+ is: (\\d{7})', context)\n"
        "FINAL(m[0])"
    )
    root = ScriptedLM([repl(code)], name="root")
    env = env_for(root, tmp_path, window=4096)
    out = await run_method(method, task, env, scorer(task))
    assert out.answer == task.gold and out.stop_reason == "final"
    run = next(s for s in read_trace(out.trace_path).spans if s.kind == "run")
    assert run.attrs["score"] == 1.0
    assert out.trace_path.name == f"{task.task_id}.{method}.jsonl"


async def test_the_call_cache_answers_a_repeated_request(tmp_path: Path) -> None:
    task = make_tasks("niah", [2048], 1, seed=0)[0]
    lm = WindowLM(100_000)
    env = env_for(lm, tmp_path, window=8192, cache=CallCache(tmp_path / "calls.sqlite"))
    first = await run_method("direct", task, env, scorer(task))
    again = await run_method("direct", task, env, scorer(task))
    assert first.cache_hits == 0 and again.cache_hits == 1
    assert len(lm.prompts) == 1 and again.answer == first.answer
    await env.aclose()


def test_model_window() -> None:
    lm = ScriptedLM(["x"])
    assert model_window(lm) == (DEFAULT_WINDOW, "assumed")
    assert model_window(lm, 1234) == (1234, "--window")
    lm.capabilities = Capabilities(context_window=32768)
    assert model_window(lm) == (32768, "backend")
    local = ScriptedLM(["x"])
    local.name = "local:qwen2.5-coder-1.5b"
    from recursa.lm.local import DEFAULT_N_CTX

    assert model_window(local, env={}) == (DEFAULT_N_CTX, "local backend n_ctx")
    assert model_window(local, env={"RECURSA_LOCAL_CTX": "8192"})[0] == 8192


def test_plain_options_turn_code_turns_off_for_the_local_model() -> None:
    opts = ProviderOptions(extra={"threads": 2})
    assert _plain_options("local", opts).extra == {"threads": 2, "code_turns": False}
    assert _plain_options("openai:gpt-5-mini", opts) is opts
