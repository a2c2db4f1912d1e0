"""Live progress: the growing tree, fed span by span and rendered to a recording console."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from recursa import Limits, ScriptedLM
from recursa.cli import main
from recursa.cli.progress import LiveProgress
from recursa.trace.spans import Tracer

from .conftest import make_rlm, repl


def render(progress: LiveProgress, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(progress)
    return console.export_text()


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_the_tree_grows_and_shrinks_with_the_run():
    progress = LiveProgress(quiet_console())
    tr = Tracer([progress])
    run = tr.start("run", "rlm", None, depth=0, model="openai:gpt-5")
    it = tr.start("iteration", "iteration 1", run, index=1, depth=0)
    lm = tr.start("lm_call", "m", it, role="root", depth=0)
    assert "iteration 1 · 0 LM calls (1 running)" in render(progress)
    tr.end(lm, input_tokens=1000, output_tokens=200, cached_tokens=600, cost_usd=0.0125)
    cell = tr.start("cell", "cell 1", it, code="\n\nchunks = split(context)\nmore()", depth=0)
    sub = tr.start("sub_call", "rlm_query_batched", cell, fn="rlm_query_batched", n=5, depth=0)
    children = []
    for i in range(5):
        child = tr.start("run", "child rlm (depth 1)", sub, depth=1, model="openai:gpt-5-mini")
        cit = tr.start("iteration", "iteration 2", child, index=2, depth=1)
        ccell = tr.start("cell", "cell 1", cit, code=f"hits = find('x{i}')", depth=1)
        children.append((child, cit, ccell))
    inner = tr.start("sub_call", "llm_query_batched", children[1][2], fn="llm_query_batched", n=3)
    tr.start("lm_call", "m", inner, role="sub", depth=2)
    child, cit, ccell = children[0]
    for span in (ccell, cit, child):
        tr.end(span)

    text = render(progress)
    assert "iteration 1 · 1 LM call (1 running) · 1,200 tokens (600 cached) · $0.0125" in text
    assert "cell 1: chunks = split(context)" in text  # the running cell's first line
    assert "rlm_query_batched 1/5 done, 4 running" in text
    # Siblings are told apart by their place in the batch.
    assert "child 2 d1 · iteration 2 · hits = find('x1')" in text
    assert "child 3 d1 · iteration 2 · hits = find('x2')" in text
    # Only the one started call is running; the others wait (nested under its child).
    assert "llm_query_batched 0/3 done, 1 running, 2 queued" in text
    assert "… 1 more child running" in text  # three children drawn, the rest counted
    assert "1 child run done" in text
    assert "x0" not in text  # finished children leave the tree

    for _, cit2, ccell2 in children[1:]:
        tr.end(ccell2)
        tr.end(cit2)
    for child2, _, _ in children[1:]:
        tr.end(child2)
    tr.end(sub)
    tr.end(cell)
    tr.end(it)
    text = render(progress)
    assert "cell 1" not in text and "_batched" not in text
    assert "5 child runs done" in text
    assert progress.totals.sub_done == 5


def test_unpriced_and_failed_calls_are_flagged():
    progress = LiveProgress(quiet_console())
    tr = Tracer([progress])
    run = tr.start("run", "rlm", None, depth=0, model="acme:x")
    tr.end(tr.start("lm_call", "m", run), input_tokens=10, output_tokens=5, cost_usd=None)
    tr.end(tr.start("lm_call", "m", run), error="LMServerError: 500")
    text = render(progress)
    assert "2 LM calls, 1 failed" in text
    # A cost known to be incomplete says so in words, not as "$0.0000+?".
    assert "+?" not in text and "cost unknown (1 unpriced call)" in text
    tr.end(tr.start("lm_call", "m", run), input_tokens=1, output_tokens=1, cost_usd=0.0125)
    tr.end(tr.start("lm_call", "m", run), input_tokens=1, output_tokens=1, cost_usd=None)
    assert "$0.0125 + 2 unpriced calls" in render(progress)


def test_a_batch_counts_only_started_items_as_running():
    progress = LiveProgress(quiet_console())
    tr = Tracer([progress])
    run = tr.start("run", "rlm", None, depth=0, model="openai:gpt-5")
    it = tr.start("iteration", "iteration 1", run, index=1, depth=0)
    cell = tr.start("cell", "cell 1", it, code="llm_query_batched(parts)", depth=0)
    sub = tr.start("sub_call", "llm_query_batched", cell, fn="llm_query_batched", n=30)
    tr.end(tr.start("lm_call", "m", sub, role="sub", depth=1), input_tokens=1, cost_usd=0.0)
    tr.start("lm_call", "m", sub, role="sub", depth=1)
    text = render(progress)
    assert "(1 running)" in text
    assert "llm_query_batched 1/30 done, 1 running, 28 queued" in text
    assert "in flight" not in text


def test_the_final_frame_leaves_a_summary_line():
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None, force_terminal=False)
    with LiveProgress(console) as progress:
        tr = Tracer([progress])
        run = tr.start("run", "rlm", None, depth=0, model="openai:gpt-5")
        it = tr.start("iteration", "iteration 2", run, index=2, depth=0)
        tr.end(tr.start("lm_call", "m", it), input_tokens=100, output_tokens=20, cost_usd=0.5)
        sub = tr.start("sub_call", "llm_query_batched", it, fn="llm_query_batched", n=2)
        for _ in range(2):
            tr.end(tr.start("lm_call", "m", sub), input_tokens=1, output_tokens=1, cost_usd=0.0)
        tr.end(sub)
        tr.end(it)
        tr.end(run)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("run: iteration 2 · 3 LM calls · 124 tokens · $0.5000")
    assert last.endswith("2 sub-call items")


def test_a_real_run_leaves_nothing_in_flight_and_counts_what_the_result_counts():
    sub = ScriptedLM(
        rules=[(r"Question: kid", repl("FINAL('kid done')"))], default="leaf", name="sub"
    )
    progress = LiveProgress(quiet_console())
    rlm = make_rlm(
        [
            repl("print(llm_query_batched(['a', 'b', 'c']))"),
            repl("print(rlm_query_batched(['kid 1', 'kid 2']))"),
            repl("FINAL('ok')"),
        ],
        sub,
        limits=Limits(max_iterations=4),
    )
    result = rlm.run("q", "ctx", processors=[progress])
    t = progress.totals
    assert t.lm_running == 0 and t.lm_done == result.usage.calls
    assert t.input_tokens == result.usage.input_tokens
    assert t.output_tokens == result.usage.output_tokens
    assert t.children_done == 2 and t.sub_done == 3 + 2
    assert not progress._runs and not progress._subs and not progress._owner
    assert "iteration 3" in render(progress)


def test_rendering_from_another_thread_while_spans_pour_in():
    """rich renders on its refresh thread while the event loop feeds spans: no races."""
    progress = LiveProgress(quiet_console())
    tr = Tracer([progress])
    run = tr.start("run", "rlm", None, depth=0, model="m")
    it = tr.start("iteration", "iteration 1", run, index=1, depth=0)
    cell = tr.start("cell", "cell 1", it, code="x", depth=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def draw() -> None:
        while not stop.is_set():
            try:
                render(progress)
            except BaseException as exc:  # pragma: no cover - the failure being tested for
                errors.append(exc)
                return

    drawer = threading.Thread(target=draw)
    drawer.start()
    try:
        for _ in range(300):
            sub = tr.start("sub_call", "rlm_query_batched", cell, fn="rlm_query_batched", n=4)
            kids = [tr.start("run", "child", sub, depth=1, model="m") for _ in range(4)]
            for k in kids:
                tr.end(tr.start("lm_call", "m", k), input_tokens=1, output_tokens=1, cost_usd=0)
                tr.end(k)
            tr.end(sub)
    finally:
        stop.set()
        drawer.join()
    assert errors == []
    assert progress.totals.children_done == 1200


def script(tmp_path, replies):
    import json

    f = tmp_path / "script.json"
    f.write_text(json.dumps({"replies": replies}))
    return f"scripted:{f}"


def test_quiet_removes_the_progress(tmp_path, doc, capsys, monkeypatch):
    seen: list[str] = []
    original = LiveProgress.on_end
    monkeypatch.setattr(
        LiveProgress, "on_end", lambda self, span: (seen.append(span.kind), original(self, span))
    )
    replies = [repl("print(context[:10])"), repl("FINAL('x')")]
    args = ["ask", "-c", str(doc), "-m", script(tmp_path, replies), "q"]
    assert main([*args[:-1], "--quiet", "q"]) == 0
    assert capsys.readouterr().err == "" and seen == []
    assert main(args) == 0
    assert "final after 2 iteration(s)" in capsys.readouterr().err
    assert "run" in seen and seen.count("lm_call") == 2
