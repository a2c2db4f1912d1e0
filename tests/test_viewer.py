"""The HTML viewer page: self-contained, safe with hostile trace text, and `recursa view`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recursa import Limits, ScriptedLM
from recursa.cli import main
from recursa.trace.html import render_html, script_json, serve_html, viewer_payload
from recursa.trace.jsonl import read_trace

from .conftest import make_rlm, repl

NEEDLE = "ZEBRA-NEEDLE-4417"
HOSTILE = (
    "</script><script>window.__pwned = 1</script>"
    '<img src=x onerror="window.__pwned = 2"><!-- & </style>'
)


def traced_run(path: Path):
    """A run with a batch, a child run and planted text; returns (result, trace path)."""
    sub = ScriptedLM(
        rules=[(r"Question: child task", repl(f"print({HOSTILE!r})\nFINAL('child done')"))],
        default=lambda m: f"answer to {m[-1].content[:40]}",
        name="sub",
    )
    root = [
        repl(f"r = llm_query_batched(['part one {NEEDLE}', 'part two'])\nprint(r)"),
        repl(f"print({HOSTILE!r})\nc = rlm_query('child task', 'child context')\nprint(c)"),
        repl("FINAL('all done')"),
    ]
    rlm = make_rlm(root, sub, limits=Limits(max_iterations=5, max_depth=1))
    result = rlm.run("What happened? " + HOSTILE, "some context", trace=path)
    return result, path


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    return traced_run(tmp_path / "run.jsonl")[1]


def embedded_json(page: str) -> dict:
    m = re.search(
        r'<script type="application/json" id="recursa-data">(.*?)</script>', page, re.DOTALL
    )
    assert m, "the trace data block is missing"
    return json.loads(m.group(1))


def test_page_is_one_self_contained_file(trace_path):
    page = render_html(trace_path)
    assert page.startswith("<!doctype html>")
    # No network: nothing is loaded from anywhere, not even from the same folder.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "http://" not in page and "https://" not in page
    assert "<!--RECURSA:" not in page  # every placeholder filled
    assert "default-src 'none'" in page


def test_hostile_text_cannot_close_the_data_block(trace_path):
    page = render_html(trace_path)
    # Exactly the page's own two script blocks close; the planted ones are escaped.
    assert page.lower().count("</script") == 2
    assert "<img src=x" not in page and "</style>" not in page.split("</style>", 1)[1]
    data = embedded_json(page)
    # The text survives exactly: it is only escaped on the wire.
    assert any(HOSTILE in (s["attrs"].get("stdout") or "") for s in data["spans"])
    run = next(s for s in data["spans"] if s["kind"] == "run" and s["parent_id"] is None)
    assert run["attrs"]["question"].endswith(HOSTILE)


def test_script_json_round_trips_every_character():
    value = {"s": 'a</script>b<!--c-->&d\u2028e\u2029f"g\\h\x00i😀'}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value


def test_csp_hashes_allow_exactly_the_inline_script_and_style(trace_path):
    page = render_html(trace_path)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    script = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    style = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert len(script) == 1 and len(style) == 1

    def h(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"script-src {h(script[0])}" in csp
    assert f"style-src {h(style[0])}" in csp


def test_payload_summary_matches_the_result(tmp_path):
    result, path = traced_run(tmp_path / "r.jsonl")
    data = viewer_payload(read_trace(path))
    s = data["summary"]
    assert s["answer"] == "all done" and s["stop_reason"] == "final"
    assert s["usage"] == result.usage.to_dict()
    assert s["consistent"] and s["complete"]
    assert s["child_runs"] == 1
    assert set(s["by_model"]) == set(result.usage_by_model)
    assert {int(k) for k in s["by_depth"]} == set(result.usage_by_depth)
    assert len(data["spans"]) == len(result.spans)


def test_an_unfinished_trace_still_renders(trace_path):
    lines = trace_path.read_text().splitlines()
    trace_path.write_text("\n".join(lines[:-1]) + "\n")  # the root run span never got written
    data = embedded_json(render_html(trace_path))
    assert data["summary"]["complete"] is False
    assert data["summary"]["stop_reason"] is None
    assert all(s["kind"] != "run" or s["parent_id"] for s in data["spans"])


def test_view_writes_the_page_next_to_the_trace(trace_path, capsys):
    assert main(["view", str(trace_path)]) == 0
    out = capsys.readouterr().out.strip()
    html_path = trace_path.with_suffix(".html")
    assert out == str(html_path.resolve())
    assert embedded_json(html_path.read_text())["summary"]["answer"] == "all done"
    other = trace_path.parent / "sub" / "page.html"
    assert main(["view", str(trace_path), "-o", str(other), "--title", "My <run>"]) == 0
    assert "<title>My &lt;run&gt;</title>" in other.read_text()


def test_view_of_a_missing_trace_is_a_usage_error(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such trace file" in capsys.readouterr().err


def test_serve_html_answers_on_loopback(trace_path):
    page = render_html(trace_path)
    server = serve_html(page)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        r = httpx.get(server.url)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.text == page
        assert httpx.get(server.url + "index.html").text == page
        assert httpx.get(server.url + "../etc/passwd").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_view_serve_command(trace_path):
    """`recursa view --serve` prints its URL first and serves the page until stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recursa", "view", str(trace_path), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200
        assert embedded_json(r.text)["summary"]["answer"] == "all done"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0  # SIGTERM is a clean stop


def test_a_trace_with_unicode_line_separators_reads_back(tmp_path):
    path = tmp_path / "t.jsonl"
    rlm = make_rlm([repl("print('a\\u2028b\\u2029c\\x85d')"), repl("FINAL('done')")])
    result = rlm.run("q", "ctx", trace=path)
    trace = read_trace(path)
    assert len(trace.spans) == len(result.spans)
    assert any("a\u2028b" in (s.attrs.get("stdout") or "") for s in trace.spans)


def test_view_finds_a_journaled_run_by_its_id(capsys):
    result = make_rlm([repl("FINAL('from the journal')")]).run("q", "ctx")
    assert main(["view", result.run_id]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page.name == "trace.html" and page.parent.name == result.run_id
    assert embedded_json(page.read_text())["summary"]["answer"] == "from the journal"
    assert main(["trace", "show", result.run_id]) == 0
    assert "from the journal" in capsys.readouterr().out
