"""`recursa ask --otel` sends the run's spans to an OTLP/HTTP collector (one on loopback here)."""

from __future__ import annotations

import http.server
import threading

import pytest

from recursa.cli import main

from .test_cli import DONE, FIND, script

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")


RECEIVED: list[tuple[str, bytes]] = []


class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        RECEIVED.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        return None


def test_ask_otel_exports_spans_over_otlp(tmp_path, doc, monkeypatch, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        code = main(
            ["ask", "-q", "--otel", "-c", str(doc), "-m", script(tmp_path, [FIND, DONE]), "When?"]
        )
    finally:
        server.shutdown()
        thread.join()
    assert code == 0
    assert capsys.readouterr().out == "2031-04-05\n"
    paths = {p for p, _ in RECEIVED}
    assert paths == {"/v1/traces"}
    payload = b"".join(b for _, b in RECEIVED)
    # The protobuf carries span names and GenAI attribute keys as plain bytes.
    assert b"gen_ai.usage.input_tokens" in payload
    assert b"invoke_agent" in payload
