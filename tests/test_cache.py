"""The call cache: never pay twice for the same deterministic request."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

from recursa import RLM, CallCache, Limits, ModelPrice, PriceTable, ScriptedLM
from recursa.cache import cacheable
from recursa.lm.base import BaseLM
from recursa.types import Completion, LMSettings, Usage

from .conftest import repl


class Priced(ScriptedLM):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.name = "test:priced"


PRICES = PriceTable().with_overrides({"test:priced": ModelPrice(input=10.0, output=10.0)})
STEPS = [repl("r = llm_query_batched(['a', 'b'])"), repl("FINAL(','.join(r))")]


def run_once(tmp_path, cache_path, temperature=None):
    root = Priced(STEPS)
    sub = Priced(lambda m: "sub:" + m[-1].content)
    rlm = RLM(
        root,
        sub,
        cache=cache_path,
        prices=PRICES,
        temperature=temperature,
        runs_root=tmp_path,
        limits=Limits(max_iterations=4),
    )
    return rlm.run("q", "ctx"), root, sub


def test_a_repeated_run_is_answered_from_the_cache(tmp_path):
    cache = tmp_path / "calls.sqlite"
    first, _, _ = run_once(tmp_path, cache)
    assert first.cache_hits == 0 and first.cost_usd > 0
    second, root, sub = run_once(tmp_path, cache)
    assert second.answer == first.answer == "sub:a,sub:b"
    assert root.calls == [] and sub.calls == []
    assert second.cache_hits == 4
    assert second.cost_usd == 0.0
    assert abs(second.saved_usd - first.cost_usd) < 1e-12
    sources = {s.attrs.get("source") for s in second.spans if s.kind == "lm_call"}
    assert sources == {"cache"}
    stats = CallCache(cache).stats()
    assert stats.entries == 4 and stats.hits == 4
    assert abs(stats.saved_usd - first.cost_usd) < 1e-12


def test_sampled_requests_are_not_cached(tmp_path):
    cache = tmp_path / "calls.sqlite"
    run_once(tmp_path, cache, temperature=0.7)
    _, root, _ = run_once(tmp_path, cache, temperature=0.7)
    assert len(root.calls) == 2
    assert CallCache(cache).stats().entries == 0
    assert cacheable(BaseLM(), LMSettings(temperature=0))
    assert not cacheable(BaseLM(), LMSettings())
    assert cacheable(ScriptedLM([]), LMSettings())


def test_clear(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    cache.put("k", "m", Completion("t", Usage(1, 1, calls=1)), 0.5)
    assert cache.get("k").text == "t"
    assert cache.clear() == 1
    assert cache.get("k") is None
    assert cache.stats().entries == 0


WRITER = textwrap.dedent(
    """
    import sys
    from recursa.cache import CallCache
    from recursa.types import Completion, Usage
    cache = CallCache(sys.argv[1])
    for i in range(300):
        key = f"key-{i % 150}"
        cache.put(key, "m", Completion(f"answer {i % 150}", Usage(3, 4, calls=1)), 0.01)
        hit = cache.get(key)
        assert hit is not None and hit.text == f"answer {i % 150}", hit
    print("ok")
    """
)


def test_two_processes_sharing_a_cache_do_not_corrupt_it(tmp_path):
    path = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == "ok"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 150
    assert conn.execute("SELECT SUM(hits) FROM calls").fetchone()[0] == 600
    conn.close()


def test_cli_cache_implies_temperature_0_for_api_models(tmp_path, monkeypatch, capsys):
    import json

    from recursa.cli import main
    from recursa.testing import FakeLLMServer

    monkeypatch.setenv("RECURSA_CACHE_DIR", str(tmp_path / "cache"))
    doc = tmp_path / "doc.txt"
    doc.write_text("the launch is on 2031-04-05")
    rules = [(r"^Question:", repl("print(context[:40])")), (r"launch", repl("FINAL('2031')"))]
    with FakeLLMServer(rules=rules) as srv:
        args = ["ask", "-c", str(doc), "-m", "openai:fake", "--base-url", srv.base_url, "--cache"]
        assert main([*args, "--json", "-q", "When?"]) == 0
        first = json.loads(capsys.readouterr().out)
        sent = len(srv.requests)
        assert sent == 2 and all(r.body.get("temperature") == 0 for r in srv.requests)
        assert main([*args, "--json", "-q", "When?"]) == 0
        second = json.loads(capsys.readouterr().out)
        assert len(srv.requests) == sent  # every call answered from the cache
        assert first["cache_hits"] == 0 and second["cache_hits"] == 2
        assert second["answer"] == "2031"
        # An explicit sampling temperature is kept, and the CLI says why nothing is cached.
        assert main([*args, "--temperature", "0.7", "When?"]) == 0
        assert "not cached" in capsys.readouterr().err
        assert len(srv.requests) == sent + 2
