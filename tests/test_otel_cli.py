"""`recursa ask --otel` sends the run's spans to an OTLP/HTTP collector (one on loopback here)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
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


@pytest.mark.parametrize("quiet", [True, False])
def test_unreachable_collector_is_quiet(quiet, tmp_path, doc):
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # nothing there
    for var in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
        env.pop(var, None)
    argv = ["ask", "--otel", "--no-journal", "-c", str(doc), "-m", script(tmp_path, [FIND, DONE])]
    proc = subprocess.run(
        [sys.executable, "-m", "recursa", *argv, *(["-q"] if quiet else []), "When?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2031-04-05\n"
    if quiet:
        assert proc.stderr == ""
    else:
        warnings = [line for line in proc.stderr.splitlines() if "otel" in line.lower()]
        assert warnings == ["warning: --otel: the OTLP collector did not take the spans"]
        assert "Traceback" not in proc.stderr and "retrying" not in proc.stderr
