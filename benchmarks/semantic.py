"""Figures for ``llm_classify`` on the embedded models. Prints them; asserts nothing.

    python benchmarks/semantic.py                       # 1.5B and 0.5B, scored and packed
    python benchmarks/semantic.py --models qwen2.5-coder-0.5b --items 200
    python benchmarks/semantic.py --single 25           # also one generated reply per item
    python benchmarks/semantic.py --data-dir ../shared/data --seed 3

The work: label TREC questions (``trec/train_5500.label``, found like ``recursa bench``'s data:
``--data-dir``, ``$RECURSA_BENCH_DATA`` or ``shared/data`` beside the checkout) with their six
coarse classes, as lines like ``Date: ... || User: ... || Instance: <question>``, the way an RLM
would label the lines of a long context. For each model and packing it prints the accuracy
against the dataset's labels, the wall time per item, prompt tokens evaluated against those
served from the KV cache (the shared instruction prefix), and generated tokens.

Measurements, not tests: the machine's other load changes the times (run it on an idle
machine), and the data only measures; nothing from it is in any prompt or code path.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from pathlib import Path

from recursa.bench.data import TREC_LABELS, find_data_dir, load_trec
from recursa.lm.local import LocalLM
from recursa.semantic import Operation, run_operation
from recursa.types import LMSettings, Message, Usage

INSTRUCTION = "Which kind of answer does each question ask for?"


def lines_and_gold(data_dir: Path | None, n: int, seed: int) -> tuple[list[str], list[str]]:
    found = find_data_dir(data_dir)
    if found is None:
        raise SystemExit("no bench data: pass --data-dir (the folder holding trec/)")
    path = found / "trec" / "train_5500.label"
    questions = list(load_trec(path))
    rng = random.Random(seed)
    picked = rng.sample(questions, n)
    lines = [
        f"Date: Jan {rng.randint(1, 28):02d}, 2023 || User: {rng.randint(10000, 99999)} || "
        f"Instance: {q.text}"
        for q in picked
    ]
    return lines, [q.label for q in picked]


async def measure(
    lm: LocalLM, lines: list[str], gold: list[str], max_items: int, scored: bool
) -> dict:
    usage = Usage()

    async def send(prompt: str, settings: LMSettings) -> str:
        nonlocal usage
        c = await lm.complete([Message.user(prompt)], settings)
        usage = usage + c.usage
        return c.text

    async def ask(prompt: str, max_tokens: int) -> str:
        return await send(prompt, LMSettings(max_output_tokens=max_tokens))

    async def choose(prompt: str, choices: tuple[str, ...]) -> str:
        return await send(prompt, LMSettings(choices=choices, max_output_tokens=1))

    op = Operation("classify", INSTRUCTION, tuple(TREC_LABELS.values()))
    started = time.perf_counter()
    result = await run_operation(
        op,
        lines,
        ask,
        room_chars=8_000,
        max_items=max_items,
        choose=choose if scored else None,
    )
    wall = time.perf_counter() - started
    right = sum(1 for v, g in zip(result.values, gold, strict=True) if v == g)
    return {
        "accuracy": right / len(gold),
        "s_per_item": wall / len(gold),
        "wall_s": wall,
        "calls": result.calls,
        "failed": result.failed,
        "retried": result.retried,
        "prompt_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "predicted": Counter(v for v in result.values),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--pack", type=int, default=0, help="items per prompt (0: the default)")
    ap.add_argument(
        "--modes",
        default="scored,packed",
        help="scored: one prompt per item, the label picked by probability (what the embedded "
        "model gets); packed: many items per prompt, labels generated and parsed",
    )
    ap.add_argument("--single", type=int, default=0, help="also one prompt per item on N items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    lines, gold = lines_and_gold(args.data_dir, args.items, args.seed)
    print(f"{len(lines)} TREC lines, gold labels: {dict(Counter(gold).most_common())}")
    print(f"majority-label accuracy: {Counter(gold).most_common(1)[0][1] / len(gold):.3f}")
    header = (
        f"{'model':<26} {'mode':<6} {'pack':>4} {'items':>5} {'acc':>6} {'s/item':>7} {'calls':>5} "
        f"{'failed':>6} {'prompt tok':>10} {'cached':>8} {'out tok':>7}"
    )
    print(header)

    async def run() -> None:
        for name in args.models.split(","):
            lm = LocalLM(name.strip())
            await lm.load()
            runs = []
            for mode in args.modes.split(","):
                runs.append((mode.strip(), args.pack or 0, lines, gold))
            if args.single:
                runs.append(("packed", 1, lines[: args.single], gold[: args.single]))
            for mode, pack, ls, gs in runs:
                r = await measure(lm, ls, gs, pack, mode == "scored")
                shown = "-" if mode == "scored" else (pack or "auto")
                print(
                    f"{lm.name:<26} {mode:<6} {shown:>4} {len(ls):>5} {r['accuracy']:>6.3f} "
                    f"{r['s_per_item']:>7.2f} {r['calls']:>5} {r['failed']:>6} "
                    f"{r['prompt_tokens']:>10,} {r['cached_tokens']:>8,} {r['output_tokens']:>7,}",
                    flush=True,
                )
                print(f"    predicted: {dict(r['predicted'].most_common())}", flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
