"""Traces: spans, the JSONL format, and renderers."""

from recursa.trace.jsonl import FORMAT, VERSION, JSONLWriter, TraceFile, read_trace
from recursa.trace.spans import Span, TraceProcessor, Tracer

__all__ = [
    "FORMAT",
    "VERSION",
    "JSONLWriter",
    "Span",
    "TraceFile",
    "TraceProcessor",
    "Tracer",
    "read_trace",
]
