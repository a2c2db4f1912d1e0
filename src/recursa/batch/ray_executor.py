"""``executor="ray"``: each item a Ray task on the cluster's nodes, with its own sandbox.

- The RLM travels as data: its :class:`~recursa.config.RunConfig` (``to_dict()``) and a few
  plain objects (price table, runs folder, call cache path); each task builds its RLM with
  :meth:`RLM.from_config`. Models must be given by name (``"openai:gpt-5-mini"``): LM objects
  such as ``ScriptedLM``, tools and custom sandbox factories are code and do not travel.
- Provider keys and URLs (``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL``...) set in the driver's
  environment are passed to the workers through the job's runtime environment when the
  executor connects to Ray itself.
- One actor holds the batch's :class:`~recursa.batch.ratelimit.LimiterCore`; every LM call of
  every task asks it first (:class:`RayRateLimiter`), so RPM/TPM limits, the batch's totals and
  429 pauses hold across the cluster.
- A task whose worker process or node dies is retried by Ray (``max_retries``) on another
  worker; the retried run finds its journal (same run id) and resumes it when the runs folder
  is shared (one machine, or a shared file system), else starts over. Results come back to the
  driver, which alone writes them, once per id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from recursa.batch.job import Job, failure_record, run_item
from recursa.batch.ratelimit import Grant, LimiterCore, wait_granted
from recursa.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from recursa.batch.run import Event, Plan
    from recursa.rlm import RLM

__all__ = [
    "FORWARDED_ENV",
    "RayExecutor",
    "RayRateLimiter",
    "connect",
    "ray_module",
    "run_batch_item",
]

#: Provider settings passed from the driver's environment to the workers.
FORWARDED_ENV = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL", "OLLAMA_HOST", "RECURSA_MODEL",
    "RECURSA_DATA_DIR", "RECURSA_CACHE_DIR",
)  # fmt: skip
DEFAULT_CPUS_PER_ITEM = 0.25  # a run mostly waits on its models; its sandbox is mostly idle
_WAIT_S = 0.5


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("executor='ray' (--executor ray)", "ray", "ray") from None
    return ray


def connect(ray: Any, address: str | None) -> bool:
    """Start or join Ray unless the caller already did; True when this call did (and so
    shuts it down). The workers get the provider settings of :data:`FORWARDED_ENV`."""
    if ray.is_initialized():
        return False
    env = {k: v for k in FORWARDED_ENV if (v := os.environ.get(k))}
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address!r} ({exc}); start one with "
            "`ray start --head`, or leave --address out to start a local Ray"
        ) from None
    return True


class RayRateLimiter:
    """A worker's handle on the batch's limiter actor (see :class:`RateLimiter`)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def acquire(self, tokens: int) -> None:
        grant: Grant = await self.actor.reserve.remote(tokens)

        async def paused_for() -> float:
            left: float = await self.actor.paused_for.remote()
            return left

        await wait_granted(grant, paused_for, asyncio.sleep)

    def settle(self, estimated: int, used: int, cost: float) -> None:
        self.actor.settle.remote(estimated, used, cost)  # fire and forget: nobody waits on it

    def pause(self, seconds: float | None) -> None:
        self.actor.pause.remote(seconds)


def run_batch_item(spec: dict[str, Any], job: Job, actor: Any) -> dict[str, Any]:
    """The Ray task: build the RLM from ``spec`` and run one item in this worker."""
    from recursa.config import RunConfig
    from recursa.rlm import RLM

    rlm = RLM.from_config(RunConfig.from_dict(spec["config"]), **spec["objects"])
    limiter = RayRateLimiter(actor) if actor is not None else None

    async def go() -> dict[str, Any]:
        try:
            return await run_item(rlm, job, limiter)
        finally:
            await rlm.aclose()

    return asyncio.run(go())


def _spec(rlm: RLM) -> dict[str, Any]:
    """What a task needs to build ``rlm`` again; a ConfigError for what cannot travel."""
    owned = rlm._owned
    if any(lm not in owned for lm in (rlm.root_lm, rlm.sub_lm)):
        raise ConfigError(
            "executor='ray' needs models given by name (RLM(model='openai:...')): LM objects "
            "such as ScriptedLM cannot be sent to other processes; use executor='local'"
        )
    if rlm.tools or rlm.sub_tools or rlm.config.sandbox is None:
        raise ConfigError(
            "executor='ray' cannot send tools or a custom sandbox factory to the workers "
            "(they are code); use executor='local'"
        )
    objects: dict[str, Any] = {"prices": rlm.prices}
    if rlm.runs_root is not None:
        objects["runs_root"] = str(rlm.runs_root.resolve())
    if rlm.cache is not None:
        objects["cache"] = str(rlm.cache.path)
    return {"config": rlm.config.to_dict(), "objects": objects}


class RayExecutor:
    """Runs items as Ray tasks, at most ``workers`` in flight (default: the cluster's CPUs
    over ``cpus_per_item``). ``address``: ``None`` starts a local Ray, ``"auto"`` joins the
    cluster this machine belongs to, ``"ray://host:10001"`` a remote one."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        *,
        cpus_per_item: float = DEFAULT_CPUS_PER_ITEM,
        max_retries: int = 3,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {workers})")
        ray_module()  # a missing extra is said before anything runs
        self.address = address
        self.workers = workers
        self.cpus_per_item = cpus_per_item
        self.max_retries = max_retries

    def run(self, rlm: RLM, plan: Plan) -> Iterator[Event]:
        ray = ray_module()
        spec = _spec(rlm)
        started_here = connect(ray, self.address)
        actor = None
        pending: dict[Any, Job] = {}
        try:
            if plan.rate_limits.active:
                limiter = ray.remote(num_cpus=0, max_restarts=-1)(LimiterCore)
                actor = limiter.remote(plan.rate_limits, **plan.spent())
            task = ray.remote(
                num_cpus=self.cpus_per_item, max_retries=self.max_retries, retry_exceptions=False
            )(run_batch_item)
            shared = ray.put(spec)
            room = self.workers or max(
                1, int(ray.cluster_resources().get("CPU", 1) / self.cpus_per_item)
            )
            while True:
                while len(pending) < room and (job := plan.take()) is not None:
                    pending[task.remote(shared, job, actor)] = job
                    yield ("start", job)
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_S)
                for ref in ready:
                    record = self._collect(ray, ref, pending.pop(ref))
                    plan.finished(record)
                    yield ("result", record)
        finally:
            for ref in pending:  # closed early (Ctrl-C, break): their journals stay resumable
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if started_here:
                ray.shutdown()

    @staticmethod
    def _collect(ray: Any, ref: Any, job: Job) -> dict[str, Any]:
        """A task's record, or one saying why Ray gave up on it (its retries spent)."""
        try:
            record: dict[str, Any] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            return failure_record(job.item, job.run_id, exc)
        return record
