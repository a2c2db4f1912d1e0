"""Benchmark tasks: one question over one context, with its gold answer and how to score it.

Every task is produced by a deterministic, seeded generator, so the same command always builds
the same tasks; each records the sha256 of everything it consists of (question, gold, context),
which is part of the key that lets an interrupted run resume without redoing finished work.

Lengths are in tokens as :func:`recursa.limits.approx_tokens` counts them (four characters per
token, the estimate the engine itself uses): an ``8k`` task has about 32,768 characters of
context. Real tokenizers count differently (digits and UUIDs take more tokens), which is why the
``direct`` baseline measures what fits rather than trusting this estimate.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from recursa.errors import ConfigError
from recursa.limits import CHARS_PER_TOKEN

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "GenerateFn",
    "Task",
    "context_text",
    "length_label",
    "make_tasks",
    "parse_lengths",
]

TaskContext = str | dict[str, str]


@dataclass(frozen=True, eq=False)
class Task:
    """One benchmark item.

    Attributes:
        benchmark: the benchmark's name (``niah``, ``oolong``...).
        task_id: unique within the benchmark (it names the length and the window).
        length: the context's size in approximate tokens (the target for generated tasks).
        question: what every method is asked, answer-format instructions included.
        context: a string, or ``{name: text}`` for collections (documents, source files).
        gold: the answer(s) the scorer compares with (a string, a number, aliases, pairs).
        scoring: the scorer's name in :data:`recursa.bench.scoring.SCORERS`.
        window: tasks that share a context share a window id (methods reuse work across them).
        query: the short form of the question used for retrieval (``rag``).
        meta: what the generator wants recorded (depth, family, sources...).
    """

    benchmark: str
    task_id: str
    length: int
    question: str
    context: TaskContext
    gold: Any
    scoring: str
    window: str
    query: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    length_label: str = ""

    @cached_property
    def sha256(self) -> str:
        """A digest of everything the task consists of: same digest, same task."""
        h = hashlib.sha256()
        head = {
            "benchmark": self.benchmark,
            "task_id": self.task_id,
            "question": self.question,
            "gold": self.gold,
            "scoring": self.scoring,
        }
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        h.update(context_sha256(self.context).encode())
        return h.hexdigest()

    @property
    def context_chars(self) -> int:
        if isinstance(self.context, str):
            return len(self.context)
        return sum(len(k) + len(v) for k, v in self.context.items())

    @property
    def label(self) -> str:
        return self.length_label or length_label(self.length)


_CONTEXT_DIGESTS: dict[int, tuple[TaskContext, str]] = {}


def context_sha256(context: TaskContext) -> str:
    """sha256 of a context; many tasks share one context object, so it is hashed once."""
    hit = _CONTEXT_DIGESTS.get(id(context))
    if hit is not None and hit[0] is context:
        return hit[1]
    h = hashlib.sha256()
    if isinstance(context, str):
        h.update(context.encode("utf-8"))
    else:
        for name in context:
            h.update(name.encode("utf-8") + b"\0" + context[name].encode("utf-8") + b"\0")
    digest = h.hexdigest()
    _CONTEXT_DIGESTS[id(context)] = (context, digest)
    return digest


def context_text(context: TaskContext) -> str:
    """The context as one text (collections: each part under a ``=== name ===`` line)."""
    if isinstance(context, str):
        return context
    return "\n\n".join(f"=== {name} ===\n{text}" for name, text in context.items())


_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_lengths(spec: str | Iterable[str]) -> list[int]:
    """``"8k,32k,1m"`` -> ``[8192, 32768, 1048576]`` (k = 1024 tokens, m = 1024k)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for item in items:
        if not item.strip():
            continue
        m = _LENGTH.match(item)
        if not m:
            raise ConfigError(f"--lengths: cannot read {item!r}; write e.g. 8k,32k,128k,1m")
        scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
        n = int(float(m.group(1)) * scale)
        if n < 1024:
            raise ConfigError(f"--lengths: {item!r} is below 1k tokens")
        out.append(n)
    if not out:
        raise ConfigError("--lengths: give at least one length, e.g. 8k")
    return out


def length_label(tokens: int) -> str:
    """``8192`` -> ``"8k"``, ``1048576`` -> ``"1m"``; other sizes keep their digits."""
    if tokens >= 1024 * 1024 and tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}m"
    if tokens % 1024 == 0:
        return f"{tokens // 1024}k"
    return f"{tokens / 1024:.0f}k~"


def target_chars(length: int) -> int:
    """Characters that make ``length`` approximate tokens."""
    return length * CHARS_PER_TOKEN


GenerateFn = Callable[[int, int, int, Path | None], list[Task]]


@dataclass(frozen=True)
class Benchmark:
    """A named generator: ``generate(length, n, seed, data_dir) -> tasks``."""

    name: str
    description: str
    generate: GenerateFn
    needs_data: bool = False
    fixed_lengths: bool = False  # the items have their own sizes; --lengths is ignored


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def _load_builtin() -> None:
    # The generator modules register themselves; importing them here keeps one registry.
    from recursa.bench import codeqa, multihop, niah, oolong, pairs  # noqa: F401


def make_tasks(
    name: str, lengths: Iterable[int], n: int, seed: int = 0, data_dir: Path | None = None
) -> list[Task]:
    """The tasks of benchmark ``name``: ``n`` per length (fixed-size benchmarks: ``n`` in all)."""
    _load_builtin()
    bench = BENCHMARKS.get(name)
    if bench is None:
        raise ConfigError(f"unknown benchmark {name!r}; choose from: {', '.join(BENCHMARKS)}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1 (got {n})")
    if bench.fixed_lengths:
        return bench.generate(0, n, seed, data_dir)
    tasks: list[Task] = []
    for length in lengths:
        tasks.extend(bench.generate(length, n, seed, data_dir))
    return tasks


def benchmark_names() -> list[str]:
    _load_builtin()
    return list(BENCHMARKS)
