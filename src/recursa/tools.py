"""A caller's own functions, offered to the model's code as tools.

``RLM(tools={"search": search})`` puts ``search(...)`` in the REPL. The function runs on the
host, in the caller's process and with its rights (the sandbox itself has no network and no
files), reached through the same frame protocol as ``llm_query``: each tool is one more row of
the host-function table (:mod:`recursa.sandbox.functions`), built per engine, so a child RLM can
get other tools (``sub_tools``) than the root.

A :class:`Tool` is derived from the function: its parameters and their JSON types come from
``inspect.signature`` and the type hints (:mod:`recursa.toolparams`), its description from the
docstring. Arguments and
results are JSON values; the host checks every call's arguments against the schema before the
function runs (:meth:`Tool.bind`), and :mod:`recursa.toolcalls` runs it (timeout, budget,
journal, trace). :func:`tools_prompt` writes the tools' section of the system prompt, and
:func:`load_tools` reads ``--tools module:attr`` for the CLI.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import keyword
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from recursa.errors import ConfigError
from recursa.prompts import render_text
from recursa.sandbox.functions import DEFAULT_FUNCTIONS, FunctionTable, HostFunction, Param
from recursa.sandbox.worker import HELPERS
from recursa.toolparams import ToolParam, hint_text, param_of

__all__ = [
    "RESERVED_NAMES",
    "Tool",
    "ToolParam",
    "ToolSet",
    "ToolSpec",
    "load_tools",
    "tools_prompt",
]

DOC_CHARS = 1200  # of one tool's docstring in the system prompt

#: Names the REPL already gives model code; a tool may not take one.
RESERVED_NAMES = frozenset(
    {
        *DEFAULT_FUNCTIONS.names(),
        *HELPERS,
        "context",
        "answer",
        "history",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "ToolError",
        "LLMQueryError",
        "BudgetExhaustedError",
    }
)
_CONTEXT_ALIAS = re.compile(r"context_\d+")  # a list context's parts: context_0, context_1...

#: What ``RLM(tools=...)`` takes: ``{name: function}`` (a value may also be a :class:`Tool` or
#: ``{"tool": function, "description": "..."}``), or functions and Tools named by themselves.
ToolSpec = Mapping[str, Any] | Iterable[Any]


@dataclass(frozen=True)
class Tool:
    """A function the model's code may call on the host. Build one with :meth:`from_function`
    (``RLM(tools=...)`` does it for every function it is given)."""

    name: str
    fn: Callable[..., Any] = field(compare=False)
    params: tuple[ToolParam, ...] = ()
    doc: str = ""
    returns: str = ""  # the return type hint as the prompt shows it
    is_async: bool = False

    @classmethod
    def from_function(
        cls, fn: object, *, name: str | None = None, description: str | None = None
    ) -> Tool:
        """The tool for ``fn`` (a function, or any callable): named ``name`` (default: the
        function's own name), described by ``description`` (default: its docstring). Raises
        :class:`ConfigError` when ``fn`` is not callable, the name is taken or the signature
        cannot be offered (``*args``, ``**kwargs``)."""
        if isinstance(fn, Tool):
            return fn
        if not callable(fn):
            what = name or "a tool"
            raise ConfigError(
                f"tool {what!r} is a {type(fn).__name__}, not a function: tools are functions "
                "the model's code calls (put data into the context instead)"
            )
        name = name if name is not None else getattr(fn, "__name__", "")
        check_name(name)
        signature = _signature(fn, name)
        params = tuple(param_of(name, p) for p in signature.parameters.values())
        doc = description if description is not None else inspect.getdoc(fn) or ""
        return cls(
            name=name,
            fn=fn,
            params=params,
            doc=doc.strip(),
            returns=hint_text(signature.return_annotation),
            is_async=_is_async(fn),
        )

    @property
    def signature(self) -> str:
        """``search(query: str, limit: int = 5) -> list[dict]``, as the system prompt shows."""
        parts: list[str] = []
        for p in self.params:
            if p.kind == "keyword" and "*" not in parts:
                parts.append("*")
            parts.append(p.text())
        out = f"{self.name}({', '.join(parts)})"
        return f"{out} -> {self.returns}" if self.returns else out

    def schema(self) -> dict[str, Any]:
        """The tool as a JSON Schema of its arguments, with its name and description."""
        return {
            "name": self.name,
            "description": self.doc,
            "parameters": {
                "type": "object",
                "properties": {p.name: p.schema() for p in self.params},
                "required": [p.name for p in self.params if p.required],
                "additionalProperties": False,
            },
        }

    def bind(self, args: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments to call the function with, from a call's
        ``args`` (JSON values by parameter name). Raises ``TypeError`` saying what is wrong,
        in words the model can act on."""
        known = {p.name for p in self.params}
        for arg in args:
            if arg not in known:
                raise TypeError(f"{self.name}() got an unexpected argument {arg!r}")
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for p in self.params:
            if p.name not in args:
                if p.required:
                    raise TypeError(f"{self.name}() is missing the argument {p.name!r}")
                if p.kind == "positional":  # a later positional-only one may follow
                    positional.append(p.default)
                continue
            value = args[p.name]
            problem = p.problem(value)
            if problem:
                raise TypeError(f"{self.name}() argument {p.name!r} {problem}")
            if p.kind == "positional":
                positional.append(value)
            else:
                keywords[p.name] = value
        return positional, keywords

    def row(self) -> HostFunction:
        """The tool as a row of the host-function table."""
        params = tuple(
            Param(p.name, "value", p.required, per_item=False, keyword=p.kind == "keyword")
            for p in self.params
        )
        doc = f"{self.signature}\n\n{self.doc}" if self.doc else self.signature
        return HostFunction(self.name, params, handler="tool", doc=doc, batched=False)


def check_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` can be a tool's name in the REPL."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(
            f"tool name {name!r} is not a Python identifier: name it in a dict, "
            "e.g. tools={'search': fn}"
        )
    if name.startswith("_"):
        raise ConfigError(f"tool name {name!r} starts with '_': give it a public name")
    if name in RESERVED_NAMES or _CONTEXT_ALIAS.fullmatch(name) or hasattr(builtins, name):
        raise ConfigError(
            f"tool name {name!r} is taken in the REPL (by recursa or by Python's builtins): "
            "choose another, e.g. tools={'my_" + name.lower() + "': fn}"
        )


def _signature(fn: Callable[..., Any], name: str) -> inspect.Signature:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"tool {name!r}: its signature cannot be read ({exc}); wrap it in a def"
        ) from None
    # Hints written as strings (``from __future__ import annotations``) are resolved one by
    # one in the function's module, as ``eval_str=True`` would do all at once: a hint naming
    # something local to a function stays text (any JSON value) without losing the others.
    scope = dict(getattr(getattr(fn, "func", fn), "__globals__", {}))

    def resolve(hint: Any) -> Any:
        if not isinstance(hint, str):
            return hint
        try:
            return eval(hint, scope)  # the caller's own annotation, as inspect evaluates it
        except Exception:
            return hint

    params = [p.replace(annotation=resolve(p.annotation)) for p in signature.parameters.values()]
    return signature.replace(
        parameters=params, return_annotation=resolve(signature.return_annotation)
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class ToolSet(Mapping[str, Tool]):
    """Tools by name (immutable). ``ToolSet.of(spec)`` builds one from what ``RLM`` takes."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ConfigError(f"two tools are named {tool.name!r}: rename one")
            self._tools[tool.name] = tool

    @classmethod
    def of(cls, spec: ToolSpec | ToolSet | None) -> ToolSet:
        """Tools from ``{name: function}`` (a value may be a :class:`Tool` or
        ``{"tool": function, "description": "..."}``), or from functions and Tools."""
        if spec is None:
            return cls()
        if isinstance(spec, ToolSet):
            return spec
        if isinstance(spec, Mapping):
            return cls(_entry(str(name), value) for name, value in spec.items())
        if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
            raise ConfigError(
                f"tools must be a dict of name -> function or a list of functions, not "
                f"{type(spec).__name__}"
            )
        return cls(Tool.from_function(fn) for fn in spec)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolSet({', '.join(self._tools)})"

    def rows(self) -> list[HostFunction]:
        return [tool.row() for tool in self._tools.values()]

    def table(self, base: FunctionTable = DEFAULT_FUNCTIONS) -> FunctionTable:
        """``base`` with these tools added: what a sandbox offering them must be built with."""
        return base.extended(self.rows())


def _entry(name: str, value: Any) -> Tool:
    if isinstance(value, Tool):
        if value.name == name:
            return value
        check_name(name)
        return replace(value, name=name)  # its own description stays
    if isinstance(value, Mapping) and "tool" in value:  # the rlms form
        description = value.get("description")
        return Tool.from_function(
            value["tool"], name=name, description=None if description is None else str(description)
        )
    return Tool.from_function(value, name=name)


def tools_prompt(tools: Mapping[str, Tool]) -> str:
    """The tools' section of the system prompt ("" when there are none): each tool's
    signature and docstring."""
    if not tools:
        return ""
    lines = []
    for tool in tools.values():
        doc = tool.doc if len(tool.doc) <= DOC_CHARS else tool.doc[: DOC_CHARS - 5] + " [...]"
        line = f"  - `{tool.signature}`"
        if doc:
            line += ": " + "\n".join(
                f"    {text}" if text.strip() and i else text
                for i, text in enumerate(doc.split("\n"))
            )
        lines.append(line)
    return render_text("tools_doc", tools="\n".join(lines))


def load_tools(spec: str) -> ToolSet:
    """The tools ``module:attr`` names (``--tools mytools:TOOLS``): a dict of name -> function,
    a list of functions, or one function. The module is imported from ``sys.path``, or else
    from the current folder. Raises :class:`ConfigError` saying what is missing."""
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"tools {spec!r}: write module:attribute, e.g. mytools:TOOLS "
            "(a dict of name -> function in mytools.py)"
        )
    module = _import(module_name, spec)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigError(
                f"tools {spec!r}: module {module_name} has no {attr!r} "
                f"(define {attr} = {{'name': function}} in it)"
            ) from None
    if callable(value) and not isinstance(value, Mapping):
        value = [value]
    try:
        return ToolSet.of(value)
    except ConfigError as exc:
        raise ConfigError(f"tools {spec!r}: {exc}") from None


def _import(module_name: str, spec: str) -> types.ModuleType:
    # The CLI's own sys.path lacks the current folder (unlike `python -m`); add it at the end,
    # so a file here never shadows an installed module.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"tools {spec!r}: no module named {module_name!r}; put {module_name}.py in "
                "the current folder or a folder on PYTHONPATH"
            ) from None
        raise ConfigError(f"tools {spec!r}: importing {module_name} failed: {exc}") from None
    except (Exception, SystemExit) as exc:  # the user's module: whatever it raised
        raise ConfigError(
            f"tools {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
