"""``recursa bench run --executor ray``: each (task, method) job of a benchmark grid as a Ray
task, so a grid can use a cluster. The driver keeps the harness's order, resume and row file;
each task builds the bench's models from plain settings (``build_env`` arguments), runs one job
and returns its row. Traces are written by the workers, under the run folder as seen from their
node (one machine, or a shared file system, keeps them together)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from recursa.batch.ray_executor import DEFAULT_CPUS_PER_ITEM, connect, ray_module

if TYPE_CHECKING:
    from recursa.bench.harness import BenchConfig, JobFn
    from recursa.bench.tasks import Task

__all__ = ["bench_job", "ray_jobs"]


def bench_job(
    env_args: Mapping[str, Any], task: Task, method: str, config: BenchConfig
) -> dict[str, Any]:
    """The Ray task: one (task, method) row, with models built in this worker."""
    from recursa.bench.harness import _run_job
    from recursa.bench.methods import build_env
    from recursa.cache import CallCache

    async def go() -> dict[str, Any]:
        kwargs = dict(env_args)
        kwargs["cache"] = CallCache() if kwargs.get("cache") else None
        env = build_env(kwargs.pop("model"), kwargs.pop("sub_model", None), **kwargs)
        env.trace_dir = config.out_dir / "traces"
        try:
            return await _run_job(task, method, env, config)
        finally:
            await env.aclose()

    return asyncio.run(go())


@contextlib.contextmanager
def ray_jobs(
    env_args: Mapping[str, Any], config: BenchConfig, address: str | None
) -> Iterator[JobFn]:
    """A ``run_job`` hook for :func:`recursa.bench.harness.run_bench` that sends each job to
    Ray (``address`` as for ``recursa batch``); Ray retries a job whose worker died."""
    ray = ray_module()
    started_here = connect(ray, address)
    try:
        remote = ray.remote(num_cpus=DEFAULT_CPUS_PER_ITEM, max_retries=3)(bench_job)
        shared = ray.put(dict(env_args))

        async def run(task: Task, method: str) -> dict[str, Any]:
            row: dict[str, Any] = await remote.remote(shared, task, method, config)
            return row

        yield run
    finally:
        if started_here:
            ray.shutdown()
