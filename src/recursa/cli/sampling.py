"""The sampling flags, declared once: for both roles and for the sub role alone.

``--top-p``, ``--max-output-tokens``, ``--reasoning-effort`` and ``--provider-option KEY=VALUE``
apply to root turns and sub-calls alike (as ``--temperature`` does); their ``--sub-`` twins set
the sub role alone (``llm_query`` sub-calls and child RLMs) and win over them.
:class:`SamplingOptions` turns the flags into :class:`~recursa.rlm.RLM` keyword arguments and
names the flag the user typed in every error. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from recursa.errors import ConfigError
from recursa.sampling import (
    OptionMap,
    check_max_output_tokens,
    check_reasoning_effort,
    check_temperature,
    check_top_p,
)

__all__ = [
    "MaxOutputTokens",
    "ProviderOption",
    "ReasoningEffort",
    "SamplingOptions",
    "SubMaxOutputTokens",
    "SubProviderOption",
    "SubReasoningEffort",
    "SubTemperature",
    "SubTopP",
    "Temperature",
    "TopP",
    "parse_provider_options",
]

_SUB = "for llm_query sub-calls and child RLMs only; wins over the flag without sub-"

Temperature = Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")]
TopP = Annotated[
    float | None,
    typer.Option("--top-p", help="Nucleus sampling, 0 to 1 (root turns and sub-calls)."),
]
MaxOutputTokens = Annotated[
    int | None,
    typer.Option("--max-output-tokens", help="Output cap of one call (root turns and sub-calls)."),
]
ReasoningEffort = Annotated[
    str | None,
    typer.Option(
        "--reasoning-effort",
        help="none, minimal, low, medium or high: sent as reasoning_effort to OpenAI-compatible "
        "APIs, extended thinking on Anthropic, ignored by the local model.",
    ),
]
ProviderOption = Annotated[
    list[str],
    typer.Option(
        "--provider-option",
        help="KEY=VALUE merged into every request body (VALUE is read as JSON when it parses, "
        "else as text), e.g. top_k=20 or service_tier=flex; repeatable. The local model takes "
        "llama.cpp sampling keys (top_k, min_p, repeat_penalty...).",
        show_default=False,
        metavar="KEY=VALUE",
    ),
]
SubTemperature = Annotated[
    float | None, typer.Option("--sub-temperature", help=f"Sampling temperature, {_SUB}.")
]
SubTopP = Annotated[float | None, typer.Option("--sub-top-p", help=f"Nucleus sampling, {_SUB}.")]
SubMaxOutputTokens = Annotated[
    int | None,
    typer.Option("--sub-max-output-tokens", help=f"Output cap of one call, {_SUB}."),
]
SubReasoningEffort = Annotated[
    str | None, typer.Option("--sub-reasoning-effort", help=f"Reasoning effort, {_SUB}.")
]
SubProviderOption = Annotated[
    list[str],
    typer.Option(
        "--sub-provider-option",
        help=f"KEY=VALUE merged into request bodies, {_SUB} (key by key); repeatable.",
        show_default=False,
        metavar="KEY=VALUE",
    ),
]


def parse_provider_options(values: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; VALUE is JSON when it parses (``20``, ``true``,
    ``{"type": "enabled"}``), else the text itself. A later KEY wins."""
    options: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} top_k=20")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    try:
        OptionMap(options)  # checked now, so the error names the flag
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    return options


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling flags as given (``--temperature`` stays with each command: ``ask`` gives it
    a default of its own under ``--cache``)."""

    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str | None = None
    provider_options: Sequence[str] = ()
    sub_temperature: float | None = None
    sub_top_p: float | None = None
    sub_max_output_tokens: int | None = None
    sub_reasoning_effort: str | None = None
    sub_provider_options: Sequence[str] = ()

    def rlm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~recursa.rlm.RLM`; a bad value is a
        :class:`ConfigError` naming its flag."""
        sub = {
            "temperature": check_temperature(self.sub_temperature, "--sub-temperature"),
            "top_p": check_top_p(self.sub_top_p, "--sub-top-p"),
            "max_output_tokens": check_max_output_tokens(
                self.sub_max_output_tokens, "--sub-max-output-tokens"
            ),
            "reasoning_effort": check_reasoning_effort(
                self.sub_reasoning_effort, "--sub-reasoning-effort"
            ),
            "provider_options": parse_provider_options(
                self.sub_provider_options, "--sub-provider-option"
            ),
        }
        return {
            "top_p": check_top_p(self.top_p, "--top-p"),
            "max_output_tokens": check_max_output_tokens(
                self.max_output_tokens, "--max-output-tokens"
            ),
            "reasoning_effort": check_reasoning_effort(self.reasoning_effort, "--reasoning-effort"),
            "provider_options": parse_provider_options(self.provider_options, "--provider-option"),
            "sub_sampling": {k: v for k, v in sub.items() if v not in (None, {})},
        }
