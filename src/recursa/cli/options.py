"""Options more than one command takes, declared once: their flag, type and help text.

``recursa ask``, ``serve``, ``mcp`` and ``bench run`` share the model flags, ``--sandbox``,
the price table and the limit flags. Each is an ``Annotated`` alias a command uses as a
parameter's type; where the help must say something different per command (``--model``,
``--timeout``, ``--max-sandboxes``), a small function takes the help text and returns the
``typer.Option`` for ``Annotated[...]``, so the flag's name and spelling still live here.

The limit flags arrive as :class:`LimitOptions`, which builds :class:`~recursa.limits.Limits`
and names the flag the user typed in its errors. Nothing heavy is imported at module level:
every command imports this module on start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.models import OptionInfo

from recursa.errors import ConfigError

if TYPE_CHECKING:
    from recursa.limits import Limits
    from recursa.pricing import PriceTable

__all__ = [
    "BaseURL",
    "CellTimeout",
    "Compaction",
    "CompactionThreshold",
    "Concurrency",
    "ContextFormat",
    "LimitOptions",
    "MaxCalls",
    "MaxContextMB",
    "MaxCost",
    "MaxDepth",
    "MaxFileMB",
    "MaxIterations",
    "MaxOutputChars",
    "MaxTokens",
    "MaxToolCalls",
    "NoSubCalls",
    "Prices",
    "ProfileOption",
    "Prologue",
    "ProviderURLs",
    "RootWindow",
    "Sandbox",
    "StrategyOption",
    "SubModel",
    "SubToolsOption",
    "SystemPromptFile",
    "ToolTimeout",
    "ToolsOption",
    "context_bytes",
    "flag_message",
    "max_sandboxes_option",
    "model_option",
    "price_table",
    "prologue_text",
    "strategy_choice",
    "timeout_option",
    "tool_kwargs",
]

MIB = 1024 * 1024

# ---- models and where they run ---------------------------------------------------------------


def model_option(help: str) -> OptionInfo:
    """``--model``/``-m`` with a command's own help. ``$RECURSA_MODEL`` fills it in when
    unset (the help says so in words, so typer's ``[env var]`` note is not repeated)."""
    option: OptionInfo = typer.Option(
        "--model", "-m", help=help, envvar="RECURSA_MODEL", show_envvar=False
    )
    return option


SubModel = Annotated[
    str | None,
    typer.Option(
        "--sub-model", help="Model for llm_query and child RLMs (default: the root model)."
    ),
]
BaseURL = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="API root for OpenAI-compatible or Anthropic-compatible servers "
        "(e.g. http://localhost:8000/v1). Default: $OPENAI_BASE_URL / $ANTHROPIC_BASE_URL.",
    ),
]
# The servers' form: a client may pick models of several providers, so each URL names its own.
ProviderURLs = Annotated[
    list[str],
    typer.Option(
        "--base-url",
        help="API root of the --model's provider (an OpenAI- or Anthropic-compatible server), "
        "or PROVIDER=URL for another provider (repeatable). A URL is used for its own provider "
        "only, so no other provider's key is ever sent to it.",
        show_default=False,
    ),
]
Sandbox = Annotated[
    str,
    typer.Option(
        "--sandbox",
        help="Where model code runs: process (default), wasm or docker; "
        "`recursa doctor` shows what each protects here.",
    ),
]
Prices = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        envvar="RECURSA_PRICES",
        show_envvar=False,  # the help names it
        help="JSON/TOML file extending the price table ($RECURSA_PRICES).",
    ),
]


StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy",
        envvar="RECURSA_STRATEGY",
        show_envvar=False,  # the help names it
        help="How to answer: rlm (the REPL loop), direct (one call with the whole context in "
        "the prompt, cut in the middle if the model's window is too small) or auto (direct "
        "when the context fits the root model's window with room to spare, else rlm; a model "
        "that declares no window gets rlm). $RECURSA_STRATEGY sets a default.",
    ),
]


def strategy_choice(value: str) -> str:
    """``--strategy`` checked (one of auto, rlm, direct): a ConfigError naming the flag."""
    from recursa.strategy import STRATEGIES

    name = value.strip().lower()
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy {value!r}: choose one of {', '.join(STRATEGIES)}")
    return name


def price_table(prices: Path | None) -> PriceTable:
    """The built-in prices, extended by ``--prices`` (or ``$RECURSA_PRICES``) when given."""
    from recursa.pricing import PriceTable

    return PriceTable.from_file(prices) if prices else PriceTable()


# ---- long root conversations -------------------------------------------------------------------

Compaction = Annotated[
    bool | None,
    typer.Option(
        "--compaction/--no-compaction",
        help="When the root conversation nears the model's window, replace its older turns "
        "with a summary (the full transcript stays in the REPL as history_transcript). "
        "Default: on when the window is known (the embedded model's, or --root-window).",
        show_default=False,
    ),
]
CompactionThreshold = Annotated[
    float,
    typer.Option(
        "--compaction-threshold",
        min=0.05,
        max=1.0,
        help="Compact when the root conversation reaches this fraction of the window.",
    ),
]
RootWindow = Annotated[
    int | None,
    typer.Option(
        "--root-window",
        min=256,
        help="The root model's context window in tokens, for models that declare none "
        "(API models); compaction works to it.",
    ),
]


# ---- limits ----------------------------------------------------------------------------------

MaxIterations = Annotated[
    int,
    typer.Option(
        "--max-iterations",
        help='Root turns per RLM that may run code, then at most one "answer now" turn '
        "that runs no code.",
    ),
]
MaxDepth = Annotated[
    int, typer.Option("--max-depth", help="How deep rlm_query may nest child RLMs.")
]
MaxCost = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        help="USD per run: a call is sent only if its worst case still fits "
        "(calls of models without a known price do not count).",
    ),
]
MaxCalls = Annotated[
    int | None,
    typer.Option(
        "--max-calls", help="LM requests per run, retries included; none is sent past it."
    ),
]
MaxTokens = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        help="Tokens per run: a call is sent only if its estimated prompt plus its output "
        "cap still fits.",
    ),
]
CellTimeout = Annotated[
    float,
    typer.Option("--cell-timeout", help="Compute-time limit of one code cell, in seconds."),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", help="LM calls in flight at once, per provider.")
]
MaxOutputChars = Annotated[
    int | None,
    typer.Option(
        "--max-output-chars",
        help="REPL output shown to the model per iteration (default: the model's own "
        "suggestion, else 20000).",
    ),
]


MaxToolCalls = Annotated[
    int | None,
    typer.Option(
        "--max-tool-calls",
        help="Calls of the --tools (and --sub-tools) per run; the first past it stops the run.",
    ),
]
ToolTimeout = Annotated[
    float,
    typer.Option("--tool-timeout", help="Wall-clock limit of one tool call, in seconds."),
]


def timeout_option(help: str) -> OptionInfo:
    """``--timeout``: a run's wall clock, in seconds (what bounds a "run" differs by command)."""
    option: OptionInfo = typer.Option("--timeout", help=help)
    return option


def max_sandboxes_option(help: str) -> OptionInfo:
    """``--max-sandboxes``: sandbox processes alive at once in one run's tree."""
    option: OptionInfo = typer.Option("--max-sandboxes", help=help)
    return option


# Limits fields as flags: the library's message names the field, the CLI's the flag.
_LIMIT_FLAGS = {
    "max_iterations": "--max-iterations",
    "max_depth": "--max-depth",
    "max_llm_calls": "--max-calls",
    "max_tokens": "--max-tokens",
    "max_cost_usd": "--max-cost",
    "timeout_s": "--timeout",
    "cell_timeout_s": "--cell-timeout",
    "max_concurrency": "--concurrency",
    "max_output_chars": "--max-output-chars",
    "max_sandboxes": "--max-sandboxes",
    "max_tool_calls": "--max-tool-calls",
    "tool_timeout_s": "--tool-timeout",
}


def flag_message(message: str) -> str:
    """A library message about :class:`~recursa.limits.Limits` fields, naming the flags."""
    for name, flag in _LIMIT_FLAGS.items():
        message = re.sub(rf"\b(Limits\.)?{name}\b", flag, message)
    return message


@dataclass(frozen=True)
class LimitOptions:
    """The limit flags as given. ``serve`` and ``mcp`` have no ``--concurrency`` or
    ``--max-output-chars`` (and ``mcp`` no ``--max-sandboxes``): those keep the library's
    defaults."""

    max_iterations: int
    max_depth: int
    max_cost: float | None
    max_calls: int | None
    max_tokens: int | None
    timeout: float | None  # None: no wall-clock limit
    cell_timeout: float
    max_sandboxes: int | None = None  # None: 8, or max_depth + 1 if more
    concurrency: int = 16  # Limits' own default
    max_output_chars: int | None = None  # None: the model's own suggestion
    max_tool_calls: int | None = None
    tool_timeout: float | None = 30.0  # Limits' own default

    def limits(self) -> Limits:
        """The :class:`~recursa.limits.Limits`; a bad value is a ConfigError naming its flag."""
        from recursa.limits import Limits

        try:
            return Limits(
                max_iterations=self.max_iterations,
                max_depth=self.max_depth,
                max_llm_calls=self.max_calls,
                max_tokens=self.max_tokens,
                max_cost_usd=self.max_cost,
                timeout_s=self.timeout,
                cell_timeout_s=self.cell_timeout,
                max_concurrency=self.concurrency,
                max_output_chars=self.max_output_chars,
                max_sandboxes=self.max_sandboxes,
                max_tool_calls=self.max_tool_calls,
                tool_timeout_s=self.tool_timeout,
            )
        except ConfigError as exc:  # name the flag the user typed, not the library's field
            raise ConfigError(flag_message(str(exc))) from None


# ---- how much input is read ------------------------------------------------------------------

MaxFileMB = Annotated[
    float,
    typer.Option(
        "--max-file-mb",
        help="Largest file read, in MiB (checked before reading; larger files in a folder "
        "are skipped with a note).",
    ),
]
MaxContextMB = Annotated[
    float,
    typer.Option("--max-context-mb", help="All files read for one question together, in MiB."),
]


def context_bytes(max_file_mb: float, max_context_mb: float) -> tuple[int, int]:
    """``--max-file-mb`` and ``--max-context-mb`` in bytes (at least one each)."""
    if max_file_mb <= 0 or max_context_mb <= 0:
        raise ConfigError("--max-file-mb and --max-context-mb must be positive")
    return max(1, int(max_file_mb * MIB)), max(1, int(max_context_mb * MIB))


ContextFormat = Annotated[
    str,
    typer.Option(
        "--context-format",
        metavar="text|json|auto",
        help="How files given with --context are read: text (as they are), json (parsed: "
        ".jsonl/.ndjson as a list of one value a line, other files as one JSON document, "
        "stdin as either) or auto (.json, .jsonl and .ndjson parsed, the rest text). Files "
        "inside a folder are always text.",
    ),
]


# ---- what the root model is told ---------------------------------------------------------------

SystemPromptFile = Annotated[
    Path | None,
    typer.Option(
        "--system-prompt",
        help="A file with a system prompt of your own, replacing the profile's (its turn "
        "messages stay). It may use ${context_hint}, ${subcall_doc}, ${subcall_method}, "
        "${subcall_example} and ${tools_doc}.",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", help="Prompt profile: standard or strict (default: by model)."),
]
NoSubCalls = Annotated[
    bool,
    typer.Option("--no-sub-calls", help="Give the model the REPL only: no llm_query/rlm_query."),
]
Prologue = Annotated[
    str | None,
    typer.Option(
        "--prologue",
        help="Text put before the question in the first user turn (standing instructions, "
        "tips for the task); @FILE reads it from a file (@@ for a literal leading @).",
        show_default=False,
    ),
]


def prologue_text(value: str | None) -> str | None:
    """``--prologue`` as text: ``@FILE`` is the file's text, ``@@...`` a literal ``@...``."""
    if value is None or not value.startswith("@"):
        return value
    if value.startswith("@@"):
        return value[1:]
    from recursa.prompts import read_prompt

    if not value[1:]:
        raise ConfigError("--prologue @FILE: name the file after the @")
    return read_prompt(Path(value[1:]), what="--prologue")


# ---- the caller's tools ----------------------------------------------------------------------

ToolsOption = Annotated[
    str | None,
    typer.Option(
        "--tools",
        help="Functions the model's code may call, as module:attribute naming a dict of "
        "name -> function (or a list of functions) in an importable module, e.g. "
        "mytools:TOOLS for mytools.py here or on PYTHONPATH. They run in this process, with "
        "your rights: give only tools you would run yourself.",
        show_default=False,
    ),
]
SubToolsOption = Annotated[
    str | None,
    typer.Option(
        "--sub-tools",
        help="module:attribute: the tools of child RLMs (rlm_query) instead of --tools.",
        show_default=False,
    ),
]


def tool_kwargs(tools: str | None, sub_tools: str | None) -> dict[str, Any]:
    """``--tools``/``--sub-tools`` loaded, as ``RLM`` keyword arguments (only those given)."""
    from recursa.tools import load_tools

    out: dict[str, Any] = {}
    if tools:
        out["tools"] = load_tools(tools)
    if sub_tools:
        out["sub_tools"] = load_tools(sub_tools)
    return out
