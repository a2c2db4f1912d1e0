"""The work each framework does in ``benchmarks/compare.py``: the scenarios, the fake model's
script (one responder that answers every framework in its own code-block dialect), and the
drivers that run one cell (framework x scenario) in a process of their own.

Run by ``compare.py`` as ``python benchmarks/compare_cells.py --serve FRAMEWORK`` (one warm
process per framework, one cell per line of stdin) or, with ``--cold``, as
``python benchmarks/compare_cells.py FRAMEWORK SCENARIO BASE_URL TAG`` (a fresh process per
cell, so imports and first-use set-up are timed too). Each cell prints one JSON line,
``{"t0": wall clock before the framework was imported and called, "elapsed": s, "answer": ...}``
or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]

SUB = "compare-sub"  # an llm_query prompt
CHILD = "compare-child"  # an rlm_query prompt (recursa shows it as the child's question)
ROOT = "compare-root"  # the root question: "compare-root tag=... scenario=... fw=..."
CAP = 16  # sub-calls in flight: the default of recursa (Limits.max_concurrency) and rlms


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    latency_s: float  # every request waits this long at the fake server
    limit_s: float  # the sum of the latencies on the critical path (0: no latency at all)
    measure: str  # "first_request": call -> first request seen; "elapsed": the whole call
    requests: int  # model requests a run makes: a run that made another number did other work


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("startup", "call to first request (small context)", 0.0, 0.0, "first_request", 1),
        Scenario("trivial10", "10 trivial iterations + FINAL, 0 ms model", 0.0, 0.0, "elapsed", 11),
        # Two root turns around ceil(100/16) waves of sub-calls.
        Scenario(
            "batch100",
            f"100 sub-calls at 200 ms ({CAP} in flight)",
            0.2,
            0.2 * (2 + math.ceil(100 / CAP)),
            "elapsed",
            102,
        ),
        # Root turn, child turn, one wave of 4x10 sub-calls, child final, root final.
        Scenario("depth2", "4 concurrent children x 10 sub-calls, 200 ms", 0.2, 1.0, "elapsed", 50),
    ]
}


# ---- the fake model's script (runs in the server's process) ------------------------------------

_RECURSA = {
    "final": '```repl\nFINAL("done")\n```',
    "batch": '```repl\nr = llm_query_batched([f"{sub} {{i}}" for i in range({n})])\n'
    "print(len(r), r[0])\n```",
    "children": '```repl\nr = rlm_query_batched([f"{child} {{i}}" for i in range(4)])\n'
    "print(r)\n```",
}
_DSPY = {
    # dspy.RLM's ChatAdapter fields; it ends a run with SUBMIT(...).
    "final": 'SUBMIT("done")',
    "batch": 'r = llm_query_batched([f"{sub} {{i}}" for i in range({n})])\nprint(len(r), r[0])',
    # dspy.RLM has no rlm_query: a child is a dspy.RLM sub-agent built in the REPL, four of
    # them on threads (its instructions ask for context-managed executors).
    "children": "import dspy\nfrom concurrent.futures import ThreadPoolExecutor\n"
    "def child(i):\n"
    '    q = f"{child} {{i}}"\n'
    '    return dspy.RLM("context, query -> answer")(context=q, query=q).answer\n'
    "with ThreadPoolExecutor(4) as pool:\n"
    "    r = list(pool.map(child, range(4)))\n"
    "print(r)",
}
_DSPY_REPLY = "[[ ## reasoning ## ]]\nscripted\n\n[[ ## code ## ]]\n```python\n{code}\n```\n\n"
_DSPY_REPLY += "[[ ## completed ## ]]"
_RLMS = {
    **_RECURSA,
    # rlms 0.1.3 ends a run when the code sets answer["ready"] (it has no FINAL()).
    "final": '```repl\nanswer["content"] = "done"\nanswer["ready"] = True\n```',
}


def _turns(scenario: str, child: bool) -> list[str]:
    """The root (or child) turns of a scenario, as template keys; the last one ends the run."""
    if child:
        return ["batch:10", "final"]
    return {
        "startup": ["final"],
        "trivial10": [f"trivial:{i}" for i in range(10)] + ["final"],
        "batch100": ["batch:100", "final"],
        "depth2": ["children", "final"],
    }[scenario]


def _render(dialect: dict[str, str], key: str) -> str:
    kind, _, arg = key.partition(":")
    if dialect is _DSPY:
        code = (
            f"x = {arg}" if kind == "trivial" else dialect[kind].format(sub=SUB, n=arg, child=CHILD)
        )
        return _DSPY_REPLY.format(code=code)
    if kind == "trivial":
        return f"```repl\nx = {arg}\n```"
    if kind == "batch":
        return dialect["batch"].format(sub=SUB, n=arg)
    return dialect[kind].format(child=CHILD)


def _field(text: str, name: str) -> str:
    for word in text.split():
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return ""


def responder(messages: Messages) -> str:
    """Answer whichever framework asked: recognised by the root question's marker, a child by
    its question (recursa) or by an rlms system prompt without the marker; the turn is the
    number of assistant messages so far."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users or users[-1].startswith(SUB):
        return "ok"
    first = users[0]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    turn = sum(1 for m in messages if m["role"] == "assistant")
    dspy = "[[ ## iteration ## ]]" in users[-1]
    if dspy:  # one user message per turn, which says which turn it is
        turn = int(users[-1].split("[[ ## iteration ## ]]")[1].split("/")[0]) - 1
    if ROOT in first:
        fw, scenario, child = _field(first, "fw"), _field(first, "scenario"), False
    elif CHILD in first:  # recursa and dspy show a child its question
        fw, scenario, child = "dspy" if dspy else "recursa", "depth2", True
    elif 'answer["ready"]' in system:  # an rlms child sees only its context's length
        fw, scenario, child = "rlms", "depth2", True
    else:
        return "unrecognised request: the comparison's script has no answer for it"
    turns = _turns(scenario, child)
    dialect = {"rlms": _RLMS, "dspy": _DSPY}.get(fw, _RECURSA)
    return _render(dialect, turns[min(turn, len(turns) - 1)])


# ---- the drivers (in the framework's own process, never the server's) ------------------------


def question(tag: str, scenario: str, fw: str) -> str:
    return f"{ROOT} tag={tag} scenario={scenario} fw={fw}"


CONTEXT = "a small context line\n" * 50


def run_recursa(scenario: str, base_url: str, tag: str) -> tuple[float, float, str]:
    t0 = time.time()  # before the import: with --cold it is part of what a user waits for
    from recursa import RLM, Limits

    with tempfile.TemporaryDirectory() as runs:
        rlm = RLM(
            "openai:compare",
            base_url=base_url,
            api_key="fake",
            limits=Limits(max_depth=1, max_iterations=20),
            runs_root=runs,  # the journal stays on (the default), in a scratch folder
        )
        result = rlm.run(question(tag, scenario, "recursa"), CONTEXT)
        t1 = time.time()  # before the scratch journal is deleted
    return t0, t1, str(result.answer)


def run_rlms(scenario: str, base_url: str, tag: str) -> tuple[float, float, str]:
    t0 = time.time()
    from rlm import RLM

    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "compare", "base_url": base_url, "api_key": "fake"},
        environment="local",
        max_depth=2,  # rlms counts the root as depth 0: children get a REPL below 2
        max_iterations=20,
    )
    result = rlm.completion(CONTEXT, root_prompt=question(tag, scenario, "rlms"))
    return t0, time.time(), str(result.response)


def run_dspy(scenario: str, base_url: str, tag: str) -> tuple[float, float, str]:
    from compare_dspy import run_dspy as run

    return run(question(tag, scenario, "dspy"), CONTEXT, base_url)


DRIVERS: dict[str, Callable[[str, str, str], tuple[float, float, str]]] = {
    "recursa": run_recursa,
    "rlms": run_rlms,
    "dspy": run_dspy,
}


def run_cell(fw: str, scenario: str, base_url: str, tag: str) -> dict[str, Any]:
    try:
        t0, t1, answer = DRIVERS[fw](scenario, base_url, tag)
    except Exception as exc:  # reported to compare.py, which prints it beside the cell
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"t0": t0, "elapsed": t1 - t0, "answer": answer}


def main(argv: list[str]) -> int:
    """``FRAMEWORK SCENARIO BASE_URL TAG``: one cell; ``--serve FRAMEWORK``: one cell per line
    of stdin (``SCENARIO BASE_URL TAG``), one JSON line each, in this warm process."""
    if argv[:1] == ["--serve"]:
        for line in sys.stdin:
            print(json.dumps(run_cell(argv[1], *line.split())), flush=True)
        return 0
    out = run_cell(*argv)
    print(json.dumps(out))
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
