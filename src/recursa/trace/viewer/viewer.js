// recursa trace viewer. Vanilla JS, no dependencies, no network.
// Every piece of trace text reaches the page through textContent or text nodes, never as
// markup: prompts and outputs are untrusted. The tree is a virtual list, so a trace of tens of
// thousands of spans only ever has the rows on screen in the DOM.
"use strict";
(function () {
  const ROW_H = 22;
  const OVERSCAN = 12;
  const DATA = JSON.parse(document.getElementById("recursa-data").textContent);
  const SUMMARY = DATA.summary || {};
  const $ = (id) => document.getElementById(id);

  // ---- helpers ----------------------------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function oneLine(text, n) {
    const s = String(text === undefined || text === null ? "" : text).replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }
  function firstLine(text) {
    for (const line of String(text || "").split("\n")) {
      const t = line.trim();
      if (t && !t.startsWith("```")) return t;
    }
    return "";
  }
  function fmtInt(n) { return (n || 0).toLocaleString("en-US"); }
  function fmtTok(n) {
    if (!n) return "";
    if (n < 1000) return n + " tok";
    if (n < 1e6) return (n / 1000).toFixed(n < 10000 ? 1 : 0) + "k tok";
    return (n / 1e6).toFixed(2) + "M tok";
  }
  function fmtCost(c, unpriced) {
    if (!c && !unpriced) return "";
    const s = c >= 1 ? "$" + c.toFixed(2) : c >= 0.01 ? "$" + c.toFixed(3) : "$" + c.toFixed(4);
    return unpriced ? s + "+?" : s;
  }
  function fmtDur(d) {
    if (d === null || d === undefined) return "…";
    if (d < 1) return (d * 1000).toFixed(0) + "ms";
    if (d < 120) return d.toFixed(2) + "s";
    return Math.floor(d / 60) + "m" + String(Math.round(d % 60)).padStart(2, "0") + "s";
  }
  // Append text to parent with every occurrence of q (lower case) wrapped in <mark>.
  function hl(parent, text, q) {
    text = String(text === undefined || text === null ? "" : text);
    if (!q) { parent.append(text); return; }
    let lo = text.toLowerCase();
    let needle = q;
    if (lo.length !== text.length) { lo = text; needle = state.rawQuery; } // rare Unicode case
    let i = 0, j;
    while ((j = lo.indexOf(needle, i)) >= 0 && needle) {
      parent.append(text.slice(i, j));
      parent.append(el("mark", null, text.slice(j, j + needle.length)));
      i = j + needle.length;
    }
    parent.append(text.slice(i));
  }

  // ---- the tree ---------------------------------------------------------------------------
  const nodes = [];
  const byId = new Map();
  for (const s of DATA.spans) {
    const n = { s: s, a: s.attrs || {}, kids: [], parent: null, depth: 0, open: false, ri: -1,
                tok: 0, cost: 0, unpriced: 0, label: null, hay: null };
    nodes.push(n);
    byId.set(s.id, n);
  }
  const roots = [];
  for (const n of nodes) {
    const p = n.s.parent_id ? byId.get(n.s.parent_id) : undefined;
    if (p) { n.parent = p; p.kids.push(n); } else roots.push(n);
  }
  const byStart = (x, y) => x.s.start - y.s.start || (x.s.end || 0) - (y.s.end || 0);
  roots.sort(byStart);
  for (const n of nodes) if (n.kids.length > 1) n.kids.sort(byStart);
  // Depths and subtree roll-ups (tokens, cost) without recursion: nodes in DFS order, reversed.
  const order = [];
  const stack = roots.slice().reverse();
  while (stack.length) {
    const n = stack.pop();
    n.depth = n.parent ? n.parent.depth + 1 : 0;
    order.push(n);
    for (let i = n.kids.length - 1; i >= 0; i--) stack.push(n.kids[i]);
  }
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    if (n.s.kind === "lm_call" && n.a.input_tokens !== undefined) {
      n.tok += (n.a.input_tokens || 0) + (n.a.output_tokens || 0);
      if (n.a.cost_usd === null || n.a.cost_usd === undefined) n.unpriced += 1;
      else n.cost += n.a.cost_usd;
    }
    if (n.parent) {
      n.parent.tok += n.tok; n.parent.cost += n.cost; n.parent.unpriced += n.unpriced;
    }
  }
  // Open by default: the root run, its iterations and its cells. Sub-calls (which may hold
  // thousands of calls) and child runs start closed.
  for (const n of nodes) {
    const d = n.a.depth || 0;
    n.open = !n.parent || (d === 0 && (n.s.kind === "iteration" || n.s.kind === "cell"));
  }
  let T0 = Infinity, T1 = -Infinity;
  for (const n of nodes) {
    T0 = Math.min(T0, n.s.start);
    T1 = Math.max(T1, n.s.end === null || n.s.end === undefined ? n.s.start : n.s.end);
  }
  if (!isFinite(T0)) { T0 = 0; T1 = 1; }
  if (T1 - T0 < 1e-6) T1 = T0 + 1e-6;

  const state = {
    rows: [], sel: null, query: "", rawQuery: "", matches: [], cur: -1,
    w0: T0, w1: T1, view: "tree",
  };

  function label(n) {
    if (n.label !== null) return n.label;
    const a = n.a, s = n.s;
    let main = s.name, rest = "";
    switch (s.kind) {
      case "run":
        main = s.name + " · " + (a.model || "") + " · " + (a.stop_reason || "unfinished") +
          (a.iterations !== undefined ? " · " + a.iterations + " it" : "");
        rest = a.question ? "Q: " + oneLine(a.question, 200) : "";
        break;
      case "iteration": {
        const call = n.kids.find((k) => k.s.kind === "lm_call");
        main = s.name + (a.last_turn ? " (last turn)" : "") + (a.final ? " ✓ final" : "");
        rest = call ? oneLine(firstLine(call.a.response), 200) : "";
        break;
      }
      case "lm_call":
        main = (a.role || "lm") + " · " + (a.model || s.name);
        rest = oneLine(firstLine(a.response) || firstLine(a.prompt), 200);
        break;
      case "cell":
        main = s.name + (a.final !== null && a.final !== undefined ? " ✓ FINAL" : "");
        rest = oneLine(firstLine(a.code), 200);
        break;
      case "compaction":
        main = s.name + " · " + (a.turns_removed === undefined ? "?" : a.turns_removed) +
          " turns → summary";
        rest = "~" + fmtInt(a.tokens_before) + " → " + fmtInt(a.tokens_after) + " tokens";
        break;
      case "sub_call":
        main = (a.fn || s.name) + ((a.n || 1) !== 1 ? " ×" + a.n : "");
        rest = n.kids.length ? n.kids.length + (n.kids.length === 1 ? " call" : " calls") : "";
        break;
    }
    n.label = { main: main, rest: rest };
    return n.label;
  }
  const TEXT_KEYS = ["prompt", "response", "code", "stdout", "traceback", "question",
                     "answer", "final", "detail", "model", "fn", "role", "stop_reason"];
  function hay(n) {
    if (n.hay === null) {
      const parts = [n.s.name, n.s.error || ""];
      for (const k of TEXT_KEYS) {
        const v = n.a[k];
        if (typeof v === "string") parts.push(v);
      }
      if (Array.isArray(n.a.new_messages)) {
        for (const m of n.a.new_messages) if (m && typeof m.content === "string") parts.push(m.content);
      }
      n.hay = parts.join("\n").toLowerCase();
    }
    return n.hay;
  }

  // ---- rows (virtual list) ----------------------------------------------------------------
  const rowsEl = $("rows"), spacer = $("spacer");
  function rebuildRows() {
    for (const n of state.rows) n.ri = -1;
    const rows = [];
    const st = roots.slice().reverse();
    while (st.length) {
      const n = st.pop();
      n.ri = rows.length;
      rows.push(n);
      if (n.open) for (let i = n.kids.length - 1; i >= 0; i--) st.push(n.kids[i]);
    }
    state.rows = rows;
    spacer.style.height = rows.length * ROW_H + "px";
    scheduleRender();
  }
  let pending = false;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderRows(); });
  }
  function barGeom(n) {
    const span = state.w1 - state.w0;
    const end = n.s.end === null || n.s.end === undefined ? T1 : n.s.end;
    let l = (n.s.start - state.w0) / span, r = (end - state.w0) / span;
    if (r < 0 || l > 1) return null;
    l = Math.max(0, l); r = Math.min(1, r);
    return [l * 100, Math.max(0, r - l) * 100];
  }
  function renderRow(n, i) {
    const s = n.s;
    const row = el("div", "row");
    row.dataset.i = String(i);
    row.dataset.kind = s.kind;
    row.setAttribute("role", "treeitem");
    if (n.kids.length) row.setAttribute("aria-expanded", String(n.open));
    if (n === state.sel) row.classList.add("sel");
    if (s.status !== "ok") row.classList.add("error");
    if (state.query && n.match) {
      row.classList.add("match");
      if (state.matches[state.cur] === n) row.classList.add("cur-match");
    }
    row.style.top = i * ROW_H + "px";
    const lbl = el("div", "lbl");
    lbl.style.paddingLeft = n.depth * 14 + 4 + "px";
    lbl.append(el("span", "tw", n.kids.length ? (n.open ? "▾" : "▸") : ""));
    const known = ["run", "iteration", "lm_call", "cell", "sub_call"].includes(s.kind);
    lbl.append(el("span", "kind k-" + (known ? s.kind : "other"), s.kind.replace("_", " ")));
    const txt = el("span", "txt");
    const lab = label(n);
    hl(txt, lab.main, state.query);
    if (lab.rest) {
      const rest = el("span", "dim");
      rest.append(" — ");
      hl(rest, lab.rest, state.query);
      txt.append(rest);
    }
    if (s.status !== "ok") txt.append(" ✗");
    lbl.append(txt);
    row.append(lbl);
    const src = n.a.source === "cache" ? "cached" : n.a.source === "journal" ? "replayed" : "";
    const met = [src, fmtDur(s.duration_s === undefined ? (s.end - s.start) : s.duration_s),
                 fmtTok(n.tok), fmtCost(n.cost, n.unpriced)].filter(Boolean).join("  ");
    row.append(el("div", "met", met));
    const wf = el("div", "wf");
    const g = barGeom(n);
    if (g) {
      const bar = el("div", "bar b-" + (known ? s.kind : "other") + (s.status !== "ok" ? " err" : ""));
      bar.style.left = g[0] + "%";
      bar.style.width = g[1] + "%";
      wf.append(bar);
    }
    row.title = s.kind + " " + s.name + ": " + fmtDur(s.duration_s) + " starting at +" +
      fmtDur(s.start - T0);
    row.append(wf);
    return row;
  }
  function renderRows() {
    const t0 = performance.now();
    const top = rowsEl.scrollTop, h = rowsEl.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(state.rows.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.append(renderRow(state.rows[i], i));
    spacer.replaceChildren(frag);
    state.renderMs = performance.now() - t0;
  }
  rowsEl.addEventListener("scroll", scheduleRender, { passive: true });
  window.addEventListener("resize", () => { scheduleRender(); drawAxis(); });

  function scrollToRow(i) {
    const top = i * ROW_H, h = rowsEl.clientHeight;
    if (top < rowsEl.scrollTop) rowsEl.scrollTop = top;
    else if (top + ROW_H > rowsEl.scrollTop + h) rowsEl.scrollTop = top + ROW_H - h;
  }
  function select(n, scroll) {
    if (!n) return;
    state.sel = n;
    if (n.ri < 0) reveal(n);
    if (scroll !== false) scrollToRow(n.ri);
    scheduleRender();
    renderDetail(n);
  }
  function reveal(n) {
    let changed = false;
    for (let p = n.parent; p; p = p.parent) if (!p.open) { p.open = true; changed = true; }
    if (changed) rebuildRows();
  }
  function toggle(n, open) {
    if (!n.kids.length) return;
    n.open = open === undefined ? !n.open : open;
    rebuildRows();
  }
  rowsEl.addEventListener("click", (ev) => {
    const row = ev.target.closest(".row");
    if (!row) return;
    const n = state.rows[Number(row.dataset.i)];
    if (ev.target.classList.contains("tw")) toggle(n);
    select(n, false);
    rowsEl.focus({ preventScroll: true });
  });
  rowsEl.addEventListener("dblclick", (ev) => {
    const row = ev.target.closest(".row");
    if (row && !ev.target.classList.contains("tw")) toggle(state.rows[Number(row.dataset.i)]);
  });

  // ---- time axis and concurrency strip ----------------------------------------------------
  const lmSpans = nodes.filter((n) => n.s.kind === "lm_call");
  function drawAxis() {
    const axis = $("axis");
    const w = axis.clientWidth || 300;
    const ticks = Math.max(2, Math.min(8, Math.floor(w / 90)));
    const frag = document.createDocumentFragment();
    for (let i = 0; i <= ticks; i++) {
      const t = state.w0 + (state.w1 - state.w0) * (i / ticks);
      const sp = el("span", null, "+" + fmtDur(t - T0));
      sp.style.left = Math.min(96, Math.max(4, (i / ticks) * 100)) + "%";
      frag.append(sp);
    }
    axis.replaceChildren(frag);
    drawConcurrency();
    $("zoom-reset").hidden = state.w0 === T0 && state.w1 === T1;
  }
  function drawConcurrency() {
    const cv = $("concurrency");
    const w = cv.clientWidth || 300, h = 26, dpr = window.devicePixelRatio || 1;
    cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
    const ctx = cv.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, w, h);
    const ev = [];
    for (const n of lmSpans) {
      ev.push([n.s.start, 1]);
      ev.push([n.s.end === null || n.s.end === undefined ? T1 : n.s.end, -1]);
    }
    ev.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let cur = 0, peak = 0;
    for (const e of ev) { cur += e[1]; peak = Math.max(peak, cur); }
    if (!peak) return;
    const span = state.w1 - state.w0;
    const x = (t) => Math.min(w, Math.max(0, ((t - state.w0) / span) * w));
    ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--lm") || "#c2417f";
    ctx.globalAlpha = 0.55;
    cur = 0;
    let lastT = state.w0;
    for (const e of ev) {
      if (cur > 0 && e[0] > lastT) {
        const bh = (cur / peak) * (h - 4);
        ctx.fillRect(x(lastT), h - bh, Math.max(0.5, x(e[0]) - x(lastT)), bh);
      }
      cur += e[1];
      lastT = e[0];
    }
    ctx.globalAlpha = 1;
    ctx.fillStyle = getComputedStyle(document.body).color;
    ctx.font = "10px sans-serif";
    ctx.fillText("LM calls in flight (peak " + peak + ")", 4, 10);
  }
  function zoomTo(n) {
    const end = n.s.end === null || n.s.end === undefined ? T1 : n.s.end;
    const pad = Math.max((end - n.s.start) * 0.02, 1e-4);
    state.w0 = n.s.start - pad; state.w1 = end + pad;
    drawAxis(); scheduleRender();
  }
  function zoomReset() { state.w0 = T0; state.w1 = T1; drawAxis(); scheduleRender(); }
  $("zoom-reset").addEventListener("click", zoomReset);

  // ---- detail pane ------------------------------------------------------------------------
  const detail = $("detail");
  function section(title, text, cls) {
    if (text === undefined || text === null || text === "") return null;
    const f = document.createDocumentFragment();
    f.append(el("h3", null, title));
    const pre = el("pre", cls || null);
    hl(pre, text, state.query);
    f.append(pre);
    return f;
  }
  function kv(rows) {
    const t = el("table", "kv");
    for (const [k, v] of rows) {
      if (v === undefined || v === null || v === "") continue;
      const tr = el("tr");
      tr.append(el("td", null, k));
      const td = el("td");
      if (v instanceof Node) td.append(v); else hl(td, String(v), state.query);
      tr.append(td);
      t.append(tr);
    }
    return t;
  }
  function link(n, text) {
    const a = el("span", "link");
    hl(a, text, state.query);
    a.addEventListener("click", () => select(n));
    return a;
  }
  function usageRows(u, cost, unpriced) {
    return [["tokens in", fmtInt(u.input_tokens)],
            ["cached in", u.cached_tokens ? fmtInt(u.cached_tokens) : ""],
            ["tokens out", fmtInt(u.output_tokens)],
            ["cost", cost === null ? "unpriced" : fmtCost(cost, unpriced) || "$0"]];
  }
  // Time inside a cell spent waiting on its sub-calls: the union of their intervals.
  function waiting(n) {
    const iv = n.kids.filter((k) => k.s.kind === "sub_call")
      .map((k) => [k.s.start, k.s.end === null || k.s.end === undefined ? T1 : k.s.end])
      .sort((x, y) => x[0] - y[0]);
    let total = 0, cs = -Infinity, ce = -Infinity;
    for (const [s, e] of iv) {
      if (s > ce) { total += ce - cs > 0 ? ce - cs : 0; cs = s; ce = e; } else ce = Math.max(ce, e);
    }
    return total + (ce - cs > 0 ? ce - cs : 0);
  }
  function renderDetail(n) {
    const s = n.s, a = n.a, f = document.createDocumentFragment();
    const h = el("h2");
    h.append(el("span", "kind k-" + s.kind, s.kind.replace("_", " ")), " ");
    hl(h, s.name, state.query);
    f.append(h);
    const meta = el("div", "meta");
    meta.append(el("span", null, "+" + fmtDur(s.start - T0)),
                el("span", null, fmtDur(s.duration_s)));
    if (n.tok) meta.append(el("span", null, fmtInt(n.tok) + " tokens below"));
    if (n.cost || n.unpriced) meta.append(el("span", null, fmtCost(n.cost, n.unpriced)));
    if (n.parent) meta.append(link(n.parent, "parent: " + n.parent.s.name));
    f.append(meta);
    if (s.status !== "ok") f.append(el("div", "errbox", "✗ " + (s.error || s.status)));
    const add = (x) => { if (x) f.append(x); };
    if (s.kind === "run") {
      const u = a.usage || {};
      f.append(kv([["model", a.model], ["sub-model", a.sub_model], ["depth", a.depth],
                   ["stop reason", a.stop_reason], ["detail", a.detail],
                   ["iterations", a.iterations], ["score", a.score],
                   ["context", a.context ? a.context.kind + ", " + fmtInt(a.context.chars) +
                     " chars, " + a.context.parts + " part(s)" : ""],
                   ["LM calls below", fmtInt(lmBelow(n))],
                   ["tokens below", fmtInt(n.tok)], ["cost below", fmtCost(n.cost, n.unpriced)],
                   ["tree total then", u.calls !== undefined ?
                     fmtInt(u.calls) + " calls, " + fmtInt(u.total_tokens) + " tok" : ""]]));
      add(section("Question", a.question));
      add(section("Answer", a.answer, "resp"));
      if (a.warnings && a.warnings.length) add(section("Warnings", a.warnings.join("\n")));
    } else if (s.kind === "iteration") {
      for (const k of n.kids) {
        if (k.s.kind === "lm_call") {
          add(section("Model response (" + (k.a.model || "") + ")", k.a.response, "resp"));
        } else if (k.s.kind === "cell") {
          cellSections(k, add, k.s.name + ": ");
        }
      }
    } else if (s.kind === "lm_call") {
      const source = { cache: "call cache (free)", journal: "journal (replayed on resume)" };
      f.append(kv([["model", a.model], ["role", a.role], ["depth", a.depth],
                   ["answered from", source[a.source] || ""],
                   ["messages", a.n_messages], ["prompt chars", fmtInt(a.prompt_chars)],
                   ["finish", a.finish_reason]].concat(
                     a.input_tokens === undefined ? [] :
                       usageRows(a, a.cost_usd === undefined ? null : a.cost_usd, 0))));
      if (Array.isArray(a.new_messages) && a.new_messages.length) {
        // Root turns record the messages added since the model's previous reply, whole.
        for (const m of a.new_messages) add(section("New " + m.role + " message", m.content));
      } else {
        add(section(a.n_messages > 1 ? "Prompt (last message)" : "Prompt", a.prompt));
      }
      add(section("Response", a.response, "resp"));
    } else if (s.kind === "cell") {
      const w = waiting(n);
      f.append(kv([["wall time", fmtDur(s.duration_s)],
                   ["waiting on sub-calls", w ? fmtDur(w) : ""],
                   ["output cut", a.output_cut_chars ? fmtInt(a.output_cut_chars) + " chars" : ""],
                   ["fatal", a.fatal ? a.fatal_reason || "yes" : ""]]));
      cellSections(n, add, "");
    } else if (s.kind === "compaction") {
      // Older root turns replaced by a summary; the whole transcript went into the REPL.
      f.append(kv([["window", fmtInt(a.window)], ["threshold", fmtInt(a.threshold_tokens)],
                   ["tokens before", fmtInt(a.tokens_before)],
                   ["tokens after", fmtInt(a.tokens_after)],
                   ["turns removed", a.turns_removed], ["request form", a.form],
                   ["transcript messages", a.transcript_messages]]));
      add(section("Summary", a.summary, "resp"));
    } else if (s.kind === "sub_call") {
      f.append(kv([["function", a.fn], ["items", a.n], ["depth", a.depth],
                   ["instruction", a.op ? a.instruction : ""],
                   ["labels", Array.isArray(a.labels) ? a.labels.join(", ") : ""],
                   ["prompts", a.op ? a.prompts : ""],
                   ["asked again", a.retried ? fmtInt(a.retried) : ""],
                   ["no usable answer", a.failed ? fmtInt(a.failed) : ""]]));
      if (Array.isArray(a.items) && a.items.length) {
        // A list operation (llm_map, llm_classify, llm_filter): each item and its value.
        f.append(el("h3", null, "Items"));
        const ol = el("ol", "items");
        for (const pair of a.items) {
          const v = pair[1] === null ? "(no answer)" : String(pair[1]);
          ol.append(el("li", null, oneLine(String(pair[0]), 160) + " → " + oneLine(v, 120)));
        }
        if ((a.n || 0) > a.items.length) {
          ol.append(el("li", "meta", "… " + (a.n - a.items.length) + " more items"));
        }
        f.append(ol);
      }
      f.append(el("h3", null, "Calls"));
      const ul = el("ul", "items");
      for (const k of n.kids.slice(0, 500)) {
        const li = el("li");
        const txt = k.s.kind === "run"
          ? "child run: " + oneLine(k.a.question, 120) + " → " + oneLine(k.a.answer, 120)
          : oneLine(k.a.prompt, 120) + " → " + oneLine(k.a.response, 120);
        li.append(link(k, txt), " ", el("span", "meta", fmtDur(k.s.duration_s)));
        ul.append(li);
      }
      if (n.kids.length > 500) ul.append(el("li", "meta", "… " + (n.kids.length - 500) + " more"));
      f.append(ul);
    }
    const subs = s.kind === "iteration" || s.kind === "cell" ? subCalls(n) : [];
    if (subs.length) {
      f.append(el("h3", null, "Sub-calls"));
      const ul = el("ul", "items");
      for (const k of subs) {
        ul.append(el("li"));
        ul.lastChild.append(link(k, label(k).main + " — " + label(k).rest), " ",
                            el("span", "meta", fmtDur(k.s.duration_s) + " " +
                               fmtCost(k.cost, k.unpriced)));
      }
      f.append(ul);
    }
    const raw = el("details");
    raw.append(el("summary", null, "all attributes"));
    raw.addEventListener("toggle", () => {
      if (raw.open && raw.children.length === 1) {
        raw.append(el("pre", null, JSON.stringify(Object.assign({ id: s.id, parent_id: s.parent_id,
          start: s.start, end: s.end, status: s.status, error: s.error }, { attrs: a }), null, 2)));
      }
    });
    f.append(raw);
    detail.replaceChildren(f);
    const m = detail.querySelector("mark");
    if (m) m.classList.add("cur");
  }
  function cellSections(k, add, prefix) {
    const a = k.a;
    add(section(prefix + "Code", a.code, "code"));
    add(section(prefix + "Output", a.stdout));
    add(section(prefix + "Error", a.traceback, "error"));
    if (a.final !== null && a.final !== undefined) add(section(prefix + "FINAL", a.final, "resp"));
  }
  function subCalls(n) {
    const out = [];
    const st = n.kids.slice();
    while (st.length) {
      const k = st.shift();
      if (k.s.kind === "sub_call") out.push(k); else if (k.s.kind === "cell") st.push(...k.kids);
    }
    return out;
  }
  function lmBelow(n) {
    let c = 0;
    const st = [n];
    while (st.length) {
      const k = st.pop();
      if (k.s.kind === "lm_call") c++;
      for (const kid of k.kids) st.push(kid);
    }
    return c;
  }

  // ---- summary bar and usage view ---------------------------------------------------------
  function renderSummary() {
    const bar = $("summary"), u = SUMMARY.usage || {};
    const item = (k, v, cls) => {
      const d = el("div", "item " + (cls || ""));
      d.append(el("span", "k", k));
      if (v instanceof Node) d.append(v); else d.append(el("span", "v", v));
      bar.append(d);
      return d;
    };
    const stop = el("span", "v stop" + (SUMMARY.stop_reason === "final" ? " final" : ""),
                    SUMMARY.stop_reason || (SUMMARY.complete ? "?" : "unfinished run"));
    item("stop", stop);
    item("iterations", fmtInt(SUMMARY.iterations));
    item("LM calls", fmtInt(u.calls) + (SUMMARY.failed_calls ? " (+" + SUMMARY.failed_calls +
         " failed)" : ""));
    item("tokens", fmtInt(u.input_tokens) + " in · " + fmtInt(u.output_tokens) + " out");
    if (u.cached_tokens) item("cached", fmtInt(u.cached_tokens) + " in");
    const cost = u.calls && u.unpriced_calls === u.calls ? "unknown"
      : "$" + (u.cost_usd || 0).toFixed(4) + (u.unpriced_calls ? " + " + u.unpriced_calls +
        " unpriced" : "");
    item("cost", cost);
    item("wall time", fmtDur(SUMMARY.wall_time_s));
    if (SUMMARY.child_runs) item("child runs", fmtInt(SUMMARY.child_runs));
    if (SUMMARY.cache_hits) item("cache hits", fmtInt(SUMMARY.cache_hits));
    if (SUMMARY.replayed_calls) item("replayed", fmtInt(SUMMARY.replayed_calls));
    if (SUMMARY.score !== null && SUMMARY.score !== undefined) item("score", SUMMARY.score);
    item("spans", fmtInt(nodes.length));
    if (!SUMMARY.consistent) {
      item("check", "recorded usage ≠ sum of LM calls", "warn");
    }
    const ans = item("answer", el("span", "v"), "answer");
    hl(ans.lastChild, SUMMARY.answer === null || SUMMARY.answer === undefined ?
       "(no answer recorded)" : SUMMARY.answer, "");
    ans.title = "show the root run";
    ans.addEventListener("click", () => { const r = roots.find((x) => x.s.kind === "run"); if (r) select(r); });
  }
  function usageTable(title, group, keyName) {
    const f = document.createDocumentFragment();
    f.append(el("h2", null, title));
    const t = el("table", "usage");
    const head = el("tr");
    for (const c of [keyName, "calls", "input", "cached input", "output", "total", "cost", "share"]) {
      head.append(el("th", null, c));
    }
    t.append(head);
    const total = SUMMARY.usage || {};
    const entries = Object.entries(group || {});
    for (const [k, u] of entries.concat([["total", total]])) {
      const tr = el("tr", k === "total" && entries.length ? "total" : "");
      const share = total.cost_usd ? u.cost_usd / total.cost_usd
        : total.total_tokens ? u.total_tokens / total.total_tokens : 0;
      const bar = el("span", "share");
      bar.style.width = Math.round(share * 80) + "px";
      const cells = [k, fmtInt(u.calls), fmtInt(u.input_tokens), fmtInt(u.cached_tokens),
                     fmtInt(u.output_tokens), fmtInt(u.total_tokens),
                     (u.calls && u.unpriced_calls === u.calls) ? "unpriced"
                       : "$" + (u.cost_usd || 0).toFixed(5) + (u.unpriced_calls ? "+?" : "")];
      for (const c of cells) tr.append(el("td", null, c));
      const td = el("td");
      td.append(bar, " " + Math.round(share * 100) + "%");
      tr.append(td);
      t.append(tr);
      if (k === "total" && !entries.length) break;
    }
    f.append(t);
    return f;
  }
  function renderUsage() {
    const v = $("usage-view");
    const f = document.createDocumentFragment();
    f.append(usageTable("By model", SUMMARY.by_model, "model"));
    f.append(usageTable("By depth", SUMMARY.by_depth, "depth"));
    f.append(usageTable("By role", SUMMARY.by_role, "role"));
    const p = el("p", "meta",
      "Summed over the trace's LM calls. Cached input is part of input, reported apart and " +
      "priced at the cached rate where the model has one.");
    f.append(p);
    if (!SUMMARY.consistent && SUMMARY.recorded_usage) {
      f.append(el("p", "warn", "The run recorded " + JSON.stringify(SUMMARY.recorded_usage) +
        ", which differs from the sum of its LM calls."));
    }
    v.replaceChildren(f);
  }
  function showView(name) {
    state.view = name;
    $("tree-view").hidden = name !== "tree";
    $("usage-view").hidden = name !== "usage";
    $("tab-tree").classList.toggle("on", name === "tree");
    $("tab-usage").classList.toggle("on", name === "usage");
    if (name === "usage") renderUsage(); else { scheduleRender(); drawAxis(); }
  }
  $("tab-tree").addEventListener("click", () => showView("tree"));
  $("tab-usage").addEventListener("click", () => showView("usage"));

  // ---- search -----------------------------------------------------------------------------
  const searchEl = $("search");
  function runSearch(raw) {
    state.rawQuery = raw.trim();
    const q = state.rawQuery.toLowerCase();
    for (const n of state.matches) n.match = false;
    state.query = q;
    state.matches = [];
    state.cur = -1;
    if (q) {
      for (const n of nodes) if (hay(n).includes(q)) { n.match = true; state.matches.push(n); }
      let changed = false;
      for (const m of state.matches) {
        for (let p = m.parent; p && !p.revealed; p = p.parent) {
          p.revealed = true;
          if (!p.open) { p.open = true; changed = true; }
        }
      }
      for (const m of state.matches) for (let p = m.parent; p; p = p.parent) p.revealed = false;
      if (changed) rebuildRows();
      state.matches.sort((x, y) => x.ri - y.ri);
    }
    updateCount();
    if (state.matches.length) gotoMatch(0);
    else { scheduleRender(); if (state.sel) renderDetail(state.sel); }
  }
  function updateCount() {
    const c = $("search-count");
    if (!state.query) c.textContent = "";
    else if (!state.matches.length) c.textContent = "no match";
    else c.textContent = (state.cur + 1) + " / " + state.matches.length;
  }
  function gotoMatch(i) {
    const k = state.matches.length;
    if (!k) return;
    state.cur = ((i % k) + k) % k;
    updateCount();
    select(state.matches[state.cur]);
  }
  let searchTimer = 0;
  searchEl.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => runSearch(searchEl.value), 120);
  });
  searchEl.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      clearTimeout(searchTimer);
      if (searchEl.value.trim().toLowerCase() !== state.query) runSearch(searchEl.value);
      else gotoMatch(state.cur + (ev.shiftKey ? -1 : 1));
      ev.preventDefault();
    } else if (ev.key === "Escape") {
      searchEl.blur();
      rowsEl.focus({ preventScroll: true });
    }
  });
  $("next-match").addEventListener("click", () => gotoMatch(state.cur + 1));
  $("prev-match").addEventListener("click", () => gotoMatch(state.cur - 1));

  // ---- expand / collapse, keyboard --------------------------------------------------------
  function expandAll(under) {
    const st = under ? [under] : roots.slice();
    while (st.length) { const n = st.pop(); n.open = true; st.push(...n.kids); }
    rebuildRows();
  }
  function collapseAll() {
    for (const n of nodes) n.open = !n.parent;
    rebuildRows();
    if (state.sel && state.sel.ri < 0) {
      let p = state.sel;
      while (p.parent && p.ri < 0) p = p.parent;
      select(p);
    }
  }
  $("expand-all").addEventListener("click", () => expandAll(null));
  $("collapse-all").addEventListener("click", collapseAll);
  const help = $("help");
  $("help-button").addEventListener("click", () => { help.hidden = !help.hidden; });
  help.addEventListener("click", () => { help.hidden = true; });

  document.addEventListener("keydown", (ev) => {
    if (ev.target === searchEl || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const n = state.sel, rows = state.rows;
    const at = n && n.ri >= 0 ? n.ri : 0;
    const page = Math.max(1, Math.floor(rowsEl.clientHeight / ROW_H) - 1);
    let handled = true;
    switch (ev.key) {
      case "ArrowDown": case "j": select(rows[Math.min(rows.length - 1, at + 1)]); break;
      case "ArrowUp": case "k": select(rows[Math.max(0, at - 1)]); break;
      case "PageDown": select(rows[Math.min(rows.length - 1, at + page)]); break;
      case "PageUp": select(rows[Math.max(0, at - page)]); break;
      case "Home": select(rows[0]); break;
      case "End": select(rows[rows.length - 1]); break;
      case "ArrowRight": case "l":
        if (n && n.kids.length && !n.open) toggle(n, true);
        else if (n && n.kids.length) select(n.kids[0]);
        break;
      case "ArrowLeft": case "h":
        if (n && n.kids.length && n.open) toggle(n, false);
        else if (n && n.parent) select(n.parent);
        break;
      case "p": if (n && n.parent) select(n.parent); break;
      case "Enter": case " ": if (n) toggle(n); break;
      case "/": searchEl.focus(); searchEl.select(); break;
      case "n": gotoMatch(state.cur + 1); break;
      case "N": gotoMatch(state.cur - 1); break;
      case "E": expandAll(n); break;
      case "C": collapseAll(); break;
      case "z": if (n) zoomTo(n); break;
      case "0": zoomReset(); break;
      case "u": showView(state.view === "usage" ? "tree" : "usage"); break;
      case "?": help.hidden = !help.hidden; break;
      case "Escape": help.hidden = true; break;
      default: handled = false;
    }
    if (handled) ev.preventDefault();
  });

  // Drag the splitter to give the tree or the detail pane more room.
  const splitter = $("splitter");
  splitter.addEventListener("mousedown", (ev) => {
    ev.preventDefault();
    const move = (e) => {
      const w = Math.min(window.innerWidth - 320, Math.max(240, window.innerWidth - e.clientX));
      detail.style.flexBasis = w + "px";
      scheduleRender(); drawAxis();
    };
    const up = () => { document.removeEventListener("mousemove", move);
                       document.removeEventListener("mouseup", up); };
    document.addEventListener("mousemove", move);
    document.addEventListener("mouseup", up);
  });

  // ---- start ------------------------------------------------------------------------------
  renderSummary();
  rebuildRows();
  drawAxis();
  const first = roots.find((x) => x.s.kind === "run") || roots[0];
  if (first) select(first, false);
  renderRows();
  // For tests and the benchmark: the viewer is ready, and a small API to drive it.
  window.recursaViewer = {
    ready: true, readyMs: performance.now(), spans: nodes.length,
    rows: () => state.rows.length, lastRenderMs: () => state.renderMs,
    search: (q) => { searchEl.value = q; runSearch(q); return state.matches.length; },
    expandAll: () => expandAll(null), collapseAll: collapseAll,
    select: (id) => { const n = byId.get(id); if (n) select(n); return !!n; },
  };
  document.documentElement.dataset.ready = "1";
  // Build the search text of every span in small slices while the page is idle, so the first
  // search on a large trace does not pay for it.
  let warm = 0;
  (function warmSearch() {
    const stop = Math.min(nodes.length, warm + 500);
    for (; warm < stop; warm++) hay(nodes[warm]);
    if (warm < nodes.length) setTimeout(warmSearch, 0);
  })();
})();
