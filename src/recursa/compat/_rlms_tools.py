"""rlms ``custom_tools`` / ``custom_sub_tools`` and ``custom_system_prompt``, for recursa.

An rlms tool entry is a value or ``{"tool": value, "description": "..."}``; a callable value is a
function the model may call, anything else is data put in the REPL as a variable. recursa runs
model code in another process, so a tool is a host function the REPL calls through the frame
protocol (arguments and results travel as JSON), and data must be JSON to get there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recursa.errors import ConfigError

__all__ = ["RESERVED_NAMES", "ToolEntry", "parse_tools", "system_prompt_text", "tool_kwargs"]

# Names rlms refuses as tools (its REPL's own); recursa's REPL has these and more.
RESERVED_NAMES = frozenset(
    {
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "SHOW_VARS",
        "answer",
        "context",
        "history",
    }
)


@dataclass(frozen=True)
class ToolEntry:
    """One parsed rlms tool entry."""

    name: str
    value: Any
    description: str | None = None

    @property
    def is_function(self) -> bool:
        return callable(self.value)


def parse_tools(tools: Mapping[str, Any] | None) -> list[ToolEntry]:
    """rlms' two entry shapes, checked against the reserved names as rlms checks them."""
    if not tools:
        return []
    clash = sorted(set(tools) & RESERVED_NAMES)
    if clash:
        raise ConfigError(
            f"custom tools cannot use the REPL's own names {clash}: rename them "
            f"(reserved: {', '.join(sorted(RESERVED_NAMES))})"
        )
    out = []
    for name, entry in tools.items():
        if isinstance(entry, Mapping) and "tool" in entry:
            desc = entry.get("description")
            out.append(ToolEntry(name, entry["tool"], desc if isinstance(desc, str) else None))
        else:
            out.append(ToolEntry(name, entry))
    return out


def system_prompt_text(template: str) -> str:
    """A system prompt written for rlms, for recursa. rlms fills ``{custom_tools_section}``
    with ``str.format`` (so its literal braces are written ``{{ }}``); recursa's own tools
    section goes there (``${tools_doc}``: each tool's signature and docstring). A prompt whose
    braces were never meant for ``format`` is kept as it is."""
    try:
        return template.format(custom_tools_section="${tools_doc}")
    except (KeyError, IndexError, ValueError):
        return template


def tool_kwargs(
    tools: Mapping[str, Any] | None, sub_tools: Mapping[str, Any] | None
) -> dict[str, Any]:
    """recursa.RLM keywords for rlms' tools: ``tools`` for the root, ``sub_tools`` for child
    RLMs (rlms: ``custom_sub_tools``, inheriting ``custom_tools`` when ``None``)."""
    out: dict[str, Any] = {}
    if tools:
        out["tools"] = _functions(tools, "custom_tools")
    if sub_tools is not None and (sub_tools or tools):
        out["sub_tools"] = _functions(sub_tools, "custom_sub_tools")
    return out


def _functions(tools: Mapping[str, Any], where: str) -> dict[str, Any]:
    for t in parse_tools(tools):
        if not t.is_function:
            raise ConfigError(
                f"{where}[{t.name!r}] is data, not a function: recursa's REPL runs in another "
                "process and reaches your process only through function calls. Put the data "
                f"in the context (completion({{{t.name!r}: ...}})) or wrap it in a function "
                f"({where}={{'get_{t.name}': lambda: value}})"
            )
    return dict(tools)  # recursa reads rlms' {"tool": fn, "description": ...} form itself
