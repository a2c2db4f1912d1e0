r"""A tool's parameters: the JSON types its type hints allow, and the check of each argument.

``search(query: str, limit: int = 5)`` gives two :class:`ToolParam`\ s: ``query`` accepts a JSON
string and is required, ``limit`` a JSON integer and is optional (the function's default applies
when the model leaves it out). Hints map to JSON types as JSON Schema names them: ``str``,
``int``, ``float`` (an integer fits too), ``bool``, ``None``, lists and tuples (``array``), dicts
and mappings (``object``), their unions and ``Optional``, and ``Literal[...]`` (its values, too).
Any other hint (a dataclass, ``Any``, a hint that cannot be resolved) accepts any JSON value: the
function gets it as it came.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from recursa.errors import ConfigError

__all__ = ["JsonType", "ToolParam", "hint_text", "param_of"]

JsonType = Literal["string", "integer", "number", "boolean", "null", "array", "object"]
_PY_NAMES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
    "array": "list",
    "object": "dict",
}
_SEQUENCES = (abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection, abc.Set)


def _json_type(value: object) -> JsonType | None:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _hint_types(hint: Any) -> tuple[frozenset[str] | None, tuple[Any, ...]]:
    """The JSON types a parameter with type hint ``hint`` accepts (``None``: any value), and
    the values a ``Literal`` allows (empty: no such limit)."""
    if hint is inspect.Parameter.empty or hint is Any or hint is object or isinstance(hint, str):
        return None, ()
    if hint is None or hint is type(None):
        return frozenset({"null"}), ()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _hint_types(args[0])
    if origin is Literal:
        found = {_json_type(v) for v in args}
        return (None if None in found else frozenset(t for t in found if t)), args
    if origin in (Union, types.UnionType):
        union: set[str] = set()
        choices: list[Any] = []
        only_literals = True  # Literal["a", "b"] | None: the values are the whole choice
        for arg in args:
            kinds, allowed = _hint_types(arg)
            if kinds is None:
                return None, ()
            union |= kinds
            choices += [None] if arg is type(None) else list(allowed)
            only_literals = only_literals and (bool(allowed) or arg is type(None))
        return frozenset(union), tuple(choices) if only_literals else ()
    return _plain_types(origin or hint), ()


def _plain_types(base: Any) -> frozenset[str] | None:
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if base in simple:
        return frozenset({simple[base]})
    if base in (list, tuple, set, frozenset) or base in _SEQUENCES:
        return frozenset({"array"})
    if base is dict or (isinstance(base, type) and issubclass(base, abc.Mapping)):
        return frozenset({"object"})
    if typing.is_typeddict(base):
        return frozenset({"object"})
    return None  # a class of the caller's (a dataclass...): it gets the JSON value as it came


def hint_text(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return ""
    if isinstance(hint, str):
        return hint
    if isinstance(hint, type) and hint.__module__ == "builtins":
        return hint.__name__
    return inspect.formatannotation(hint)


@dataclass(frozen=True)
class ToolParam:
    """One parameter of a tool, as the model sees it and the host checks it."""

    name: str
    types: frozenset[str] | None  # JSON types accepted ("integer", "array"...); None: any
    required: bool
    kind: Literal["positional", "either", "keyword"] = "either"
    hint: str = ""  # the type hint as the prompt shows it
    default: Any = field(default=inspect.Parameter.empty, compare=False)
    choices: tuple[Any, ...] = ()  # a Literal's values

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (a JSON value) does not fit this parameter; ``None`` when it does."""
        found = _json_type(value)
        if self.types is not None:
            fits = found in self.types or (found == "integer" and "number" in self.types)
            if not fits:
                want = " or ".join(sorted(_PY_NAMES[t] for t in self.types))
                got = _PY_NAMES.get(found or "", type(value).__name__)
                return f"must be {want}, not {got}"
        if self.choices and not any(value == c and type(value) is type(c) for c in self.choices):
            return f"must be one of {', '.join(repr(c) for c in self.choices)}, not {value!r}"
        return None

    def text(self) -> str:
        """The parameter as the system prompt writes it (``limit: int = 5``)."""
        out = f"{self.name}: {self.hint}" if self.hint else self.name
        if not self.required:
            default = repr(self.default)
            default = default if len(default) <= 40 else default[:37] + "..."
            out += f" = {default}" if self.hint else f"={default}"
        return out

    def schema(self) -> dict[str, Any]:
        """This parameter as JSON Schema."""
        out: dict[str, Any] = {}
        if self.types is not None:
            kinds = sorted(self.types)
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
        if self.choices:
            out["enum"] = list(self.choices)
        return out


def param_of(tool: str, p: inspect.Parameter) -> ToolParam:
    """The :class:`ToolParam` for parameter ``p`` of tool ``tool``; a :class:`ConfigError` for
    one the model could not be shown (``*args``, ``**kwargs``, a private name)."""
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        star = "*" if p.kind is p.VAR_POSITIONAL else "**"
        raise ConfigError(
            f"tool {tool!r} takes {star}{p.name}: give it named parameters the model can see"
        )
    if p.name.startswith("_"):
        raise ConfigError(f"tool {tool!r}: parameter {p.name!r} starts with '_': rename it")
    kinds: dict[Any, Literal["positional", "either", "keyword"]] = {
        p.POSITIONAL_ONLY: "positional",
        p.KEYWORD_ONLY: "keyword",
    }
    accepted, choices = _hint_types(p.annotation)
    return ToolParam(
        name=p.name,
        types=accepted,
        required=p.default is p.empty,
        kind=kinds.get(p.kind, "either"),
        hint=hint_text(p.annotation),
        default=p.default,
        choices=choices,
    )
