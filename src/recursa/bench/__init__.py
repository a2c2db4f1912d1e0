"""``recursa.bench``: long-context benchmarks, baseline methods, a resumable harness, reports.

Benchmarks (deterministic, seeded generators; lengths in approximate tokens):
``niah``, ``niah-filler``, ``niah-uuid``, ``niah-synonyms`` (S-NIAH), ``oolong`` and
``oolong-pairs`` (TREC questions, labels hidden), ``multihop`` (a generated collection of 1,000
fictional documents), ``longbench-codeqa`` and ``codeqa-docstring`` (code QA).

Methods: ``direct``, ``rag``, ``summarize``, ``rlm-nosub``, ``rlm``, ``rlm-depth2`` and ``auto``
(the RLM with ``strategy="auto"``).
See ``docs/bench.md``; from the shell, ``recursa bench run`` and ``recursa bench report``.
"""

from __future__ import annotations

from recursa.bench.harness import BenchConfig, read_rows, run_bench
from recursa.bench.methods import METHODS, MethodEnv, Outcome, build_env, model_window
from recursa.bench.report import write_report
from recursa.bench.scoring import score
from recursa.bench.tasks import Task, benchmark_names, make_tasks, parse_lengths

__all__ = [
    "METHODS",
    "BenchConfig",
    "MethodEnv",
    "Outcome",
    "Task",
    "benchmark_names",
    "build_env",
    "make_tasks",
    "model_window",
    "parse_lengths",
    "read_rows",
    "run_bench",
    "score",
    "write_report",
]
