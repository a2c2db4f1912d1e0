"""Figures for the embedded local model on this machine. Prints them; asserts nothing.

    python benchmarks/local_model.py                  # all figures, default model, default threads
    python benchmarks/local_model.py --threads 1      # compare thread counts
    python benchmarks/local_model.py --skip-e2e       # no `recursa ask` run
    python benchmarks/local_model.py --suite          # also 11 needle questions (prompt quality)
    python benchmarks/local_model.py --write-haystack haystack.txt   # just write the example input
    python benchmarks/local_model.py --skip-e2e --extra-bufts off    # plain kernels (no repacking)

Figures: load time; prompt and generation tokens/s; peak RSS; time per root iteration with the
warm KV cache against a cold reprocess of the same conversation; and one `recursa ask` over a
420,000-character haystack (a fresh process: load, first-run prompt, iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recursa.examples.haystack import ANSWER, NEEDLE, QUESTION, haystack


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def timed(lm, messages, **settings):
    from recursa.types import LMSettings

    start = time.perf_counter()
    completion = await lm.complete(messages, LMSettings(**settings))
    return completion, time.perf_counter() - start


async def throughput(lm) -> dict:
    from recursa.types import Message

    # A prompt no earlier call shares a prefix with (the scratch context evaluates all of it).
    text = haystack(6_000, seed=int(time.time()))
    prompt = [Message.user(f"Summarise this log in one line:\n{text}")]
    c1, t1 = await timed(lm, prompt, max_output_tokens=1)
    evaluated = c1.usage.input_tokens - c1.usage.cached_tokens
    # Same prompt again: all but one token is cached, so the time is generation.
    gen_prompt = [Message.user("Write the numbers from 1 to 200, separated by commas.")]
    await timed(lm, gen_prompt, max_output_tokens=1)
    c2, t2 = await timed(lm, gen_prompt, max_output_tokens=160)
    return {
        "prompt_tokens": evaluated,
        "prompt_s": round(t1, 2),
        "prompt_tok_per_s": round(evaluated / t1, 1),
        "generated_tokens": c2.usage.output_tokens,
        "generation_s": round(t2, 2),
        "generation_tok_per_s": round(c2.usage.output_tokens / t2, 1),
    }


def _root_conversation(context_text: str):
    from recursa.context import load_context
    from recursa.prompts import STRICT
    from recursa.types import Message

    ctx = load_context(context_text)
    system = STRICT.system(
        context_hint=f"a {ctx.python_type} of {ctx.total_chars:,} characters",
        sub_calls=True,
        sub_chars=8_000,
    )
    first = STRICT.first_turn(question=QUESTION, metadata=ctx.describe())
    return [Message.system(system), Message.user(first)]


async def iterations(lm, n: int) -> list[dict]:
    """Each root turn's prompt evaluated with the warm KV cache, then again from scratch."""
    from recursa.prompts import STRICT
    from recursa.types import Message

    text = haystack()
    messages = _root_conversation(text)
    rows = []
    conversation = lm._loaded().context("conversation")
    for i in range(1, n + 1):
        # Prompt only (one output token): the warm cache holds everything but the new turn.
        warm, t_warm = await timed(lm, messages, max_output_tokens=1)
        conversation.llama.reset()  # forget the KV cache: evaluate the whole conversation
        cold, t_cold = await timed(lm, messages, max_output_tokens=1)
        # The turn itself (the prompt is cached now, so this is mostly generation).
        reply, t_reply = await timed(lm, messages)
        rows.append(
            {
                "iteration": i,
                "prompt_tokens": warm.usage.input_tokens,
                "warm_evaluated": warm.usage.input_tokens - warm.usage.cached_tokens,
                "warm_prompt_s": round(t_warm, 2),
                "cold_evaluated": cold.usage.input_tokens - cold.usage.cached_tokens,
                "cold_prompt_s": round(t_cold, 2),
                "prompt_speedup": round(t_cold / t_warm, 1),
                "reply_tokens": reply.usage.output_tokens,
                "turn_warm_s": round(t_warm + t_reply, 2),
                "turn_cold_s": round(t_cold + t_reply, 2),
            }
        )
        # The next turn: this reply, then ~1,500 characters of REPL output and the nudge.
        start = 40_000 * i
        output = f"{i} matches\n" + text[start : start + 1_500]
        messages = [
            *messages,
            Message.assistant(reply.text),
            Message.user(f"{output}\n\n{STRICT.after_output}"),
        ]
    return rows


def ask_once(path: Path, threads: int | None, cache: Path | None = None) -> dict:
    """`recursa ask` with no model flag and no key, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "RECURSA_MODEL"}
    if threads:
        env["RECURSA_THREADS"] = str(threads)
    if cache is not None:
        env["RECURSA_CACHE_DIR"] = str(cache)
    cmd = [sys.executable, "-m", "recursa", "ask", "--context", str(path), QUESTION, "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1_800)
    wall = time.perf_counter() - start
    out = json.loads(proc.stdout) if proc.returncode in (0, 3) else {}
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "correct": ANSWER in out.get("answer", ""),
        "iterations": out.get("iterations"),
        "usage": out.get("usage"),
        "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
    }


def ask_e2e(threads: int | None) -> dict:
    """One run as on a machine that never ran recursa (no stored system prompt; the weights
    are linked in, not assembled again), then one as every later run."""
    from recursa.paths import cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "haystack.txt"
        path.write_text(haystack(), encoding="utf-8")
        first_cache = Path(tmp) / "cache"
        first_cache.mkdir()
        (first_cache / "models").symlink_to(cache_dir() / "models")
        return {
            "first_run": ask_once(path, threads, first_cache),
            "later_run": ask_once(path, threads, first_cache),
        }


# Needle questions over 420,000-character haystacks: (needle, position, seed, question, answer).
SUITE = [
    (NEEDLE, 0.63, 7, QUESTION, ANSWER),
    (
        "Maria Lopez moved to Lisbon in the spring of 2019.",
        0.3,
        3,
        "Which city did Maria Lopez move to?",
        "Lisbon",
    ),
    (
        "One of the special magic numbers for quiet-harbor is: 5521907.",
        0.85,
        11,
        "What is the special magic number for quiet-harbor mentioned in the text?",
        "5521907",
    ),
    ("config: max_upload_mb = 3375", 0.5, 5, "What value is max_upload_mb set to?", "3375"),
    (NEEDLE, 0.4, 21, "What code opens vault number 17?", ANSWER),
    (
        "Note: Dr. Amelia Novak's office is on the fourth floor of Building C.",
        0.75,
        4,
        "On which floor is Amelia Novak's office?",
        "fourth",
    ),
    (
        "Order #58812 was shipped to Tromso by rail freight.",
        0.55,
        31,
        "Where was order 58812 shipped to?",
        "Tromso",
    ),
    (
        "The Hollowbrook bridge was completed in 1894 after six years of work.",
        0.2,
        32,
        "In what year was the Hollowbrook bridge completed?",
        "1894",
    ),
    (
        "Ticket ENG-4471 is assigned to Priya Raman.",
        0.92,
        33,
        "Who is ticket ENG-4471 assigned to?",
        "Priya",
    ),
    (
        "Kestrel team badge color: vermilion",
        0.35,
        34,
        "What is the badge color of the Kestrel team?",
        "vermilion",
    ),
    (
        "Reminder: the wifi password for the Oslo office is tangerine-42.",
        0.1,
        9,
        "What is the wifi password for the Oslo office?",
        "tangerine-42",
    ),
]


async def suite(lm) -> list[dict]:
    """Each SUITE question through a full RLM run (one process, the model loaded once)."""
    from recursa import RLM, Limits

    rows = []
    for needle, at, seed, question, answer in SUITE:
        text = haystack(seed=seed, needle=needle, at=at)
        start = time.perf_counter()
        result = await RLM(lm, limits=Limits(max_iterations=8)).arun(question, text)
        rows.append(
            {
                "question": question,
                "correct": answer.lower() in result.answer.lower(),
                "answer": result.answer[:80],
                "iterations": result.iterations,
                "s": round(time.perf_counter() - start, 1),
            }
        )
    return rows


async def main(args: argparse.Namespace) -> dict:
    from recursa.embedded.runtime import default_threads
    from recursa.lm.local import LocalLM

    gen, prompt = (args.threads, args.threads) if args.threads else default_threads()
    figures: dict = {"threads": f"{gen} generation / {prompt} prompt", "model": args.model}
    # No stored system prompt here: "cold" must mean the whole conversation is evaluated.
    extra = {"on": True, "off": False, "auto": None}[args.extra_bufts]
    lm = LocalLM(args.model, threads=args.threads, prefix_cache=False, extra_bufts=extra)
    start = time.perf_counter()
    await lm.load()
    figures["load_s"] = round(time.perf_counter() - start, 2)
    choice = lm._loaded().choice
    figures["extra_bufts"] = f"{choice.extra_bufts} ({choice.source})"
    figures["probe_s"] = round(sum(a.seconds for a in choice.attempts), 1)
    figures["rss_after_load_mb"] = round(peak_rss_mb())
    figures["throughput"] = await throughput(lm)
    figures["root_iterations"] = await iterations(lm, args.iterations)
    figures["peak_rss_mb"] = round(peak_rss_mb())
    if args.suite:
        figures["suite"] = await suite(lm)
    if not args.skip_e2e:
        figures["ask_e2e"] = ask_e2e(args.threads)
    return figures


def _print(figures: dict) -> None:
    tp = figures["throughput"]
    print(f"model {figures['model'] or 'default'}, {figures['threads']} thread(s)")
    print(f"load                 {figures['load_s']:.2f} s (probe {figures['probe_s']} s)")
    print(f"extra buffer types   {figures['extra_bufts']}")
    print(f"prompt               {tp['prompt_tok_per_s']} tok/s ({tp['prompt_tokens']} tokens)")
    print(f"generation           {tp['generation_tok_per_s']} tok/s ({tp['generated_tokens']})")
    print(f"peak RSS             {figures['peak_rss_mb']} MB")
    print("root turn  prompt  warm: evaluated, s   cold: evaluated, s   prompt x   turn warm/cold")
    for r in figures["root_iterations"]:
        print(
            f"  {r['iteration']}      {r['prompt_tokens']:5d}   {r['warm_evaluated']:5d} "
            f"{r['warm_prompt_s']:6.2f}s      {r['cold_evaluated']:5d} {r['cold_prompt_s']:6.2f}s"
            f"     x{r['prompt_speedup']:<5}   {r['turn_warm_s']:.1f}s / {r['turn_cold_s']:.1f}s"
        )
    if "suite" in figures:
        rows = figures["suite"]
        print(f"suite                {sum(r['correct'] for r in rows)}/{len(rows)} correct")
        for r in rows:
            mark = "ok " if r["correct"] else "BAD"
            print(
                f"  {mark} {r['iterations']} it {r['s']:5.1f}s  {r['question'][:48]:48} "
                f"{r['answer']!r}"
            )
    for name, e in figures.get("ask_e2e", {}).items():
        print(
            f"recursa ask, {name:9}  {e['wall_s']} s, exit {e['exit']}, correct={e['correct']}, "
            f"{e['iterations']} iterations, {e['usage'] and e['usage']['cached_tokens']} cached"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="local model name or .gguf path")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--extra-bufts",
        choices=("auto", "on", "off"),
        default="auto",
        help="llama.cpp's repacked weights: auto (what the CPU probe chose), on, off",
    )
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--suite", action="store_true", help="also run the needle suite")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--write-haystack", type=Path, help="write the example input and exit")
    ns = parser.parse_args()
    if ns.write_haystack:
        ns.write_haystack.write_text(haystack(), encoding="utf-8")
        print(ns.write_haystack)
        sys.exit(0)
    result = asyncio.run(main(ns))
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
