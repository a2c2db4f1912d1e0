"""benchmarks/compare.py: the fake model's script speaks each framework's dialect, and a short
comparison of recursa alone runs end to end and checks the work each run did."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
# Loaded by path: putting benchmarks/ on sys.path would let its journal.py, tools.py, ...
# shadow other modules for the rest of the test session.
_spec = importlib.util.spec_from_file_location("compare_cells", BENCH / "compare_cells.py")
assert _spec is not None and _spec.loader is not None
cells = importlib.util.module_from_spec(_spec)
sys.modules["compare_cells"] = cells  # dataclasses look their module up while being built
_spec.loader.exec_module(cells)
SCENARIOS, question, responder = cells.SCENARIOS, cells.question, cells.responder


def _root(fw: str, scenario: str, turn: int) -> list[dict[str, str]]:
    q = question("t1", scenario, fw)
    first = {"recursa": f"Question: {q}", "rlms": f"Answer the following: {q}"}.get(fw, q)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": first}]
    for _ in range(turn):
        msgs += [{"role": "assistant", "content": "..."}, {"role": "user", "content": "out"}]
    return msgs


def test_each_framework_gets_its_own_dialect_turn_by_turn():
    assert responder(_root("recursa", "batch100", 0)).count("llm_query_batched") == 1
    assert "range(100)" in responder(_root("recursa", "batch100", 0))
    assert 'FINAL("done")' in responder(_root("recursa", "batch100", 1))
    assert 'answer["ready"] = True' in responder(_root("rlms", "startup", 0))
    assert "x = 3" in responder(_root("rlms", "trivial10", 3))
    assert 'answer["ready"]' in responder(_root("rlms", "trivial10", 10))
    dspy = [{"role": "user", "content": f"{question('t', 'trivial10', 'dspy')}\n"
             "[[ ## iteration ## ]]\n11/20"}]  # fmt: skip
    reply = responder(dspy)
    assert reply.startswith("[[ ## reasoning ## ]]") and 'SUBMIT("done")' in reply


def test_children_and_sub_calls_are_recognised():
    child = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "Question: compare-child 2"},
    ]
    assert "range(10)" in responder(child)
    rlms_child = [
        {"role": "system", "content": 'set answer["ready"] = True when done'},
        {"role": "user", "content": "Your context is a str of 15 total characters."},
    ]
    assert "llm_query_batched" in responder(rlms_child)
    dspy_child = [{"role": "user", "content": "compare-child 1\n[[ ## iteration ## ]]\n2/20"}]
    assert 'SUBMIT("done")' in responder(dspy_child)
    dspy_root = [{"role": "user", "content": f"{question('t', 'depth2', 'dspy')}\n"
                  "[[ ## iteration ## ]]\n1/20"}]  # fmt: skip
    assert "dspy.RLM(" in responder(dspy_root) and "ThreadPoolExecutor(4)" in responder(dspy_root)
    assert responder([{"role": "user", "content": "compare-sub 7"}]) == "ok"
    assert responder([{"role": "user", "content": "hello"}]).startswith("unrecognised")


def test_the_limits_are_the_critical_path():
    assert SCENARIOS["batch100"].limit_s == pytest.approx(0.2 * (2 + 7))
    assert SCENARIOS["depth2"].limit_s == pytest.approx(1.0)
    assert SCENARIOS["depth2"].requests == 2 + 4 * (2 + 10)


def test_a_short_comparison_of_recursa_runs_and_reports_every_cell():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--frameworks", "recursa",
         "--scenarios", "startup,depth2", "--rounds", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "command: " in out and "versions: python" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("recursa ")]
    assert len(rows) == 2, out
    assert all(row[1] != "failed" for row in rows), out
    assert "1.00 s" in out  # depth2's physical limit is printed
