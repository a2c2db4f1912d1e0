"""Cost accounting across a whole tree: batches, children, grandchildren, three priced models.

The ground truth is what the models themselves saw: every ScriptedLM records its calls and the
reply it gave to each, and its usage is four characters per token. Result totals, per-model and per-depth breakdowns,
the lm_call spans, the trace summary and the viewer must all agree with it, exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from recursa import Limits, PriceTable, ScriptedLM, StopReason, Usage
from recursa.limits import approx_tokens
from recursa.trace.html import viewer_payload
from recursa.trace.jsonl import read_trace
from recursa.trace.summary import SpanTree, call_usage, summarize
from recursa.types import Completion

from .conftest import make_rlm, repl

PRICES = {
    "test:big": {"input": 3.0, "output": 15.0, "cached_input": 0.3},
    "test:small": {"input": 0.25, "output": 2.0, "cached_input": 0.025},
    "test:other": {"input": 1.0, "output": 4.0},  # no cached rate: cached input at full price
}


class PricedLM(ScriptedLM):
    """A scripted model with a priced name that reports part of each prompt as cached."""

    def __init__(self, *args, model: str, cached_share: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = model
        self.cached_share = cached_share

    async def complete(self, messages, settings=None) -> Completion:
        c = await super().complete(messages, settings)
        cached = int(c.usage.input_tokens * self.cached_share)
        return replace(c, usage=replace(c.usage, cached_tokens=cached))


def sub_reply(messages) -> str:
    """Children (whose conversation starts with a system prompt) and plain sub-calls."""
    if messages[0].role != "system":
        return "leaf answer to " + messages[-1].content[:12]
    question = messages[1].content
    if len(messages) > 2:
        return repl("FINAL('child done')")
    if "Question: child" in question:
        return repl("x = llm_query('leaf ' + context)\ny = rlm_query('grand', 'gctx')\nprint(x, y)")
    return repl("print(llm_query_batched(['g1', 'g2']))")  # the grandchild


ROOT = [
    repl("r = llm_query_batched(['p1', 'p2', 'p3', 'p4'])\nprint(r)"),
    repl("print(llm_query('ask the other', model='other'))"),
    repl("print(rlm_query_batched(['child A', 'child B'], ['ctx a', 'ctx b']))"),
    repl("FINAL('all done')"),
]


@pytest.fixture
def price_file(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps(PRICES))
    return f


@pytest.fixture
def run(tmp_path, price_file):
    root = PricedLM(list(ROOT), model="test:big", cached_share=0.5)
    sub = PricedLM(sub_reply, model="test:small", cached_share=0.25)
    other = PricedLM(lambda m: "other answer", model="test:other", cached_share=0.5)
    rlm = make_rlm(
        root,
        sub,
        models=[other],
        prices=PriceTable.from_file(price_file),
        limits=Limits(max_iterations=5, max_depth=2),
    )
    result = rlm.run("the question", "the context", trace=tmp_path / "t.jsonl")
    assert result.stop_reason is StopReason.FINAL and result.answer == "all done"
    return result, {"test:big": root, "test:small": sub, "test:other": other}


def truth(lm: PricedLM) -> Usage:
    """What a model's recorded calls should cost, computed from scratch."""
    p = PRICES[lm.name]
    total = Usage()
    for messages, text in zip(lm.calls, lm.replies_given, strict=True):
        assert text is not None, "every call got a reply"
        inp = approx_tokens(sum(len(m.content) for m in messages))
        out = approx_tokens(len(text))
        cached = int(inp * lm.cached_share)
        rate = p.get("cached_input", p["input"])
        cost = ((inp - cached) * p["input"] + cached * rate + out * p["output"]) / 1e6
        total = total + Usage(inp, out, cached, 1, cost)
    return total


def lm_spans(result):
    return [s for s in result.spans if s.kind == "lm_call"]  # in the order they were charged


def test_the_tree_has_batches_children_and_grandchildren(run):
    result, _ = run
    spans = result.spans
    assert sum(s.kind == "run" for s in spans) == 1 + 2 + 2  # root, 2 children, 2 grandchildren
    depths = {s.attrs["depth"] for s in spans if s.kind == "run"}
    assert depths == {0, 1, 2}
    batches = [s for s in spans if s.kind == "sub_call" and s.attrs["n"] > 1]
    assert {s.attrs["fn"] for s in batches} == {"llm_query_batched", "rlm_query_batched"}
    assert set(result.usage_by_model) == set(PRICES)
    assert set(result.usage_by_depth) == {0, 1, 2, 3}


def test_totals_equal_what_the_models_saw(run):
    result, models = run
    truths = {name: truth(lm) for name, lm in models.items()}
    assert result.usage.calls == sum(len(lm.calls) for lm in models.values())
    for name, t in truths.items():
        got = result.usage_by_model[name]
        assert (got.input_tokens, got.output_tokens, got.cached_tokens, got.calls) == (
            t.input_tokens,
            t.output_tokens,
            t.cached_tokens,
            t.calls,
        )
        assert got.cost_usd == pytest.approx(t.cost_usd, rel=1e-12)
    total = sum(truths.values(), Usage())
    assert result.usage.input_tokens == total.input_tokens
    assert result.usage.cached_tokens == total.cached_tokens > 0
    assert result.cost_usd == pytest.approx(total.cost_usd, rel=1e-12)
    assert result.cost_complete


def test_totals_equal_the_sum_of_lm_call_spans_exactly(run):
    result, _ = run
    calls = [call_usage(s) for s in lm_spans(result)]
    assert None not in calls
    assert sum(calls, Usage()) == result.usage  # same order as the budget: bit-identical
    for key, group in (("model", result.usage_by_model), ("depth", result.usage_by_depth)):
        sums: dict = {}
        for s, u in zip(lm_spans(result), calls, strict=True):
            sums[s.attrs[key]] = sums.get(s.attrs[key], Usage()) + u
        assert sums == dict(group)
    assert sum(result.usage_by_model.values(), Usage()).calls == result.usage.calls
    assert sum(result.usage_by_depth.values(), Usage()).calls == result.usage.calls


def test_cached_tokens_are_reported_apart_and_priced_at_the_cached_rate(run):
    result, _ = run
    assert sum(s.attrs["cached_tokens"] > 0 for s in lm_spans(result)) > len(lm_spans(result)) / 2
    for s in lm_spans(result):
        a = s.attrs
        p = PRICES[a["model"]]
        assert 0 <= a["cached_tokens"] <= a["input_tokens"]
        fresh = a["input_tokens"] - a["cached_tokens"]
        rate = p.get("cached_input", p["input"])
        expected = fresh * p["input"] + a["cached_tokens"] * rate + a["output_tokens"] * p["output"]
        assert a["cost_usd"] == pytest.approx(expected / 1e6, rel=1e-12)
    d = result.to_dict()
    assert d["usage"]["cached_tokens"] == result.usage.cached_tokens
    assert d["usage"]["total_tokens"] == result.usage.input_tokens + result.usage.output_tokens


def test_trace_file_summary_and_viewer_agree_with_the_result(run, tmp_path):
    result, _ = run
    trace = read_trace(tmp_path / "t.jsonl")
    summary = summarize(trace.spans)
    assert summary.consistent and summary.complete
    assert summary.usage.to_dict() == result.usage.to_dict()
    assert {k: v.to_dict() for k, v in summary.by_model.items()} == {
        k: v.to_dict() for k, v in result.usage_by_model.items()
    }
    assert {k: v.to_dict() for k, v in summary.by_depth.items()} == {
        k: v.to_dict() for k, v in result.usage_by_depth.items()
    }
    root = SpanTree(trace.spans).root_run()
    assert root.attrs["usage"] == result.usage.to_dict()
    assert viewer_payload(trace)["summary"]["usage"] == result.usage.to_dict()


def test_a_child_run_span_records_its_own_usage(run):
    result, _ = run
    tree = SpanTree(result.spans)
    for child in (s for s in result.spans if s.kind == "run" and s.parent_id):
        assert child.attrs["usage"] == tree.usage_below(child).to_dict()


class BareUsageLM(ScriptedLM):
    """A user backend that reports tokens but leaves ``Usage.calls`` at its default of 0."""

    def __init__(self, *args, model: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = model

    async def complete(self, messages, settings=None) -> Completion:
        c = await super().complete(messages, settings)
        return replace(c, usage=replace(c.usage, calls=0))


def test_every_call_counts_once_whatever_the_backend_reports():
    root = BareUsageLM([repl("print(1)"), repl("FINAL('x')")], model="acme:unknown-model")
    result = make_rlm(root).run("q", "ctx")
    assert result.usage.calls == len(root.calls) == 2
    assert result.usage.unpriced_calls == 2 and not result.cost_complete


def test_a_price_file_can_price_a_local_model(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"ollama:llama3": {"input": 0.1, "output": 0.1}}))
    table = PriceTable.from_file(f)
    assert table.cost("ollama:llama3", Usage(1_000_000, 0, 0, 1)) == pytest.approx(0.1)


def test_the_prices_option_prices_a_real_backend_end_to_end(
    tmp_path, price_file, capsys, monkeypatch
):
    """`recursa ask --prices FILE` over the OpenAI backend, against the fake server on loopback."""
    fake = pytest.importorskip("recursa.testing.fake_server")
    from recursa.cli import main

    prices = tmp_path / "ft.toml"
    prices.write_text("[acme-ft]\ninput = 2.0\noutput = 8.0\ncached_input = 0.5\n")

    def ask(label: str, *extra: str):
        replies = [repl("print(llm_query('hello'))"), repl("FINAL('ok')")]
        trace = tmp_path / f"{label}.jsonl"
        with fake.FakeLLMServer(replies, rules=[("^hello$", "hi")], cached_tokens=7) as srv:
            argv = [
                "ask",
                "-c",
                str(price_file),
                "-m",
                "openai:acme-ft",
                "--base-url",
                srv.base_url,
                "--json",
                "-q",
                "--trace",
                str(trace),
                *extra,
                "q",
            ]
            code = main(argv)
        out = capsys.readouterr().out
        assert code == 0, out
        return json.loads(out), read_trace(trace)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    data, trace = ask("priced", "--prices", str(prices))
    calls = [s for s in trace.spans if s.kind == "lm_call"]
    assert len(calls) == data["usage"]["calls"] == 3
    expected = sum(
        (
            (a["input_tokens"] - a["cached_tokens"]) * 2.0
            + a["cached_tokens"] * 0.5
            + a["output_tokens"] * 8.0
        )
        / 1e6
        for a in (s.attrs for s in calls)
    )
    # The server reports 7 cached prompt tokens per call (fewer when the prompt is shorter).
    assert data["usage"]["cached_tokens"] == sum(min(7, s.attrs["input_tokens"]) for s in calls)
    assert data["usage"]["cached_tokens"] > 0
    assert data["cost_usd"] == pytest.approx(expected, rel=1e-6) and data["cost_complete"]
    assert summarize(trace.spans).consistent
    unpriced, _ = ask("unpriced")  # "acme-ft" is in no built-in table
    assert unpriced["cost_usd"] is None and not unpriced["cost_complete"]
    assert unpriced["usage"]["unpriced_calls"] == 3


def test_max_cost_on_an_unpriced_model_is_warned_in_result_cli_and_json(doc, capsys):
    from recursa.cli import main
    from recursa.testing import FakeLLMServer

    root = ScriptedLM([repl("FINAL('x')")], name="root")
    root.name = "test:unpriced"
    r = make_rlm(root, limits=Limits(max_cost_usd=0.0001)).run("q", "ctx")
    assert any("not enforced" in w and "test:unpriced" in w for w in r.warnings)

    rules = [(r"^Question:", repl("print(1)")), (r"1", repl("FINAL('x')"))]
    with FakeLLMServer(rules=rules) as srv:
        args = ["ask", "-c", str(doc), "-m", "openai:fake-unpriced", "--base-url", srv.base_url]
        args += ["--max-cost", "0.0001"]
        assert main([*args, "--json", "-q", "q"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert sum("not enforced" in w for w in data["warnings"]) == 1  # once, not per call
        assert main([*args, "q"]) == 0
        assert "not enforced" in capsys.readouterr().err


def test_max_cost_on_a_priced_model_gives_no_such_warning():
    from recursa.pricing import ModelPrice

    prices = PriceTable().with_overrides({"scripted:root": ModelPrice(input=1.0, output=1.0)})
    rlm = make_rlm([repl("FINAL('x')")], limits=Limits(max_cost_usd=1.0), prices=prices)
    r = rlm.run("q", "ctx")
    assert not any("not enforced" in w for w in r.warnings)
