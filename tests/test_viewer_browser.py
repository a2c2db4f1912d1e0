"""The viewer in a real headless Chromium: loads clean, expands, searches, navigates, draws.

Needs Playwright's Python package and a system Chromium (Debian: ``apt-get install chromium``;
``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1`` so Playwright never fetches its own). Set
``RECURSA_CHROMIUM`` to use another binary. Skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from recursa.trace.html import render_html, serve_html, write_html

from .test_viewer import NEEDLE, traced_run

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect

CHROMIUM = os.environ.get("RECURSA_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")

# Flags that keep Chromium quiet on a closed network (its background fetches are refused here
# and would show up as noise) and working as root in a container.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, url: str):
        self.page.goto(url)
        self.page.wait_for_function("() => window.recursaViewer && window.recursaViewer.ready")
        return self.page


@pytest.fixture
def page_html(tmp_path: Path) -> Path:
    _, trace = traced_run(tmp_path / "run.jsonl")
    return write_html(trace, tmp_path / "run.html")


def row_count(page) -> int:
    return page.evaluate("() => window.recursaViewer.rows()")


def test_loads_expands_searches_and_screenshots(browser_context, page_html, tmp_path):
    pg = Page(browser_context)
    page = pg.open(page_html.as_uri())
    # The summary bar shows the outcome.
    summary = page.inner_text("#summary")
    assert "final" in summary and "all done" in summary
    assert "LM CALLS" in summary.upper()
    # Hostile trace text stayed text.
    assert page.evaluate("() => window.__pwned") is None
    assert "window.__pwned" in page.inner_text("#detail")  # the question, shown as text

    # Expand a collapsed node: the batch's sub-call opens to show its two LM calls.
    before = row_count(page)
    batch = page.locator('.row[data-kind="sub_call"]', has_text="llm_query_batched")
    toggle = batch.locator(".tw")
    assert toggle.inner_text() == "▸"
    toggle.click()
    # The tree re-renders after the click: wait for it (a loaded machine can be slow).
    page.wait_for_function(f"() => window.recursaViewer.rows() === {before + 2}")
    expect(page.locator(".row", has_text="answer to part two")).to_have_count(1, timeout=15_000)
    assert batch.get_attribute("aria-expanded") == "true"

    # Collapse everything, then search for text planted in a sub-call prompt.
    page.click("#collapse-all")
    expect(page.locator(".row", has_text="answer to part two")).to_have_count(0, timeout=15_000)
    page.click("#search")
    page.keyboard.type(NEEDLE)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('search-count').textContent !== ''")
    count = page.inner_text("#search-count")
    assert count.startswith("1 / ") and int(count.split("/ ")[1]) >= 1
    marks = page.locator("#detail mark")
    assert marks.count() >= 1 and marks.first.inner_text() == NEEDLE
    selected = page.locator(".row.sel")
    assert "match" in selected.get_attribute("class")
    assert NEEDLE in selected.inner_text()  # revealed: its ancestors were expanded

    # Keyboard: Escape leaves the search box; arrows move the selection through the tree.
    page.keyboard.press("Escape")
    assert selected.get_attribute("data-kind") == "lm_call"  # the root reply that wrote it
    page.keyboard.press("ArrowUp")
    expect(page.locator(".row.sel")).to_have_attribute("data-kind", "iteration")
    page.keyboard.press("n")  # the next match: the cell that ran that code
    expect(page.locator(".row.sel")).to_have_attribute("data-kind", "cell")
    expect(page.locator("#search-count")).to_have_text(f"2 / {count.split('/ ')[1]}")
    page.keyboard.press("Home")
    expect(page.locator(".row.sel")).to_have_attribute("data-kind", "run")
    expect(page.locator(".row.sel")).to_contain_text("rlm")
    page.keyboard.press("End")
    expect(page.locator(".row.sel")).to_contain_text("FINAL")

    # The usage view lists both models.
    page.keyboard.press("u")
    usage = page.inner_text("#usage-view")
    assert "scripted:root" in usage and "scripted:sub" in usage
    page.keyboard.press("u")

    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert pg.errors == []


def test_a_selected_iteration_shows_its_response_code_and_output(browser_context, page_html):
    pg = Page(browser_context)
    page = pg.open(page_html.as_uri())
    page.locator('.row[data-kind="iteration"]', has_text="iteration 2").click()
    detail = page.inner_text("#detail")
    assert "MODEL RESPONSE" in detail.upper()
    assert "rlm_query('child task'" in detail  # the code
    assert "OUTPUT" in detail.upper() and "child done" in detail  # what the cell printed
    assert "rlm_query" in page.inner_text("#detail ul.items")  # its sub-calls, as links
    page.locator("#detail ul.items .link").first.click()
    assert "sub call" in page.inner_text("#detail h2")
    assert pg.errors == []


def test_served_page_loads_over_loopback(browser_context, tmp_path):
    _, trace = traced_run(tmp_path / "run.jsonl")
    server = serve_html(render_html(trace))
    try:
        pg = Page(browser_context)
        page = pg.open(server.url)
        assert pg.page.evaluate("() => window.recursaViewer.spans") > 10
        assert "all done" in page.inner_text("#summary")
        assert pg.errors == []
    finally:
        server.shutdown()
        server.server_close()


def test_unfinished_and_empty_traces_load_clean(browser_context, tmp_path):
    _, trace = traced_run(tmp_path / "run.jsonl")
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join(lines[:-1]) + "\n")  # the run crashed: no root run span
    empty = tmp_path / "empty.jsonl"
    empty.write_text(lines[0] + "\n")  # nothing but the header
    for path, expect_text in ((trace, "unfinished run"), (empty, "no answer recorded")):
        pg = Page(browser_context)
        page = pg.open(write_html(path, path.with_suffix(".html")).as_uri())
        assert expect_text in page.inner_text("#summary")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("End")
        page.click("#expand-all")
        page.fill("#search", "anything")
        page.keyboard.press("Enter")
        page.keyboard.press("u")
        assert pg.errors == []


def test_a_list_operation_shows_its_items_and_values(browser_context, tmp_path):
    from recursa import RLM, ScriptedLM

    code = (
        "```repl\nkinds = llm_classify(split_lines(context), ['fruit', 'rock'])\nprint(kinds)\n```"
    )
    sub = ScriptedLM(rules=[(r"Labels", lambda m: "1: fruit\n2: rock")], name="sub")
    rlm = RLM(ScriptedLM(replies=[code, "FINAL('ok')"]), sub, journal=False)
    rlm.run("q", "a ripe plum\na grey pebble", trace=tmp_path / "op.jsonl")
    pg = Page(browser_context)
    page = pg.open(write_html(tmp_path / "op.jsonl", tmp_path / "op.html").as_uri())
    page.locator('.row[data-kind="sub_call"]').first.click()
    detail = page.inner_text("#detail")
    assert "llm_classify" in detail and "fruit, rock" in detail  # the function and its labels
    items = page.inner_text("#detail ol.items")
    assert "a ripe plum → fruit" in items and "a grey pebble → rock" in items
    assert pg.errors == []
