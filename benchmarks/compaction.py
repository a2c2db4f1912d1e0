"""What one compaction of a long root conversation costs, against the fake LLM server.

The same scripted conversation (``--turns`` root turns, each printing ``--output-chars``
characters) runs twice against the fake OpenAI-compatible server, which answers every call after
``--latency`` seconds and reports usage at four characters a token: once with compaction on
(``root_window=--window``, the default threshold of 0.85) and once with it off. Printed, from
the runs' traces:

- per compaction: its wall time, the summary call's own time and tokens (input -> output), the
  rest (recursa's own work: choosing turns, loading ``history_transcript`` into the REPL), the
  request's form, and the root prompt's tokens before and after (recursa's estimate);
- per run: root calls, the largest and the total root prompt the server was sent, and the
  run's wall time.

Run: ``python benchmarks/compaction.py`` (``--quick`` for a shorter conversation).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any

from recursa import RLM, Limits
from recursa.testing import FakeLLMServer
from recursa.trace.spans import Span
from recursa.types import Result

SUMMARY = (
    "Tried: printed steps 0 to N of the log, one per turn; each step's output was filler. "
    "Found: nothing that answers the question yet; the step outputs are in history_transcript. "
    "Open: keep reading the remaining steps, then answer with FINAL. "
) * 3


def _replies(turns: int, output_chars: int) -> list[str]:
    code = "print('step {i}: ' + 'x' * {n})"
    replies = [f"```repl\n{code.format(i=i, n=output_chars)}\n```" for i in range(turns)]
    last = "n = len(globals().get('history_transcript', []))\nprint(n)\nFINAL(f'done {n}')"
    return [*replies, f"```repl\n{last}\n```"]


async def run_once(args: argparse.Namespace, compaction: bool) -> Result:
    replies = _replies(args.turns, args.output_chars)
    rules = [(r"\[Compaction\]", SUMMARY)]
    with (
        FakeLLMServer(replies, rules=rules, latency_s=args.latency) as srv,
        tempfile.TemporaryDirectory() as tmp,
    ):
        rlm = RLM(
            "openai:bench-root",
            base_url=srv.base_url,
            limits=Limits(max_iterations=args.turns + 2),
            runs_root=tmp,
            compaction=compaction,
            root_window=args.window,
        )
        result = await rlm.arun("Benchmark: read every step.", "a small context " * 100)
    if not result.answer.startswith("done"):
        raise RuntimeError(f"the run did not finish: {result.stop_reason} {result.detail}")
    return result


@dataclass
class Compaction:
    wall_s: float
    call_s: float
    input_tokens: int
    output_tokens: int
    form: str
    before: int
    after: int


def compactions(result: Result) -> list[Compaction]:
    calls = {s.parent_id: s for s in result.spans if s.kind == "lm_call"}
    out = []
    for s in sorted((s for s in result.spans if s.kind == "compaction"), key=lambda s: s.start):
        call, a = calls[s.id], s.attrs
        out.append(
            Compaction(
                wall_s=s.duration_s or 0.0,
                call_s=call.duration_s or 0.0,
                input_tokens=int(call.attrs.get("input_tokens") or 0),
                output_tokens=int(call.attrs.get("output_tokens") or 0),
                form=str(a.get("form")),
                before=int(a.get("tokens_before") or 0),
                after=int(a.get("tokens_after") or 0),
            )
        )
    return out


def root_prompts(spans: tuple[Span, ...]) -> list[int]:
    return [
        int(s.attrs.get("input_tokens") or 0)
        for s in sorted(spans, key=lambda s: s.start)
        if s.kind == "lm_call" and s.attrs.get("role") == "root"
    ]


def _report(label: str, result: Result) -> dict[str, Any]:
    prompts = root_prompts(result.spans)
    return {
        "run": label,
        "root calls": len(prompts),
        "largest root prompt": f"{max(prompts):,} tok",
        "root prompts in all": f"{sum(prompts):,} tok",
        "all calls": result.usage.calls,
        "wall": f"{result.wall_time_s:.2f} s",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--output-chars", type=int, default=3000)
    ap.add_argument("--window", type=int, default=16_000, help="root_window, in tokens")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per fake call")
    ap.add_argument("--quick", action="store_true", help="15 turns of 2,000 chars, window 6,000")
    args = ap.parse_args()
    if args.quick:
        args.turns, args.output_chars, args.window = 15, 2000, 6000
    on = asyncio.run(run_once(args, compaction=True))
    off = asyncio.run(run_once(args, compaction=False))
    print(
        f"{args.turns} turns x {args.output_chars:,} chars of output, window {args.window:,} "
        f"tokens (compacts at {int(0.85 * args.window):,}), {args.latency * 1000:.0f} ms a call"
    )
    found = compactions(on)
    print(f"\n{len(found)} compaction(s):")
    head = "  #  wall s  call s  other ms  summary call tok  form        prompt tok before->after"
    print(head)
    for i, c in enumerate(found, 1):
        other_ms = (c.wall_s - c.call_s) * 1000
        tokens = f"{c.input_tokens:,}->{c.output_tokens:,}"
        print(
            f"{i:>3}  {c.wall_s:6.3f}  {c.call_s:6.3f}  {other_ms:8.1f}  {tokens:>16}  "
            f"{c.form:<10}  {c.before:,}->{c.after:,}"
        )
    if found:
        other = statistics.median((c.wall_s - c.call_s) * 1000 for c in found)
        print(f"median recursa time per compaction besides the call: {other:.1f} ms")
    print()
    rows = [_report("compaction on", on), _report("compaction off", off)]
    for key in rows[0]:
        print(f"{key:<22}" + "".join(f"{r[key]!s:>22}" for r in rows))


if __name__ == "__main__":
    main()
