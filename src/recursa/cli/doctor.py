"""``recursa doctor``: which sandbox protections are active on this machine."""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Annotated, Any

import typer
from rich.markup import escape

__all__ = ["collect", "register"]

_YES, _NO = "[green]yes[/]", "[red]no[/]"


async def _live(tier: str) -> dict[str, Any]:
    """Start a worker of ``tier`` and report what it actually put in force."""
    from recursa.sandbox import SandboxWarning, sandbox_factory
    from recursa.sandbox.base import SandboxConfig

    box = sandbox_factory(tier)(SandboxConfig(), None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SandboxWarning)  # reported below instead
            await box.start()
        return box.isolation()
    except Exception as exc:  # a tier that cannot start is reported, not raised
        return {"tier": tier, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await box.shutdown()


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
) -> None:
    """Report which sandbox protections are active here (seccomp, Landlock, limits, tiers)."""
    from recursa.errors import ConfigError

    for name in install:
        if name != "wasm":
            raise ConfigError(f"--install knows only 'wasm' (got {name!r})")
        from recursa.sandbox.pyodide import ensure_pyodide, require_deno

        require_deno()
        ensure_pyodide()
    report = collect(["process", "wasm", "docker"] if live else ["process"])
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _render(report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
