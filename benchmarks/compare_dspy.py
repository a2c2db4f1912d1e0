"""``dspy.RLM`` in ``benchmarks/compare.py``: which interpreter it can use here, and its driver.

``dspy.RLM``'s default sandbox (``dspy.PythonInterpreter``) is Deno running Pyodide, which Deno
fetches from deno.land and npm at first start; offline, or without Deno, it cannot start. DSPy
3.4 also ships ``LocalInterpreter`` (a plain subprocess, not a sandbox): where the sandbox cannot
start, the comparison runs dspy with that and says so, rather than timing a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

INTERPRETER_ENV = "COMPARE_DSPY_INTERPRETER"  # "python" (the Deno sandbox) or "local"

_PROBE = """
from dspy.primitives.python_interpreter import PythonInterpreter
p = PythonInterpreter()
try:
    print(p.execute("print(6 * 7)"))
finally:
    p.shutdown()
"""


def dspy_unavailable(timeout_s: float = 120.0) -> str | None:
    """None when dspy's sandbox runs code here; otherwise why not, in one line."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return f"its Deno/Pyodide sandbox did not start within {timeout_s:.0f} s"
    if proc.returncode == 0 and "42" in proc.stdout:
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr + proc.stdout)  # Deno's colours
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Deno's own "error: Import ... failed" says most; else the Python exception's line.
    found = [x for x in lines if x.startswith("error:")] or [x for x in lines if "Error:" in x]
    why = (found or lines or [f"exit status {proc.returncode}"])[0]
    return (
        "its Deno/Pyodide sandbox cannot start here (it downloads Deno's std library and "
        f"Pyodide from deno.land and npm on first use): {why[:200]}"
    )


def choose_interpreter() -> tuple[str | None, str]:
    """("python" or "local" or None, a note for the report) for dspy's REPL here."""
    why = dspy_unavailable()
    if why is None:
        return "python", "dspy runs in its Deno/Pyodide sandbox"
    try:
        from dspy.primitives.local_interpreter import LocalInterpreter  # noqa: F401
    except ImportError:
        return None, why
    return "local", f"{why}; running dspy with dspy's LocalInterpreter (a subprocess) instead"


def run_dspy(question: str, context: str, base_url: str) -> tuple[float, float, str]:
    """One ``dspy.RLM`` run against the fake server: (t0, t1, answer)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download
    t0 = time.time()  # before the import: with --cold it is part of what a user waits for
    import dspy

    factory = None
    if os.environ.get(INTERPRETER_ENV) == "local":
        from dspy.primitives.local_interpreter import LocalInterpreter

        factory = LocalInterpreter
    # cache=False: dspy would otherwise answer a repeated prompt from its own cache.
    lm = dspy.LM("openai/compare", api_base=base_url, api_key="fake", cache=False)
    kwargs = {} if factory is None else {"interpreter_factory": factory}
    rlm = dspy.RLM("context, query -> answer", max_iters=20, max_llm_calls=200, **kwargs)
    with dspy.context(lm=lm):
        out = rlm(context=context, query=question)
    return t0, time.time(), str(out.answer)
