"""A trace as one self-contained HTML file: the viewer behind ``recursa view``.

The page is the template, stylesheet and script under ``trace/viewer/`` inlined into one file,
with the trace embedded as JSON. It needs no network, no CDN and no build step: open it from
disk, mail it, attach it to a bug report.

Trace text is untrusted (prompts and outputs may hold ``</script>``, HTML, anything), so:

- the JSON sits in a ``<script type="application/json">`` block with ``<``, ``>``, ``&`` and the
  two JavaScript line separators escaped, so no text can close the block;
- the viewer only ever puts trace text into the page as text nodes;
- a Content-Security-Policy allows exactly the page's own script and style (by hash) and no
  network at all, so even a bug in the viewer could neither run injected script nor send data.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from recursa.paths import open_private
from recursa.trace.jsonl import TraceFile, read_trace
from recursa.trace.summary import SpanTree, summarize

__all__ = [
    "ViewerServer",
    "render_html",
    "script_json",
    "serve_html",
    "viewer_payload",
    "write_html",
]

_PLACEHOLDER = re.compile(r"<!--RECURSA:([A-Z]+)-->")
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@cache
def _asset(name: str) -> str:
    return resources.files("recursa.trace").joinpath("viewer", name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (and still valid JSON).

    Outside strings JSON has none of the escaped characters, and inside strings ``\\u003c`` and
    friends decode to the same text, so ``JSON.parse`` gives back exactly ``data``.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def viewer_payload(trace: TraceFile) -> dict[str, Any]:
    """What the page embeds: the header, the summary computed here, and every span."""
    tree = SpanTree(trace.spans)
    spans = []
    for s in tree.spans:
        d = s.to_dict()
        del d["type"]
        spans.append(d)
    return {
        "header": trace.header,
        "summary": summarize(tree).to_dict(),
        "spans": spans,
        "source": trace.path.name,
    }


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def render_html(trace: TraceFile | str | Path, *, title: str | None = None) -> str:
    """The whole viewer page for ``trace`` (a :class:`TraceFile` or a path to one)."""
    from recursa import __version__

    if not isinstance(trace, TraceFile):
        trace = read_trace(trace)
    css, js = _asset("viewer.css"), _asset("viewer.js")
    if "</script" in js.lower() or "</style" in css.lower():  # would end the inline block early
        raise RuntimeError("viewer assets must not contain a closing script/style tag")
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    run_id = trace.header.get("run_id") or trace.path.stem
    values = {
        "TITLE": html.escape(title or f"recursa trace {run_id}"),
        "VERSION": html.escape(__version__),
        "CSP": html.escape(csp, quote=False),  # single quotes only
        "CSS": css,
        "JS": js,
        "DATA": script_json(viewer_payload(trace)),
    }
    # One pass, so nothing inserted (the trace above all) is ever scanned for placeholders.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("template.html"))


def write_html(trace: TraceFile | str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """Render ``trace`` and write the page to ``out``; return its path."""
    page = render_html(trace, title=title)
    path = Path(out)
    # The page embeds the whole trace (prompts, answers): a new file is private (0600).
    with open_private(path, "wb") as f:
        # A trace written by this process may hold lone surrogates; never fail over one character.
        f.write(page.encode("utf-8", "replace"))
    return path


_HOST = "127.0.0.1"  # loopback only: the page holds the whole trace


class ViewerServer(ThreadingHTTPServer):
    """Serves one page on 127.0.0.1 at ``/`` (and ``/index.html``) until :meth:`shutdown`."""

    daemon_threads = True

    def __init__(self, page: str, port: int = 0) -> None:
        self.page = page.encode("utf-8", "replace")
        super().__init__((_HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.server_port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/index.html"):
            self.send_error(404, "only / is served")
            return
        body = self.server.page
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the CLI reports, not stderr noise
        return None


def serve_html(page: str, *, port: int = 0) -> ViewerServer:
    """Start serving ``page`` on 127.0.0.1 in a background thread; ``port=0`` picks a free one."""
    server = ViewerServer(page, port)
    threading.Thread(target=server.serve_forever, name="recursa-view", daemon=True).start()
    return server
