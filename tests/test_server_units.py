"""The servers' pieces on their own: model names, limit tightening, request parsing, the run
store, path roots and progress events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest

from recursa.context import load_context
from recursa.errors import ConfigError, ContextError
from recursa.limits import Limits
from recursa.server import runs
from recursa.server.chat import parse_chat_request
from recursa.server.config import ServerConfig, tighten_limits
from recursa.server.errors import (
    ModelNotFound,
    PathNotAllowed,
    RequestError,
    RunNotFound,
    ServerBusy,
)
from recursa.server.progress import ProgressTracker
from recursa.server.roots import Roots
from recursa.server.runs import RunHandle, RunManager, RunStore
from recursa.trace.spans import Tracer

# ---- limits ----------------------------------------------------------------------------------


def test_requests_only_tighten_limits():
    base = Limits(max_iterations=10, max_cost_usd=1.0, timeout_s=600)
    out = tighten_limits(base, {"max_iterations": 3, "max_cost_usd": 5, "timeout_s": 30.5})
    assert (out.max_iterations, out.max_cost_usd, out.timeout_s) == (3, 1.0, 30.5)
    assert tighten_limits(base, {"max_iterations": 50}).max_iterations == 10
    # Where the server sets no bound, the request's value becomes one.
    assert tighten_limits(base, {"max_llm_calls": 7, "max_tokens": 900}).max_llm_calls == 7
    assert tighten_limits(base, {"max_depth": 0}).max_depth == 0
    assert tighten_limits(base, {"max_iterations": None}) is base
    assert tighten_limits(base, {}) is base


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_iterations": 0},
        {"max_iterations": True},
        {"max_iterations": 1.5},
        {"max_depth": -1},
        {"max_cost_usd": 0},
        {"timeout_s": float("inf")},
        {"timeout_s": "60"},
        {"cell_timeout_s": 5},
    ],
)
def test_bad_limit_overrides_name_the_field(overrides):
    with pytest.raises(RequestError) as err:
        tighten_limits(Limits(), overrides)
    assert err.value.param == f"recursa.{next(iter(overrides))}"
    assert err.value.status == 400


# ---- model names -----------------------------------------------------------------------------


def test_model_names_resolve_to_configured_models():
    cfg = ServerConfig(
        model="openai:gpt-5",
        sub_model="openai:gpt-5-mini",
        aliases={"fast": "x:y"},
        allowed_models=("anthropic:*",),
    )
    assert list(cfg.model_names()) == ["rlm", "fast"]
    rlm = cfg.choose_model("rlm")
    assert (rlm.root, rlm.sub) == ("openai:gpt-5", "openai:gpt-5-mini")
    assert cfg.choose_model("fast").root == "x:y"
    other = cfg.choose_model("rlm:anthropic:claude-sonnet-4-5")
    assert (other.root, other.sub) == ("anthropic:claude-sonnet-4-5", "openai:gpt-5-mini")
    # Without an --allow-model pattern, only configured models can be named.
    with pytest.raises(ModelNotFound):
        dataclasses.replace(cfg, allowed_models=()).choose_model("rlm:anthropic:claude-x")


def test_default_model_follows_recursa_model(monkeypatch):
    monkeypatch.setenv("RECURSA_MODEL", "openai:gpt-5-nano")
    assert ServerConfig().choose_model("rlm").root == "openai:gpt-5-nano"
    assert ServerConfig(model="ollama:qwen").choose_model("rlm").root == "ollama:qwen"


@pytest.mark.parametrize("name", ["gpt-4o", "rlm:", "rlm:scripted:/etc/passwd", "rlm: "])
def test_unknown_or_server_side_models_are_404(name):
    with pytest.raises(ModelNotFound) as err:
        ServerConfig(model="openai:gpt-5").choose_model(name)
    assert err.value.status == 404 and err.value.param == "model"


def test_fixed_models_accept_only_what_is_configured():
    cfg = ServerConfig(model="scripted:/srv/s.json", open_models=False)
    assert cfg.choose_model("rlm:scripted:/srv/s.json").root == "scripted:/srv/s.json"
    with pytest.raises(ModelNotFound):
        cfg.choose_model("rlm:openai:gpt-5")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aliases": {"rlm": "openai:gpt-5"}},
        {"aliases": {"a b": "openai:gpt-5"}},
        {"aliases": {"x": " "}},
        {"max_concurrent_runs": 0},
        {"api_key": " "},
    ],
)
def test_bad_server_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)


# ---- chat requests ---------------------------------------------------------------------------


def test_parse_renders_every_earlier_message_with_its_role():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    req = parse_chat_request(
        {
            "model": " rlm ",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
                {"role": "user", "content": "hi", "name": "ann"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "assistant", "content": ""},
                {
                    "role": "user",
                    "content": [
                        {"type": "refusal", "refusal": "x"},
                        {"type": "text", "text": "q?"},
                    ],
                },
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
            "recursa": {"progress": False, "max_iterations": 2},
        }
    )
    assert req.model == "rlm" and req.question == "q?"
    assert req.context[:2] == ["developer: rules", "user (ann): hi"]
    assert req.context[2].startswith("assistant: [tool calls: [{")
    assert req.context[3] == "tool: 42"
    assert len(req.context) == 4  # the empty assistant message adds nothing
    assert req.stream and req.include_usage and req.progress is False
    assert dict(req.limits) == {"max_iterations": 2} and req.temperature == 0.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "q"}]}, "model"),
        ({"model": "rlm", "messages": "q"}, "messages"),
        ({"model": "rlm", "messages": [{"role": "user", "content": "  "}]}, "messages[0]"),
        ({"model": "rlm", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        (
            {"model": "rlm", "messages": [{"role": "user", "content": "q"}], "stream": "yes"},
            "stream",
        ),
        (
            {
                "model": "rlm",
                "messages": [{"role": "user", "content": "q"}],
                "stream_options": {"include_usage": 1},
            },
            "stream_options.include_usage",
        ),
    ],
)
def test_parse_refuses_malformed_requests(body, param):
    with pytest.raises(RequestError) as err:
        parse_chat_request(body)
    assert err.value.param == param


# ---- run store ----------------------------------------------------------------------------


def test_run_store_keeps_ids_inside_its_folder_and_prunes_the_oldest(tmp_path):
    store = RunStore(tmp_path / "runs", keep=2)
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(RunNotFound):
            store.folder(bad)
    with pytest.raises(RunNotFound):
        store.load("20260101-000000-aaaaaa")
    for i in range(4):
        store.save(f"2026010{i}-000000-aaaaaa", {"n": i}, active={"20260100-000000-aaaaaa"})
    kept = sorted(p.name for p in store.root.iterdir())
    # The newest two, plus the oldest, which was still running when pruning happened.
    assert kept == ["20260100-000000-aaaaaa", "20260102-000000-aaaaaa", "20260103-000000-aaaaaa"]
    assert store.load("20260103-000000-aaaaaa") == {"n": 3}
    (store.root / "20260109-000000-bbbbbb").mkdir()
    assert store.load("20260109-000000-bbbbbb")["status"] == "running"


async def test_manager_refuses_past_its_cap_and_stores_what_runs_did(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "```repl\nFINAL(context.upper())\n```"}))
    config = ServerConfig(model=f"scripted:{script}", max_concurrent_runs=1, retry_after_s=3)
    manager = RunManager(config)
    ctx = load_context("abc")
    handle = manager.start(config.choose_model("rlm"), "q", ctx, progress=True)
    with pytest.raises(ServerBusy) as err:
        manager.start(config.choose_model("rlm"), "q", ctx)
    assert err.value.retry_after_s == 3 and err.value.status == 429
    events = [e async for e in handle.progress()]
    assert (await handle.result()).answer == "ABC"
    assert [e.kind for e in events] == ["iteration", "cell"]
    assert manager.active == 0
    described = manager.store.describe(handle.run_id)
    assert described["status"] == "final" and described["result"]["answer"] == "ABC"
    assert described["trace"]["spans"]["iteration"] == 1
    assert "FINAL" in described["trace"]["tree"]
    await manager.aclose()


# ---- roots -----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "secret.txt").write_text("do not read")
    (root / "docs" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "docs" / "inside.txt").symlink_to(root / "docs" / "a.txt")
    (root / "out").symlink_to(tmp_path)
    return root


def test_roots_refuse_paths_that_resolve_outside(tree):
    roots = Roots([tree])
    assert roots.resolve("docs/a.txt") == (tree / "docs" / "a.txt").resolve()
    for raw in (
        "../secret.txt",
        str(tree.parent / "secret.txt"),
        "docs/escape.txt",
        "out",
        "docs/../../secret.txt",
    ):
        with pytest.raises(PathNotAllowed):
            roots.resolve(raw)
    with pytest.raises(ContextError):
        roots.resolve("docs/missing.txt")
    with pytest.raises(ConfigError):
        Roots([tree / "docs" / "a.txt"])


def test_folder_contexts_leave_out_files_linking_outside(tree):
    ctx = Roots([tree]).load(["docs"])
    assert ctx.value == {"a.txt": "alpha", "inside.txt": "alpha"}
    assert ctx.kind == "folder"
    assert any("escape.txt" in w for w in ctx.warnings)
    # A link leaving the folder is skipped even where it stays inside the roots; the file
    # itself can be named directly when its folder is a root.
    both = Roots([tree, tree.parent]).load(["docs", str(tree.parent / "secret.txt")])
    assert "escape.txt" not in both.value[0]
    assert both.value[1] == "do not read"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_folders_with_fifos_are_read_without_them_instead_of_hanging(tree):
    os.mkfifo(tree / "docs" / "pipe")
    ctx = Roots([tree]).load(["docs"])
    assert "pipe" not in ctx.value
    assert any("special file" in w and "pipe" in w for w in ctx.warnings)


# ---- progress --------------------------------------------------------------------------------


def test_progress_events_count_steps_and_totals():
    events = []
    tracer = Tracer([ProgressTracker(events.append)])
    run = tracer.start("run", "rlm", depth=0)
    it = tracer.start("iteration", "iteration 1", run, index=1, depth=0)
    call = tracer.start("lm_call", "root", it, depth=0)
    tracer.end(call, input_tokens=100, output_tokens=20, cost_usd=0.01)
    cell = tracer.start("cell", "cell 1", it, index=1, depth=0)
    sub = tracer.start("sub_call", "llm_query_batched", cell, n=4, depth=0)
    child = tracer.start("run", "child", sub, depth=1)
    tracer.end(child)
    tracer.end(sub)
    tracer.end(cell, error="ValueError: x")
    assert [e.kind for e in events] == ["iteration", "sub_call", "child_run", "cell"]
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert events[1].message.startswith("llm_query_batched ×4 · 1 LM calls · 120 tokens")
    assert events[-1].sub_calls == 4 and events[-1].cost_usd == pytest.approx(0.01)
    assert "error: ValueError: x" in events[-1].message
    assert json.dumps(events[-1].to_dict())


async def test_closing_the_manager_cancels_runs_and_records_them(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "```repl\nimport time\ntime.sleep(300)\n```"}))
    config = ServerConfig(model=f"scripted:{script}")
    manager = RunManager(config)
    handle = manager.start(config.choose_model("rlm"), "q", load_context("abc"))
    handle.cancel()
    handle.cancel()  # a second cancel must not interrupt the engine's cleanup
    await manager.aclose()
    assert handle.task.cancelled() and manager.active == 0
    assert manager.store.load(handle.run_id)["status"] == "cancelled"


async def test_a_swallowed_cancellation_is_sent_again(monkeypatch):
    monkeypatch.setattr(runs, "RECANCEL_S", 0.05)
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:  # what asyncio.wait_for does on 3.11 in a race
            swallowed.append(True)
        await asyncio.sleep(60)

    handle = RunHandle("20260101-000000-aaaaaa")
    handle.task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    handle.cancel()
    handle.cancel()
    await asyncio.wait({handle.task}, timeout=30)
    assert swallowed == [True] and handle.task.cancelled()
