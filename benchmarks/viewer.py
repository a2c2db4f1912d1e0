"""Trace viewer responsiveness on a large trace (goal: 10 000 spans stay responsive).

Builds a synthetic trace shaped like a big RLM run (30 root iterations, each fanning out a
``llm_query_batched`` of ~170 calls at concurrency 16, and every third iteration four child
runs with their own iterations and batches), renders the HTML page, loads it in headless
Chromium and measures, inside the browser:

- load: navigation start to the viewer being ready (JSON parsed, tree built, first rows drawn);
- expand all: every node opened and the rows redrawn (two animation frames);
- search: a term found in one span, its ancestors expanded, the match selected and drawn;
- scroll: the time to draw a frame of rows after jumping to a new scroll position;
- keys: ArrowDown through the tree, per key press until the frame is drawn.

Run: ``python benchmarks/viewer.py`` (``--spans 50000`` for a bigger trace, ``--keep DIR`` to
keep the trace and page). Needs Playwright and a Chromium binary (``RECURSA_CHROMIUM`` or
``chromium`` on PATH); no network.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from recursa.trace.html import write_html
from recursa.trace.jsonl import JSONLWriter, read_trace
from recursa.trace.spans import Span

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
WORDS = ["the", "log", "shows", "a", "retry", "after", "timeout", "client", "gave", "up", "request"]
NEEDLE = "NEEDLE-93817"


def text(rng: random.Random, n: int) -> str:
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


class Builder:
    """Writes spans with synthetic times straight to a JSONL trace."""

    def __init__(self, path: Path, seed: int = 1) -> None:
        self.writer = JSONLWriter(path, run_id="bench")
        self.rng = random.Random(seed)
        self.count = 0

    def span(self, kind, name, parent, start, end, **attrs) -> Span:
        s = Span(kind=kind, name=name, parent_id=parent.id if parent else None, run_id="bench")
        s.start, s.end, s.attrs = start, end, attrs
        self.writer.on_end(s)
        self.count += 1
        return s

    def lm(self, parent, t, dur, role, depth, model, prompt_chars, response_chars) -> Span:
        inp, out = prompt_chars // 4, response_chars // 4
        return self.span(
            "lm_call",
            model,
            parent,
            t,
            t + dur,
            model=model,
            role=role,
            depth=depth,
            prompt=text(self.rng, prompt_chars),
            response=text(self.rng, response_chars),
            prompt_chars=prompt_chars,
            n_messages=1,
            finish_reason="stop",
            input_tokens=inp,
            output_tokens=out,
            cached_tokens=inp // 3,
            cost_usd=(inp * 0.25 + out * 2) / 1e6,
        )

    def batch(self, cell, t, n, depth, fn="llm_query_batched") -> float:
        """``n`` sub-calls at concurrency 16; returns when the batch ends."""
        sub = Span(kind="sub_call", name=fn, parent_id=cell.id, run_id="bench")
        slots = [t] * 16
        for _ in range(n):
            i = min(range(16), key=slots.__getitem__)
            dur = self.rng.uniform(0.4, 2.5)
            self.lm(sub, slots[i], dur, "sub", depth + 1, "openai:gpt-5-mini", 1500, 300)
            slots[i] += dur
        end = max(slots)
        sub.start, sub.end, sub.attrs = t, end, {"fn": fn, "n": n, "depth": depth}
        self.writer.on_end(sub)
        self.count += 1
        return end

    def run(self, parent, t, depth, iterations, batch, children_every) -> float:
        run = Span(
            kind="run",
            name="rlm" if not depth else f"child rlm (depth {depth})",
            parent_id=parent.id if parent else None,
            run_id="bench",
        )
        start = t
        for i in range(1, iterations + 1):
            it = Span(kind="iteration", name=f"iteration {i}", parent_id=run.id, run_id="bench")
            it_start = t
            self.lm(it, t, 3.0, "root", depth, "openai:gpt-5", 3000, 600)
            t += 3.0
            cell = Span(kind="cell", name="cell 1", parent_id=it.id, run_id="bench")
            cell_start = t
            t = self.batch(cell, t + 0.01, batch, depth)
            if children_every and i % children_every == 0:
                sub = Span(
                    kind="sub_call", name="rlm_query_batched", parent_id=cell.id, run_id="bench"
                )
                sub_start, ends = t, []
                for _ in range(4):
                    ends.append(self.run(sub, t, depth + 1, 5, 20, 0))
                t = max(ends)
                sub.start, sub.end = sub_start, t
                sub.attrs = {"fn": "rlm_query_batched", "n": 4, "depth": depth}
                self.writer.on_end(sub)
                self.count += 1
            stdout = text(self.rng, 2000) + (f" {NEEDLE}" if depth == 0 and i == 17 else "")
            cell.start, cell.end = cell_start, t
            cell.attrs = {
                "code": "r = llm_query_batched(chunks)\n" + text(self.rng, 300),
                "stdout": stdout,
                "depth": depth,
                "index": 1,
            }
            self.writer.on_end(cell)
            it.start, it.end = it_start, t
            it.attrs = {"index": i, "depth": depth, "final": i == iterations}
            self.writer.on_end(it)
            self.count += 2
        run.start, run.end = start, t
        run.attrs = {
            "question": "Which clients hit the rate limit most?",
            "depth": depth,
            "model": "openai:gpt-5",
            "stop_reason": "final",
            "answer": "client 42",
            "iterations": iterations,
        }
        self.writer.on_end(run)
        self.count += 1
        return t


def build(path: Path, spans: int) -> int:
    # ~10 000 spans at scale 1: 30 iterations x (4 + 170 sub-calls) + 10 x 4 children of 121.
    scale = spans / 10_080
    b = Builder(path)
    b.run(None, 1_700_000_000.0, 0, 30, max(1, round(170 * scale)), 3)
    b.writer.close()
    return b.count


MEASURE = """async () => {
  const v = window.recursaViewer, frame = () => new Promise(r => requestAnimationFrame(r));
  const rows = document.getElementById('rows');
  const out = {};
  let t = performance.now(); v.expandAll(); await frame(); await frame();
  out.expand_ms = performance.now() - t; out.rows = v.rows();
  const steps = [], draws = [];
  for (let i = 1; i <= 40; i++) {
    t = performance.now();
    rows.scrollTop = (rows.scrollHeight * i) / 41; await frame(); await frame();
    steps.push(performance.now() - t); draws.push(v.lastRenderMs());
  }
  steps.sort((a, b) => a - b); draws.sort((a, b) => a - b);
  out.scroll_median_ms = steps[20]; out.scroll_max_ms = steps[steps.length - 1];
  out.draw_median_ms = draws[20]; out.draw_max_ms = draws[draws.length - 1];
  v.collapseAll(); await frame();
  t = performance.now(); out.matches = v.search(arguments_needle); await frame(); await frame();
  out.search_ms = performance.now() - t;
  t = performance.now(); v.search('retry'); await frame(); await frame();
  out.search_common_ms = performance.now() - t;
  return out;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="write the trace and page here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("RECURSA_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("no chromium: set RECURSA_CHROMIUM or install chromium")
    work = args.keep or Path(tempfile.mkdtemp(prefix="recursa-viewer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    trace_path = work / "big.jsonl"
    n = build(trace_path, args.spans)
    t = time.perf_counter()
    page_path = write_html(read_trace(trace_path), work / "big.html")
    render_s = time.perf_counter() - t
    print(f"trace: {n:,} spans, {trace_path.stat().st_size / 1e6:.1f} MB JSONL")
    print(
        f"page:  {page_path.stat().st_size / 1e6:.1f} MB HTML, rendered in {render_s:.2f}s (Python)"
    )
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(work / "profile"),
            executable_path=chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        loads = []
        for _ in range(3):
            page = ctx.new_page()
            errors: list[str] = []
            page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
            page.goto(page_path.as_uri())
            page.wait_for_function("() => window.recursaViewer && window.recursaViewer.ready")
            loads.append(page.evaluate("() => window.recursaViewer.readyMs"))
            if errors:
                raise SystemExit(f"console errors: {errors}")
        out = page.evaluate(MEASURE.replace("arguments_needle", repr(NEEDLE)))
        page.screenshot(path=str(work / "big.png"))
        page.focus("#rows")
        keys = []
        for _ in range(30):
            t = time.perf_counter()
            page.keyboard.press("ArrowDown")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            keys.append((time.perf_counter() - t) * 1000)
        ctx.close()
    print(
        f"load (navigation start -> viewer ready): median {statistics.median(loads):.0f} ms "
        f"of {len(loads)} loads ({', '.join(f'{x:.0f}' for x in loads)})"
    )
    print(f"expand all: {out['expand_ms']:.0f} ms -> {out['rows']:,} rows")
    print(
        f"scroll, time to a drawn frame: median {out['scroll_median_ms']:.1f} ms, "
        f"max {out['scroll_max_ms']:.1f} ms; building the visible rows: median "
        f"{out['draw_median_ms']:.1f} ms, max {out['draw_max_ms']:.1f} ms"
    )
    print(
        f"search (1 match, reveal + select): {out['search_ms']:.0f} ms; "
        f"search 'retry' (every span): {out['search_common_ms']:.0f} ms"
    )
    print(
        f"ArrowDown, key press to drawn frame (incl. Playwright round trip): "
        f"median {statistics.median(keys):.1f} ms"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
