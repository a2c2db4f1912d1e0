"""OpenTelemetry export: one OTel span per recursa span, GenAI conventions on LM calls."""

from __future__ import annotations

import builtins
import json

import pytest

from recursa import Limits, MissingDependencyError, ScriptedLM
from recursa.trace.spans import Tracer

from .conftest import make_rlm, repl

pytest.importorskip("opentelemetry.sdk", reason="pip install 'recursa[otel]'")

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from recursa.trace.otel import OTelProcessor, split_model


@pytest.fixture
def exporter():
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    exp.provider = provider
    return exp


def run_tree(exporter, capture_content=False):
    sub = ScriptedLM(
        rules=[(r"Question: child", repl("FINAL('child answer')"))],
        default=lambda m: "sub says hi",
        name="sub",
    )
    rlm = make_rlm(
        [
            repl(
                "r = llm_query_batched(['a', 'b', 'c'])\nc = rlm_query('child', 'ctx')\nprint(r, c)"
            ),
            repl("FINAL('done')"),
        ],
        sub,
        limits=Limits(max_iterations=4),
        processors=[OTelProcessor(exporter.provider, capture_content=capture_content)],
    )
    return rlm.run("the question", "some context")


def test_every_span_is_exported_with_its_parent_and_times(exporter):
    result = run_tree(exporter)
    spans = exporter.get_finished_spans()
    assert len(spans) == len(result.spans)
    by_id = {s.attributes["recursa.span_id"]: s for s in spans}
    ours = {s.id: s for s in result.spans}
    trace_ids = {s.context.trace_id for s in spans}
    assert len(trace_ids) == 1  # one trace for the whole tree
    for rid, o in by_id.items():
        r = ours[rid]
        if r.parent_id is None:
            assert o.parent is None
        else:
            assert o.parent.span_id == by_id[r.parent_id].context.span_id
        assert o.start_time == int(r.start * 1e9)
        assert o.end_time == int(r.end * 1e9)
        assert o.attributes["recursa.kind"] == r.kind
        assert o.attributes["gen_ai.conversation.id"] == result.run_id


def test_lm_calls_follow_the_genai_conventions(exporter):
    result = run_tree(exporter)
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == result.usage.calls == 1 + 3 + 1 + 1  # root x2, batch x3, child x1
    for s in chats:
        a = s.attributes
        assert s.kind is SpanKind.CLIENT
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "scripted"
        assert a["gen_ai.request.model"] in ("root", "sub")
        assert a["gen_ai.response.model"] == a["gen_ai.request.model"]
        assert s.name == f"chat {a['gen_ai.request.model']}"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert "gen_ai.input.messages" not in a  # content is opt-in
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == (
        result.usage.input_tokens
    )
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == (
        result.usage.output_tokens
    )
    # Token counts live on LM calls only, so a backend that sums a trace counts them once.
    assert all("gen_ai.usage.input_tokens" not in s.attributes for s in spans if s not in chats)
    agents = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "invoke_agent"]
    assert [s.name for s in agents].count("invoke_agent recursa") == 1
    assert "invoke_agent recursa (depth 1)" in [s.name for s in agents]
    tools = {s.attributes.get("gen_ai.tool.name") for s in spans}
    assert {"repl", "llm_query_batched", "rlm_query"} <= tools


def test_content_is_exported_only_when_asked(exporter):
    run_tree(exporter, capture_content=True)
    spans = exporter.get_finished_spans()
    chat = next(
        s
        for s in spans
        if s.attributes.get("gen_ai.request.model") == "sub"
        and s.attributes.get("recursa.role") == "sub"
    )
    inp = json.loads(chat.attributes["gen_ai.input.messages"])
    out = json.loads(chat.attributes["gen_ai.output.messages"])
    assert inp[0]["role"] == "user" and inp[0]["parts"][0]["content"] in ("a", "b", "c")
    assert out[0]["parts"][0]["content"] == "sub says hi"
    assert out[0]["finish_reason"] == "stop"
    codes = [
        s.attributes["recursa.code"]
        for s in spans
        if s.attributes.get("gen_ai.tool.name") == "repl"
    ]
    assert any("llm_query_batched" in c for c in codes)
    child = next(s for s in spans if s.name == "invoke_agent recursa (depth 1)")
    assert child.attributes["recursa.answer"] == "child answer"


def test_errors_become_error_status(exporter):
    proc = OTelProcessor(exporter.provider)
    tracer = Tracer([proc], run_id="r1")
    run = tracer.start("run", "rlm", None, depth=0, model="openai:gpt-5-mini")
    call = tracer.start("lm_call", "openai:gpt-5-mini", run, model="openai:gpt-5-mini", depth=0)
    tracer.end(call, error="LMServerError: 503 from upstream")
    tracer.end(run, stop_reason="error")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    failed = spans["chat gpt-5-mini"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "LMServerError"
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert "gen_ai.usage.input_tokens" not in failed.attributes  # never charged, never counted


def test_the_root_run_nests_under_the_callers_current_span(exporter):
    tracer = exporter.provider.get_tracer("app")
    with tracer.start_as_current_span("http request") as outer:
        rec = Tracer([OTelProcessor(exporter.provider)])
        rec.end(rec.start("run", "rlm", None, depth=0, model="local"))
    run = next(s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent"))
    assert run.parent.span_id == outer.get_span_context().span_id


def test_spans_left_open_are_closed_as_errors(exporter):
    proc = OTelProcessor(exporter.provider)
    Tracer([proc]).start("run", "rlm", None, depth=0)
    assert exporter.get_finished_spans() == ()
    proc.close()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


def test_uses_the_global_provider_by_default(exporter, monkeypatch):
    monkeypatch.setattr(otel_trace, "get_tracer_provider", lambda: exporter.provider)
    proc = OTelProcessor()
    t = Tracer([proc])
    t.end(t.start("cell", "cell 1", None, code="print(1)", depth=0))
    assert [s.name for s in exporter.get_finished_spans()] == ["execute_tool repl (cell 1)"]
    assert proc.force_flush()


def test_split_model():
    assert split_model("openai:gpt-5-mini") == ("openai", "gpt-5-mini")
    assert split_model("litellm:openai/gpt-4o") == ("litellm", "openai/gpt-4o")
    assert split_model("local") == ("local", "local")


def test_missing_extra_names_the_pip_command(monkeypatch):
    real_import = builtins.__import__

    def no_otel(name, *args, **kwargs):
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(MissingDependencyError, match=r"pip install 'recursa\[otel\]'"):
        OTelProcessor()
