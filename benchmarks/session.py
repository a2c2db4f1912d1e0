"""What a session's next question costs against a fresh run on the same context.

    python benchmarks/session.py                 # a 20 MB context, 5 rounds
    python benchmarks/session.py --mb 100 --rounds 3

The root model is scripted (no model time: what is measured is recursa's own work). A fresh
run loads the context into a new sandbox, journals it and shuts the sandbox down; a session's
second and later questions reuse the sandbox that holds the context already. Prints the median
wall time (and the range) of each, and the ratio. Measurements, not tests: run it on an idle
machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from recursa import RLM, ScriptedLM

ANSWER = "```repl\nFINAL(len(context))\n```"


def context_of(mb: float) -> str:
    line = "The quick brown fox jumps over the lazy dog; 0123456789.\n"
    return line * int(mb * 1e6 / len(line))


def fmt(values: list[float]) -> str:
    lo, hi = min(values) * 1000, max(values) * 1000
    return f"{statistics.median(values) * 1000:8.1f} ms  ({lo:.1f}-{hi:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0, help="context size in MB")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-journal", action="store_true", help="measure without the journal")
    args = ap.parse_args()
    text = context_of(args.mb)
    journal = not args.no_journal
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fresh, first, later = [], [], []
        for _ in range(args.rounds):
            rlm = RLM(ScriptedLM([], default=ANSWER), journal=journal, runs_root=root)
            t = time.perf_counter()
            assert rlm.run("How long?", text).answer == str(len(text))
            fresh.append(time.perf_counter() - t)
        rlm = RLM(ScriptedLM([], default=ANSWER), journal=journal, runs_root=root)
        t = time.perf_counter()
        with rlm.session(text) as session:
            session.ask("How long?")
            first.append(time.perf_counter() - t)  # the session's start included
            for _ in range(args.rounds):
                t = time.perf_counter()
                assert session.ask("How long now?").answer == str(len(text))
                later.append(time.perf_counter() - t)
    print(f"context {args.mb:g} MB, journal {'on' if journal else 'off'}, {args.rounds} rounds")
    print(f"fresh run              {fmt(fresh)}")
    print(f"session, 1st question  {fmt(first)}  (opening the session included)")
    print(f"session, next question {fmt(later)}")
    ratio = statistics.median(later) / statistics.median(fresh)
    print(f"next question / fresh run: {ratio:.3f}")


if __name__ == "__main__":
    main()
