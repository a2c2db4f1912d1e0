"""``recursa bench``: run the long-context benchmarks and report on them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recursa.cli.options import (
    BaseURL,
    MaxIterations,
    Prices,
    Sandbox,
    SubModel,
    model_option,
    price_table,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from recursa.bench.harness import BenchConfig, JobFn
    from recursa.bench.methods import MethodEnv

__all__ = ["bench_app", "register"]

bench_app = typer.Typer(
    help="Long-context benchmarks: RLM against direct, RAG and summarising baselines.",
    no_args_is_help=True,
)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@bench_app.command("run")
def run_cmd(
    benchmark: Annotated[
        list[str],
        typer.Option(
            "--benchmark",
            "-b",
            help="Benchmark(s), repeated or comma-separated (`recursa bench list`).",
        ),
    ],
    lengths: Annotated[
        str, typer.Option("--lengths", help="Context lengths in tokens (~4 characters each).")
    ] = "8k,32k",
    methods: Annotated[
        str,
        typer.Option("--methods", help="direct, rag, summarize, rlm-nosub, rlm, rlm-depth2, auto."),
    ] = "direct,rag,rlm",
    model: Annotated[
        str | None,
        model_option(
            "Model for every method (default: $RECURSA_MODEL, else the embedded local model)."
        ),
    ] = None,
    sub_model: SubModel = None,
    n: Annotated[int, typer.Option("--n", help="Tasks per benchmark and length.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            help="Tasks in flight (default: 1 for local models, "
            "which run one call at a time anyway, else 4).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder; an existing one is resumed (default: bench-runs/ and the start "
            "time).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder with trec/ and longbench2-codeqa/ "
            "($RECURSA_BENCH_DATA, else shared/data beside the checkout).",
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            help="The model's context window in tokens, for `direct` "
            "(default: what the backend says).",
        ),
    ] = None,
    rag_tokens: Annotated[
        int, typer.Option("--rag-tokens", help="Tokens of retrieved text `rag` sends.")
    ] = 2048,
    max_iterations: MaxIterations = 15,
    task_timeout: Annotated[
        float | None,
        typer.Option("--task-timeout", help="Wall-clock limit per task and method, seconds."),
    ] = None,
    max_output_tokens: Annotated[
        int | None, typer.Option("--max-output-tokens", help="Per call (default: backend's).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use the shared call cache.")
    ] = False,
    sandbox: Sandbox = "process",
    prices: Prices = None,
    base_url: BaseURL = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor", help="local (this process) or ray (each job a Ray task; extra ray)."
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster for --executor ray (auto, ray://host:port)."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write report.md and plots at the end.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> int:
    """Run BENCHMARK(s) x LENGTHS x METHODS; one JSONL row per (task, method) in the run folder.

    Rerun the same command with the same --out to resume: finished rows are skipped.
    """

    from recursa.bench.data import find_data_dir
    from recursa.bench.harness import BenchConfig
    from recursa.bench.methods import build_env, parse_methods
    from recursa.bench.tasks import parse_lengths
    from recursa.cache import CallCache
    from recursa.errors import ConfigError
    from recursa.limits import Limits
    from recursa.lm.base import ProviderOptions
    from recursa.lm.registry import default_model_spec, parse_model

    console = _console()
    spec = model or default_model_spec()
    local = parse_model(spec)[0] == "local"
    config = BenchConfig(
        benchmarks=tuple(_split(benchmark)),
        lengths=tuple(parse_lengths(lengths)),
        methods=tuple(parse_methods(methods)),
        out_dir=out or Path("bench-runs") / time.strftime("%Y%m%d-%H%M%S"),
        n=n,
        seed=seed,
        concurrency=concurrency or (1 if local else 4),
        data_dir=find_data_dir(data_dir),
        extra={
            "rag_tokens": rag_tokens,
            "max_iterations": max_iterations,
            "task_timeout": task_timeout,
            "cache": not no_cache,
            "sandbox": sandbox,
        },
    )
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}: choose local or ray")
    limits = Limits(max_iterations=max_iterations, timeout_s=task_timeout)
    # Plain data, so a Ray worker can build the same models (recursa.batch.bench_ray).
    env_args: dict[str, Any] = dict(
        window=window,
        options=ProviderOptions(base_url=base_url),
        limits=limits,
        prices=price_table(prices),
        max_output_tokens=max_output_tokens,
        rag_tokens=rag_tokens,
        sandbox=sandbox,
    )
    env = build_env(spec, sub_model, cache=None if no_cache else CallCache(), **env_args)
    console.print(
        f"[dim]run folder {config.out_dir} · model {env.root_lm.name} · window "
        f"{env.window_tokens:,} tokens ({env.window_source})[/]"
    )
    progress = None if quiet else _Progress(console)
    created = not config.out_dir.exists()
    try:
        with contextlib.ExitStack() as stack:
            run_job = None
            if executor == "ray":
                from recursa.batch.bench_ray import ray_jobs

                remote = {**env_args, "model": spec, "sub_model": sub_model, "cache": not no_cache}
                run_job = stack.enter_context(ray_jobs(remote, config, address))
            stack.enter_context(progress or contextlib.nullcontext())
            asyncio.run(_run(config, env, progress, run_job))
    except BaseException:
        if created:
            _remove_if_no_rows(config.out_dir)
        raise
    if report:
        from recursa.bench.report import write_report

        console.print(f"report: {write_report(config.out_dir)}")
    return 0


def _console() -> Console:
    """The bench's stderr console: its log lines carry no ``file.py:line`` column."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, log_path=False)


def _remove_if_no_rows(folder: Path) -> None:
    """Remove a run folder this run created when the run failed before writing a row."""
    import shutil

    from recursa.bench.harness import ROWS_FILE

    rows = folder / ROWS_FILE
    try:
        if rows.exists() and rows.stat().st_size:
            return
        shutil.rmtree(folder)
    except OSError:
        pass


async def _run(
    config: BenchConfig, env: MethodEnv, progress: _Progress | None, run_job: JobFn | None = None
) -> None:
    from recursa.bench.harness import run_bench

    try:
        await run_bench(config, env, on_event=progress.event if progress else None, run_job=run_job)
    finally:
        await env.aclose()


class _Progress:
    """A progress bar with the running mean score and cost, and one line per finished row."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("score {task.fields[score]}"),
            TextColumn("cost {task.fields[cost]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.scores: list[float] = []
        self.cost = 0.0

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.__exit__(exc_type, exc, tb)

    def _score(self) -> str:
        mean = sum(self.scores) / len(self.scores) if self.scores else None
        return "–" if mean is None else f"{mean:.3f}"

    def _cost(self) -> str:
        return f"${self.cost:.4f}"

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "start":
            for row in data["finished"]:
                self._add(row)
            self.task = self.bar.add_task(
                "bench",
                total=data["total"],
                completed=len(data["finished"]),
                score=self._score(),
                cost=self._cost(),
            )
        elif kind == "begin":
            task = data["task"]
            self._update(description=f"{task.task_id} · {data['method']}")
        elif kind == "row":
            row = data["row"]
            self._add(row)
            self._update(advance=1, score=self._score(), cost=self._cost())
            mark = "[red]error[/]" if row.get("error") else f"score {row['score']:.2f}"
            self.console.log(
                f"{row['task_id']} · {row['method']} · {mark} · {row.get('wall_time_s', 0):.1f}s"
                + (f" · {row['error']}" if row.get("error") else ""),
                markup=True,
            )

    def _update(self, **changes: Any) -> None:
        if self.task is not None:  # run_bench sends "start", which adds the bar, first
            self.bar.update(self.task, **changes)

    def _add(self, row: dict[str, Any]) -> None:
        self.scores.append(float(row.get("score") or 0.0))
        self.cost += float(row.get("cost_usd") or 0.0)


@bench_app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `recursa bench run`.")],
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Also write PNG plots.")] = True,
) -> None:
    """Write RUN_DIR/report.md (score, cost, time per method and length) and RUN_DIR/plots/."""
    from recursa.bench.report import write_report

    typer.echo(str(write_report(run_dir, plots=plots)))


@bench_app.command("list")
def list_cmd() -> None:
    """List the benchmarks and methods."""
    from recursa.bench.methods import METHODS
    from recursa.bench.tasks import BENCHMARKS, benchmark_names

    for name in benchmark_names():
        b = BENCHMARKS[name]
        typer.echo(f"{name:18} {b.description}" + ("  [needs --data-dir]" if b.needs_data else ""))
    typer.echo("methods: " + ", ".join(METHODS))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
