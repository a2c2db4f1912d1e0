"""A deterministic needle-in-a-haystack input for trying recursa, and for its tests.

    python -m recursa.examples.haystack > haystack.txt
    recursa ask --context haystack.txt "What is the access code for vault 17?"

The default haystack is 420,000 characters (about 105,000 tokens: more than three times the
embedded model's 32K-token window) of log-like filler with one fact hidden 63% of the way in,
so the answer can only come from code that searches ``context``.
"""

from __future__ import annotations

import argparse
import random
import sys

__all__ = ["ANSWER", "NEEDLE", "QUESTION", "haystack"]

QUESTION = "What is the access code for vault 17?"
NEEDLE = "The access code for vault 17 is 4817263."
ANSWER = "4817263"

_WORDS = [
    "system",
    "service",
    "request",
    "latency",
    "cache",
    "worker",
    "queue",
    "retry",
    "timeout",
    "shard",
    "replica",
    "policy",
    "budget",
    "review",
    "release",
    "planning",
    "customer",
    "invoice",
    "region",
    "cluster",
    "metric",
    "alert",
    "deploy",
    "rollback",
    "config",
    "session",
    "token",
    "batch",
    "window",
    "storage",
    "network",
    "report",
]


def haystack(
    n_chars: int = 420_000, *, seed: int = 7, needle: str = NEEDLE, at: float = 0.63
) -> str:
    """Sentences of filler words, ``needle`` inserted as its own line at fraction ``at``."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    lines.insert(int(len(lines) * at), needle)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a needle-in-a-haystack text to stdout.")
    ap.add_argument("--chars", type=int, default=420_000, help="size of the haystack")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    sys.stdout.write(haystack(args.chars, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
