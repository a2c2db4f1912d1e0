"""Batches: many questions, run locally or on a Ray cluster, with one rate limiter, shared
limits, resume and one results file (see docs/batch.md).

``batch(rlm, "items.jsonl", out="results.jsonl")`` yields each result as it finishes.
"""

from __future__ import annotations

from recursa.batch.items import Item, ItemError, load_items, parse_items
from recursa.batch.ratelimit import LocalRateLimiter, RateLimiter, RateLimits
from recursa.batch.results import ResultsWriter, read_results
from recursa.batch.run import BatchLimits, Executor, Plan, batch, make_executor

__all__ = [
    "BatchLimits",
    "Executor",
    "Item",
    "ItemError",
    "LocalRateLimiter",
    "Plan",
    "RateLimiter",
    "RateLimits",
    "ResultsWriter",
    "batch",
    "load_items",
    "make_executor",
    "parse_items",
    "read_results",
]
