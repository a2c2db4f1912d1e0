"""``recursa doctor``: which sandbox protections are active on this machine, and whether the
embedded model's llama.cpp build runs safely on this CPU."""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console

    from recursa.embedded.probe import RuntimeChoice

__all__ = ["collect", "register"]

_YES, _NO = "[green]yes[/]", "[red]no[/]"


async def _no_calls(fn: str, args: dict[str, Any]) -> Any:
    """The doctor runs no model code, so nothing may call back (as a sandbox given no handler)."""
    from recursa.sandbox import CallRefused

    raise CallRefused("sub-calls are not available in this sandbox")


async def _live(tier: str) -> dict[str, Any]:
    """Start a worker of ``tier`` and report what it actually put in force."""
    from recursa.sandbox import SandboxWarning, sandbox_factory
    from recursa.sandbox.base import SandboxConfig

    box = sandbox_factory(tier)(SandboxConfig(), _no_calls)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SandboxWarning)  # reported below instead
            await box.start()
        return box.isolation()
    except Exception as exc:  # a tier that cannot start is reported, not raised
        return {"tier": tier, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await box.shutdown()


def local_model(probe_now: bool = False) -> dict[str, Any]:
    """The embedded model on this machine: the llama.cpp build, the CPU features that decide
    its kernels, and the probe's verdict for the default weights (``probe_now`` asks again)."""
    import importlib.util

    from recursa.embedded import probe

    cpu = probe.cpu_identity()
    info: dict[str, Any] = {
        "llama_cpp_python": None,
        "cpu": cpu["model"],
        "cpu_features": probe.cpu_features(cpu["flags"]),
    }
    if importlib.util.find_spec("llama_cpp") is None:
        info["detail"] = "not installed: pip install 'recursa[local]'"
        return info
    info["llama_cpp_python"] = probe.llama_cpp_version()
    from recursa.embedded import get_spec, model_status
    from recursa.embedded.runtime import default_threads
    from recursa.lm.local import PROBE_RECORDS
    from recursa.paths import cache_dir

    status = model_status(get_spec(None))
    if not status.ready:
        info["detail"] = "the default weights are not assembled yet (the first run does it)"
        return info
    records = cache_dir() / PROBE_RECORDS
    choice: RuntimeChoice | None
    if probe_now:
        choice = probe.safe_settings(status.path, records, force=True, threads=default_threads()[1])
    else:
        choice = probe.stored_choice(status.path, records)
    if choice is None:
        info["detail"] = "not probed yet: the first run does it (recursa doctor --probe: now)"
        return info
    info.update(
        probe="ok",
        repacked_weights=choice.extra_bufts,
        crashed=[f"extra_bufts={a.extra_bufts}: {a.signal}" for a in choice.crashed],
        attempts=[asdict(a) for a in choice.attempts],
        build=choice.system_info,
    )
    if "AMX_INT8 = 1" in choice.system_info:
        info["hint"] = "built with native AMX kernels: " + probe.rebuild_hint()
    return info


def collect(live_tiers: list[str]) -> dict[str, Any]:
    """The doctor's findings: what each tier offers here, and a live report per started tier."""
    from recursa.sandbox.isolation import probe_tiers

    tiers = probe_tiers()
    started = {t: asyncio.run(_live(t)) for t in live_tiers if tiers.get(t, {}).get("available")}
    if "wasm" not in started and tiers.get("wasm", {}).get("available"):
        from recursa.sandbox.wasm import WasmSandbox

        # The wasm tier's walls do not depend on the machine: report them without starting.
        started["wasm"] = {**WasmSandbox().isolation(), "started": False}
    found: list[str] = []
    for report in started.values():
        found += report.get("warnings", [])
        if "error" in report:
            found.append(f"sandbox={report['tier']!r} did not start: {report['error']}")
    for name, info in tiers.items():
        if name != "process" and not info.get("available"):
            found.append(f"sandbox={name!r} is unavailable: {info.get('detail', 'not installed')}")
    return {"tiers": tiers, "live": started, "warnings": found}


def _flag(value: Any) -> str:
    return _YES if value else _NO


def _render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="recursa sandbox tiers on this machine", title_justify="left")
    table.add_column("protection")
    for col in report["tiers"]:
        not_started = report["live"].get(col, {}).get("started") is False
        table.add_column(f"{col}*" if not_started else col)
    tiers = report["tiers"]
    live = report["live"]
    proc = live.get("process", {})
    rows = [
        ("available", [_flag(tiers[t].get("available")) for t in tiers]),
        ("seccomp filter", [_flag(live.get(t, {}).get("seccomp")) for t in tiers]),
        ("Landlock ABI", [str(live.get(t, {}).get("landlock_abi", "-")) for t in tiers]),
        ("files confined", [_flag(live.get(t, {}).get("filesystem_confined")) for t in tiers]),
        ("network blocked", [_flag(live.get(t, {}).get("network_blocked")) for t in tiers]),
        ("processes blocked", [_flag(live.get(t, {}).get("processes_blocked")) for t in tiers]),
        ("resource limits", [", ".join(live.get(t, {}).get("rlimits", [])) or "-" for t in tiers]),
        ("threads capped", [str(live.get(t, {}).get("thread_cap", "-")) for t in tiers]),
        ("host non-dumpable", [_flag(live.get(t, {}).get("host_non_dumpable")) for t in tiers]),
    ]
    for name, cells in rows:
        table.add_row(name, *cells)
    console.print(table)
    if any(r.get("started") is False for r in live.values()):
        console.print("* not started: protections by design (--live starts every tier)")
    wasm, docker = tiers.get("wasm", {}), tiers.get("docker", {})
    console.print(
        f"kernel offers: seccomp {_flag(tiers['process'].get('seccomp'))}, Landlock ABI "
        f"{tiers['process'].get('landlock_abi', 0)}; wasm: deno {_flag(wasm.get('deno'))}, "
        f"pyodide {_flag(wasm.get('pyodide_installed'))}; docker engine "
        f"{_flag(docker.get('available'))}"
    )
    if proc.get("protections"):
        console.print("process tier in force: " + ", ".join(proc["protections"]))
    for msg in report["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(msg)}")
    _render_local(console, report.get("local_model", {}))


def _render_local(console: Console, info: dict[str, Any]) -> None:
    features = ", ".join(info.get("cpu_features", [])) or "none of note"
    version = info.get("llama_cpp_python") or "not installed"
    cpu = escape(info.get("cpu", "?"))
    console.print(f"\nembedded model: llama-cpp-python {escape(version)} on {cpu}")
    console.print(f"  CPU features: {escape(features)}")
    if info.get("detail"):
        console.print(f"  {escape(info['detail'])}")
    if info.get("probe"):
        if info["repacked_weights"]:
            kernels = "repacked kernels (measured fastest)"
        elif info["crashed"]:
            kernels = "plain kernels (repacked ones crashed)"
        else:
            kernels = "plain kernels (repacked ones were not 10% faster)"
        console.print(f"  probe: runs safely with {kernels}")
        for attempt in info["attempts"]:
            verdict = "ok" if attempt["ok"] else (attempt["signal"] or "failed")
            console.print(
                f"    extra_bufts={attempt['extra_bufts']}: {verdict}, "
                f"{attempt['prompt_tokens']} prompt tokens at {attempt['prompt_tok_per_s']}/s, "
                f"generation {attempt['generation_tok_per_s']}/s"
            )
        console.print(f"  build: {escape(info['build'])}")
    if info.get("hint"):
        console.print(f"  [yellow]hint:[/] {escape(info['hint'])}")


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    install: Annotated[
        list[str],
        typer.Option("--install", help="Fetch what a tier needs first (only 'wasm': Pyodide)."),
    ] = [],  # noqa: B006 - typer needs a literal default
    live: Annotated[
        bool,
        typer.Option(
            "--live/--no-live",
            help="Start every available tier and report what it enforces (default: process "
            "tier only).",
        ),
    ] = False,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Check now, in a child process, which llama.cpp settings run the embedded "
            "model without crashing on this CPU (otherwise the first run does, once).",
        ),
    ] = False,
) -> None:
    """Report which sandbox protections are active here (seccomp, Landlock, limits, tiers) and
    whether the embedded model runs safely on this CPU."""
    from recursa.errors import ConfigError

    for name in install:
        if name != "wasm":
            raise ConfigError(f"--install knows only 'wasm' (got {name!r})")
        from recursa.sandbox.pyodide import ensure_pyodide, require_deno

        require_deno()
        ensure_pyodide()
    report = collect(["process", "wasm", "docker"] if live else ["process"])
    report["local_model"] = local_model(probe)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _render(report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
