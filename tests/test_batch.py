"""``recursa batch`` with the local executor, against the fake OpenAI-compatible server.

Every item's run takes two root turns: the first stores an answer in the REPL and prints a
marker, the second (which sees the marker) calls FINAL. So a run costs two requests, and a
resumed run whose first turn is journaled costs one.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from pathlib import Path

import pytest

from recursa import RLM, Limits
from recursa.batch import BatchLimits, Item, ItemError, batch, load_items, parse_items
from recursa.batch.progress import BatchProgress, summary_lines
from recursa.batch.ratelimit import LimiterCore, LocalRateLimiter, RateLimitedLM, RateLimits
from recursa.batch.results import ResultsWriter, read_results
from recursa.cli import main
from recursa.limits import BudgetExhausted
from recursa.lm.openai import OpenAIChatLM
from recursa.pricing import ModelPrice, PriceTable
from recursa.testing import FakeLLMServer, Fault
from recursa.types import Message

MARK = "TURN-ONE-DONE"


def responder(messages: list[dict[str, str]]) -> str:
    """Turn 1: remember the answer (from the question's ``ask-<id>``) and print the marker;
    turn 2: FINAL."""
    if MARK in messages[-1]["content"]:
        return "```repl\nFINAL(answer)\n```"
    asked = re.search(r"ask-(\w+)", " ".join(m["content"] for m in messages))
    name = asked.group(1) if asked else "unknown"
    return f"```repl\nanswer = 'ans-{name}'\nprint({MARK!r})\n```"


@pytest.fixture
def server():
    with FakeLLMServer(responder=responder) as srv:
        yield srv


def make_rlm(srv: FakeLLMServer, tmp_path: Path, **kw) -> RLM:
    kw.setdefault("limits", Limits(max_iterations=4))
    return RLM("openai:fake", base_url=srv.base_url, runs_root=tmp_path / "runs", **kw)


def items(n: int, **extra) -> list[dict]:
    return [{"id": f"i{k}", "question": f"What is ask-i{k}?", "context": "some text", **extra}
            for k in range(n)]  # fmt: skip


def write_items(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- items ----------------------------------------------------------------------------------


def test_items_parse_text_paths_and_limits(tmp_path):
    (tmp_path / "doc.txt").write_text("hello")
    path = write_items(
        tmp_path / "items.jsonl",
        [
            {"id": 1, "question": "q?", "paths": "doc.txt", "limits": {"max_iterations": 3}},
            {"id": "b", "question": "q?", "context": ["x", "y"]},
        ],
    )
    first, second = load_items(path)
    assert first.id == "1" and first.sources == (tmp_path / "doc.txt",)
    assert first.limits_over(Limits()).max_iterations == 3
    assert second.sources == (["x", "y"],)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ('{"question": "q", "context": "x"}', "line 2: 'id'"),
        ('{"id": "a", "question": "q2", "context": "x"}', "line 2: id 'a' is already used on line 1"),
        ('{"id": "b", "question": " ", "context": "x"}', "line 2: 'question'"),
        ('{"id": "b", "question": "q"}', "line 2: no context"),
        ('{"id": "b", "question": "q", "context": "x", "limits": {"max_x": 1}}', "max_x"),
        ('{"id": "b", "question": "q", "context": "x", "limits": {"max_iterations": 0}}',
         "line 2: Limits.max_iterations must be at least 1"),
        ('{"id": "b", "question": "q", "context": "x", "colour": 1}', "unknown key(s) colour"),
    ],
)  # fmt: skip
def test_item_errors_name_the_line(line, message):
    lines = ['{"id": "a", "question": "q", "context": "x"}', line]
    with pytest.raises(ItemError) as exc:
        list(parse_items(lines, source="f.jsonl"))
    assert message in str(exc.value)


# ---- results file ---------------------------------------------------------------------------


def test_a_torn_last_line_is_ignored_and_ended(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a", "error": null}\n{"id": "b", "answ')
    assert set(read_results(out)) == {"a"}
    with ResultsWriter(out) as writer:
        writer.write({"id": "c", "error": None})
    assert set(read_results(out)) == {"a", "c"}


def test_parquet_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "r.parquet"
    with ResultsWriter(out) as writer:
        writer.write({"id": "a", "answer": "x", "usage": {"calls": 2}, "error": None})
    table = pq.read_table(out).to_pylist()
    assert table[0]["id"] == "a" and json.loads(table[0]["usage"]) == {"calls": 2}


# ---- runs -----------------------------------------------------------------------------------


def test_results_are_keyed_by_id_and_written_as_they_finish(server, tmp_path):
    out = tmp_path / "results.jsonl"
    got = list(batch(make_rlm(server, tmp_path), items(5), out=out, workers=3))
    assert sorted(r["id"] for r in got) == [f"i{k}" for k in range(5)]
    lines = read_results(out)
    assert {k: r["answer"] for k, r in lines.items()} == {f"i{k}": f"ans-i{k}" for k in range(5)}
    assert all(r["stop_reason"] == "final" and r["error"] is None for r in lines.values())
    assert all(r["usage"]["calls"] == 2 for r in lines.values())
    assert len(out.read_text().splitlines()) == 5
    assert len(server.completions()) == 10


def test_rerun_skips_finished_ids_and_pays_nothing(server, tmp_path):
    out = tmp_path / "results.jsonl"
    list(batch(make_rlm(server, tmp_path), items(3), out=out))
    sent = len(server.completions())
    again = list(batch(make_rlm(server, tmp_path), items(4), out=out))
    assert [r["id"] for r in again] == ["i3"]
    assert len(server.completions()) == sent + 2
    assert len(out.read_text().splitlines()) == 4


def test_a_finished_run_without_its_line_is_read_from_its_journal(server, tmp_path):
    out = tmp_path / "results.jsonl"
    list(batch(make_rlm(server, tmp_path), items(2), out=out))
    sent = len(server.completions())
    out.write_text(out.read_text().splitlines()[0] + "\n")  # as if killed before line 2
    again = list(batch(make_rlm(server, tmp_path), items(2), out=out))
    assert len(again) == 1 and again[0]["source"] == "journal"
    assert again[0]["answer"] == f"ans-{again[0]['id']}"
    assert len(server.completions()) == sent


def test_a_failed_run_resumes_from_its_journal_without_repaying(server, tmp_path):
    out = tmp_path / "results.jsonl"
    server.fail_matching(MARK, Fault.bad_request("turn two refused"), times=1)
    first = list(batch(make_rlm(server, tmp_path), items(1), out=out))
    assert first[0]["error"] and "turn two refused" in first[0]["error"]
    assert list(batch(make_rlm(server, tmp_path), items(1), out=out)) == []  # kept as failed
    sent = len(server.completions())
    retried = list(batch(make_rlm(server, tmp_path), items(1), out=out, retry_failed=True))
    assert retried[0]["error"] is None and retried[0]["answer"] == "ans-i0"
    assert retried[0]["resumed"] is True and retried[0]["replayed_calls"] == 1
    assert len(server.completions()) == sent + 1  # turn one came from the journal
    assert read_results(out)["i0"]["error"] is None


def test_per_item_limits_stop_that_item_only(server, tmp_path):
    rows = items(2)
    rows[0]["limits"] = {"max_llm_calls": 1, "final_answer_turn": False}
    got = {r["id"]: r for r in batch(make_rlm(server, tmp_path), rows, workers=1)}
    assert got["i0"]["stop_reason"] == "max_llm_calls" and got["i0"]["partial"] is True
    assert got["i1"]["stop_reason"] == "final"


def test_total_cost_stops_the_batch_and_a_rerun_keeps_it(server, tmp_path):
    prices = PriceTable({"fake": ModelPrice(input=1000.0, output=1000.0)})  # ~$1 a call
    rlm = make_rlm(server, tmp_path, prices=prices)
    out = tmp_path / "r.jsonl"
    events: list[tuple[str, object]] = []
    limits = BatchLimits(max_cost_usd=1.5)
    got = list(batch(rlm, items(6), out=out, workers=1, limits=limits,
                     on_event=lambda k, d: events.append((k, d))))  # fmt: skip
    end = dict(events)["end"]
    assert 1 <= len(got) < 6 and end["left"] == 6 - len(got)
    assert "--max-cost-total" in end["stopped"]
    again = list(batch(make_rlm(server, tmp_path, prices=prices), items(6), out=out,
                       workers=1, limits=limits))  # fmt: skip
    assert again == []  # the batch's money is spent: raise the limit to go on


def test_total_calls_stop_runs_in_flight(server, tmp_path):
    got = list(batch(make_rlm(server, tmp_path), items(3), workers=3,
                     limits=BatchLimits(max_llm_calls=3)))  # fmt: skip
    assert len(server.completions()) <= 3
    assert any(r["stop_reason"] == "max_llm_calls" for r in got)


def test_batch_wall_clock_caps_each_items_timeout(server, tmp_path):
    server.latency_s = 0.5
    got = list(batch(make_rlm(server, tmp_path), items(2), workers=2,
                     limits=BatchLimits(timeout_s=0.3)))  # fmt: skip
    assert {r["stop_reason"] for r in got} == {"timeout"}


# ---- rate limiter ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_requests_per_minute_queue_callers_in_order():
    clock = Clock()
    core = LimiterCore(RateLimits(requests_per_minute=2), clock=clock)
    assert [core.reserve(10).delay for _ in range(4)] == [0.0, 0.0, 30.0, 60.0]
    clock.t += 60
    assert core.reserve(10).delay == 30.0  # one refilled, then one queued behind it


def test_tokens_per_minute_and_settle():
    clock = Clock()
    core = LimiterCore(RateLimits(tokens_per_minute=600), clock=clock)
    assert core.reserve(500).delay == 0.0
    assert core.reserve(200).delay == pytest.approx(10.0)  # 100 short at 10 tokens/s
    core.settle(500, 100, 0.0)  # the first used far less than reserved
    assert core.reserve(100).delay == 0.0
    assert core.tokens == 100


def test_a_429_pauses_everyone_for_its_retry_after():
    clock = Clock()
    core = LimiterCore(RateLimits(requests_per_minute=1000), clock=clock)
    core.pause(5.0)
    assert core.reserve(1).delay == pytest.approx(5.0)
    core.pause(None)  # no Retry-After: the default pause, never shortening a longer one
    assert core.paused_for() == pytest.approx(5.0)
    clock.t += 10
    core.pause(None)
    assert core.paused_for() == pytest.approx(1.0)


def test_batch_totals_refuse_calls():
    core = LimiterCore(RateLimits(max_llm_calls=2, max_cost_usd=1.0), spent_calls=1)
    assert core.reserve(1).refused is None
    assert core.reserve(1).refused == "max_llm_calls"
    core = LimiterCore(RateLimits(max_cost_usd=1.0))
    core.settle(1, 1, 1.2)
    assert core.reserve(1).refused == "max_cost"


async def test_local_limiter_sleeps_and_raises():
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    clock = Clock()
    limiter = LocalRateLimiter(RateLimits(requests_per_minute=1, max_llm_calls=2), clock=clock,
                               sleep=sleep)  # fmt: skip
    await limiter.acquire(1)
    await limiter.acquire(1)
    assert slept == [60.0]
    with pytest.raises(BudgetExhausted):
        await limiter.acquire(1)


async def test_a_429_seen_by_one_caller_pauses_the_others(server):
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        await asyncio.sleep(s)

    limiter = LocalRateLimiter(RateLimits(requests_per_minute=10_000), sleep=sleep)
    lm = OpenAIChatLM("fake", base_url=server.base_url)
    a, b = RateLimitedLM(lm, limiter), RateLimitedLM(lm, limiter)
    server.fail_next(Fault.rate_limit(retry_after=3))
    first = asyncio.create_task(a.complete([Message.user("one")]))
    for _ in range(200):  # until a's backend has read the 429 and reported it
        if limiter.core.pauses:
            break
        await asyncio.sleep(0.05)
    await b.complete([Message.user("two")])
    await first
    await lm.aclose()
    assert limiter.core.pauses == 1
    assert slept and slept[0] > 1.0  # b waited out (most of) the pause a's 429 began
    assert len(server.completions()) == 3  # a's 429, a's retry, b: b never got a 429


# ---- progress and CLI -----------------------------------------------------------------------


def test_progress_renders_counts_and_summary():
    from rich.console import Console

    buf = io.StringIO()
    with BatchProgress(Console(file=buf, width=120, force_terminal=True), total=3) as bar:
        bar.event("skip", 1)
        bar.event("start", None)
        bar.event("result", {"id": "a", "usage": {"total_tokens": 1234}, "cost_usd": 0.5})
        bar.event("result", {"id": "b", "error": "LMError: down"})
    text = buf.getvalue()
    assert "done 1" in text and "failed 1" in text and "1,234 tokens" in text
    summary = {"done": 1, "partial": 0, "failed": 1, "wall_s": 1.0, "skipped": 1, "calls": 2,
               "cost_usd": 0.5, "left": 2, "stopped": "the batch's $1 is spent"}  # fmt: skip
    assert any("2 item(s) not started" in line for line in summary_lines(summary))


def cli(server, tmp_path, *args: str, quiet: bool = True) -> int:
    return main(["batch", *args, "--model", "openai:fake", "--base-url", server.base_url,
                 "--runs-dir", str(tmp_path / "runs"), "--max-iterations", "4",
                 *(["-q"] if quiet else [])])  # fmt: skip


def test_cli_shows_progress_and_a_summary(server, tmp_path, capsys):
    path = write_items(tmp_path / "items.jsonl", items(2))
    out = tmp_path / "out.jsonl"
    assert cli(server, tmp_path, str(path), "--out", str(out), "--max-calls-total", "2",
               "--workers", "1", quiet=False) == 3  # fmt: skip
    err = capsys.readouterr().err
    assert "1 final, 0 partial, 0 failed" in err and "1 item(s) not started" in err
    assert "--max-calls-total" in err and str(out) in err


def test_cli_end_to_end_and_exit_codes(server, tmp_path, capsys):
    path = write_items(tmp_path / "items.jsonl", items(3))
    out = tmp_path / "out.jsonl"
    assert cli(server, tmp_path, str(path), "--out", str(out)) == 0
    assert set(read_results(out)) == {"i0", "i1", "i2"}
    assert cli(server, tmp_path, str(path), "--out", str(out)) == 0  # all done: nothing runs
    assert len(server.completions()) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "context": "x"}\n{"id": "a"}\n')
    assert cli(server, tmp_path, str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err
    assert cli(server, tmp_path, str(path), "--out", str(out), "--executor", "spark") == 2
    limited = write_items(tmp_path / "lim.jsonl", items(1, limits={"max_llm_calls": 1}))
    assert cli(server, tmp_path, str(limited), "--out", str(tmp_path / "o2.jsonl")) == 3


def test_cli_reports_a_failed_item_with_status_1(server, tmp_path):
    path = write_items(tmp_path / "items.jsonl", [{"id": "x", "question": "q", "paths": "nope"}])
    assert cli(server, tmp_path, str(path), "--out", str(tmp_path / "o.jsonl")) == 1
    line = read_results(tmp_path / "o.jsonl")["x"]
    assert "ContextError" in line["error"]


def test_item_objects_and_dicts_are_accepted(server, tmp_path):
    one = Item("z", "What is ask-z?", ("text",), digest="d")
    got = list(batch(make_rlm(server, tmp_path), [one, *items(1)]))
    assert {r["id"]: r["answer"] for r in got} == {"z": "ans-z", "i0": "ans-i0"}


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    from recursa.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match=r"recursa\[parquet\]"):
        ResultsWriter(tmp_path / "r.parquet")
    assert main(["batch", str(write_items(tmp_path / "i.jsonl", items(1))),
                 "--out", str(tmp_path / "r.parquet"), "-q"]) == 2  # fmt: skip
