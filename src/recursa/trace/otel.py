"""OpenTelemetry export: every span of a run becomes an OTel span (``pip install 'recursa[otel]'``).

LM calls follow the GenAI semantic conventions (``gen_ai.operation.name = "chat"``, provider,
request and response model, input/output/cached token counts, finish reasons), so Jaeger,
Langfuse, Phoenix, Grafana Tempo and the like show them as model calls. The run is an
``invoke_agent`` span; code cells and ``llm_query``/``rlm_query`` calls are ``execute_tool``
spans. Everything else recursa knows is kept under ``recursa.*`` attributes.

Token counts appear only on LM-call spans, never summed onto their parents: backends add up a
trace's generations themselves, and a total repeated on the run span would be counted twice.
Prompt and response text is sensitive and large, so it is exported only with
``capture_content=True`` (as ``gen_ai.input.messages`` / ``gen_ai.output.messages``).

    from opentelemetry.sdk.trace import TracerProvider
    rlm = RLM(..., processors=[OTelProcessor(TracerProvider(...))])
    rlm = RLM(..., processors=[OTelProcessor.otlp()])   # OTLP/HTTP, configured by OTEL_* vars
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from recursa.errors import MissingDependencyError
from recursa.trace.spans import Span

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import TracerProvider

    _ExporterBase = SpanExporter
else:
    # The SDK is an optional extra, imported only when OTLP export is asked for; at run time
    # the exporter below is duck-typed (the batch processor only calls these three methods).
    _ExporterBase = object

__all__ = ["OTelProcessor", "genai_attributes", "split_model"]

# Long text attributes are clipped: collectors commonly reject spans past a few hundred KB.
_MAX_TEXT = 16_000
_CONTENT_KEYS = ("prompt", "response", "code", "stdout", "traceback", "question", "answer", "final")


# Loggers of the OTLP exporter and the SDK's batch processor that report failed exports.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk._shared_internal",
)


def _drop(record: object) -> bool:
    return False


def _silence_exporter_logs() -> None:
    """Keep the exporter's retry warnings and tracebacks off stderr (the CLI says it once)."""
    import logging

    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if _drop not in logger.filters:
            logger.addFilter(_drop)


class _GiveUpExporter(_ExporterBase):
    """Wraps a span exporter: after one failed export, drop later batches without trying."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.failed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.failed:
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            self.failed = True
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingDependencyError(
            "OpenTelemetry export", "otel", module="opentelemetry"
        ) from None
    return trace


def split_model(model: str) -> tuple[str, str]:
    """``"openai:gpt-5-mini"`` -> ``("openai", "gpt-5-mini")``; no prefix -> ``(model, model)``."""
    provider, sep, name = model.partition(":")
    return (provider, name) if sep else (model, model)


def _clip(text: Any) -> str:
    s = str(text)
    return s if len(s) <= _MAX_TEXT else s[:_MAX_TEXT] + f"... [{len(s) - _MAX_TEXT} chars cut]"


def _messages(role: str, text: Any, finish: Any = None) -> str:
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": _clip(text)}]}
    if finish:
        msg["finish_reason"] = str(finish)
    return json.dumps([msg], ensure_ascii=False)


def genai_attributes(span: Span, *, capture_content: bool = False) -> dict[str, Any]:
    """The OTel attributes for a finished recursa span (GenAI conventions where they apply)."""
    a = span.attrs
    out: dict[str, Any] = {"recursa.kind": span.kind, "recursa.span_id": span.id}
    if span.run_id:
        out["gen_ai.conversation.id"] = span.run_id
    for key in (
        "depth",
        "role",
        "index",
        "fn",
        "n",
        "stop_reason",
        "iterations",
        "detail",
        "finish_reason",
        "prompt_chars",
        "n_messages",
        "elapsed_s",
        "score",
    ):
        v = a.get(key)
        if isinstance(v, str | int | float | bool):
            out[f"recursa.{key}"] = v
    model = a.get("model")
    if isinstance(model, str) and span.kind in ("run", "lm_call"):
        provider, name = split_model(model)
        out["gen_ai.provider.name"] = provider
        out["gen_ai.system"] = provider  # deprecated name, still what many backends read
        out["gen_ai.request.model"] = name
    if span.kind == "run":
        out["gen_ai.operation.name"] = "invoke_agent"
        out["gen_ai.agent.name"] = "recursa"
    elif span.kind == "lm_call":
        out["gen_ai.operation.name"] = "chat"
        if isinstance(model, str):
            out["gen_ai.response.model"] = split_model(str(a.get("response_model") or model))[1]
        if "input_tokens" in a:
            out["gen_ai.usage.input_tokens"] = int(a.get("input_tokens") or 0)
            out["gen_ai.usage.output_tokens"] = int(a.get("output_tokens") or 0)
            if a.get("cached_tokens"):
                out["gen_ai.usage.cache_read.input_tokens"] = int(a["cached_tokens"])
        if a.get("finish_reason"):
            out["gen_ai.response.finish_reasons"] = [str(a["finish_reason"])]
        if a.get("cost_usd") is not None:
            out["recursa.cost_usd"] = float(a["cost_usd"])
    elif span.kind in ("cell", "sub_call"):
        out["gen_ai.operation.name"] = "execute_tool"
        out["gen_ai.tool.name"] = "repl" if span.kind == "cell" else str(a.get("fn") or span.name)
        out["gen_ai.tool.type"] = "function"
    if capture_content:
        if span.kind == "lm_call":
            if a.get("prompt") is not None:
                out["gen_ai.input.messages"] = _messages("user", a["prompt"])
            if a.get("response") is not None:
                out["gen_ai.output.messages"] = _messages(
                    "assistant", a["response"], a.get("finish_reason")
                )
        for key in _CONTENT_KEYS:
            v = a.get(key)
            if v is not None and span.kind != "lm_call":
                out[f"recursa.{key}"] = _clip(v)
    return out


def _span_name(span: Span) -> str:
    a = span.attrs
    if span.kind == "lm_call":
        return f"chat {split_model(str(a.get('model') or span.name))[1]}"
    if span.kind == "run":
        return "invoke_agent recursa" + (f" (depth {a['depth']})" if a.get("depth") else "")
    if span.kind == "cell":
        return f"execute_tool repl ({span.name})"
    if span.kind == "sub_call":
        return f"execute_tool {a.get('fn') or span.name}"
    return span.name


class OTelProcessor:
    """A :class:`~recursa.trace.spans.TraceProcessor` that mirrors spans into OpenTelemetry.

    Args:
        tracer_provider: where spans go (default: the global provider, which an OTel SDK set
            up by the application or ``opentelemetry-instrument`` configures).
        capture_content: also export prompts, responses, code and outputs (off by default).

    Parents follow the recursa tree; the root run hangs under whatever OTel span is current
    when the run starts (a web request, a batch job), so a run shows up inside its caller.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, capture_content: bool = False
    ) -> None:
        trace = _otel()
        from recursa import __version__

        self._trace = trace
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer("recursa", __version__)
        self._provider = provider
        self.capture_content = capture_content
        self._live: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._exporter: _GiveUpExporter | None = None  # set by otlp()

    @classmethod
    def otlp(
        cls,
        endpoint: str | None = None,
        *,
        capture_content: bool = False,
        timeout_s: float | None = None,
        quiet: bool = False,
    ) -> OTelProcessor:
        """Export over OTLP/HTTP (endpoint and headers from ``OTEL_EXPORTER_OTLP_*`` if unset).

        ``timeout_s`` bounds one export, retries included (default: the exporter's, 10 s).
        After an export fails, later batches are dropped at once: a collector that is down
        costs one timeout, not one per batch and another at exit. ``quiet`` keeps the
        exporter's own retry logs off stderr; :attr:`export_failed` tells whether any failed.
        """
        _otel()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise MissingDependencyError("OTLP export", "otel", module="opentelemetry") from None
        provider = TracerProvider(resource=Resource.create({"service.name": "recursa"}))
        kwargs: dict[str, Any] = {"endpoint": endpoint} if endpoint else {}
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        if quiet:
            _silence_exporter_logs()
        exporter = _GiveUpExporter(OTLPSpanExporter(**kwargs))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        processor = cls(provider, capture_content=capture_content)
        processor._exporter = exporter
        return processor

    @property
    def export_failed(self) -> bool:
        """Whether an OTLP export (from :meth:`otlp`) failed: spans were lost."""
        return self._exporter is not None and self._exporter.failed

    # ---- processor ------------------------------------------------------------------------
    def on_start(self, span: Span) -> None:
        trace = self._trace
        try:
            with self._lock:
                parent = self._live.get(span.parent_id) if span.parent_id else None
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            kind = trace.SpanKind.CLIENT if span.kind == "lm_call" else trace.SpanKind.INTERNAL
            otel_span = self._tracer.start_span(
                _span_name(span), context=ctx, kind=kind, start_time=int(span.start * 1e9)
            )
            with self._lock:
                self._live[span.id] = otel_span
        except Exception:  # a telemetry failure must never break a run
            return

    def on_end(self, span: Span) -> None:
        with self._lock:
            otel_span = self._live.pop(span.id, None)
        if otel_span is None:
            return
        try:
            # The name may depend on attributes known only at the end (the model of a child).
            otel_span.update_name(_span_name(span))
            otel_span.set_attributes(genai_attributes(span, capture_content=self.capture_content))
            if span.status != "ok":
                from opentelemetry.trace import Status, StatusCode

                otel_span.set_status(Status(StatusCode.ERROR, str(span.error or span.status)))
                if span.error:
                    otel_span.set_attribute("error.type", str(span.error).split(":", 1)[0])
            end = span.end if span.end is not None else span.start
            otel_span.end(end_time=int(end * 1e9))
        except Exception:
            return

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Push buffered spans out now (call before a short-lived process exits)."""
        flush = getattr(self._provider, "force_flush", None)
        return bool(flush(timeout_ms)) if callable(flush) else True

    def close(self) -> None:
        """End spans left open by a run that crashed, marking them as errors."""
        from opentelemetry.trace import Status, StatusCode

        with self._lock:
            live, self._live = self._live, {}
        for otel_span in live.values():
            otel_span.set_status(Status(StatusCode.ERROR, "the recursa span never ended"))
            otel_span.end()
