"""The functions model code calls on the host: one table, defined once.

Each :class:`HostFunction` row names a function the REPL offers, its parameters and the host
handler that answers one item. Everything else is derived from the table:

- the worker's builtins: the table travels in the ``init`` frame as :meth:`FunctionTable.wire`
  (the worker is standard-library only and cannot import this module) and the worker builds one
  Python function per entry (``worker.host_function``);
- the frame protocol's checks of every ``call`` frame (:meth:`FunctionTable.check`);
- the host's dispatch (:class:`recursa.subcalls.SubCalls` binds one handler per ``handler`` name).

A row with ``batched=True`` also gives ``<name>_batched``: each per-item parameter becomes a list
(``prompt`` -> ``prompts``), the items are answered concurrently and in order, and a failed item
comes back as an error string instead of failing the batch. A new host function is one row.

A caller's own tools (:mod:`recursa.tools`) are rows too, added per engine with
:meth:`FunctionTable.extended`: their parameters are of kind ``value`` (any JSON value, checked
against the tool's own schema by the host, not here) and their ``handler`` is ``"tool"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recursa.errors import ProtocolError

__all__ = [
    "DEFAULT_FUNCTIONS",
    "MAX_BATCH",
    "Entry",
    "FunctionTable",
    "HostFunction",
    "Param",
]

MAX_BATCH = 10_000

#: ``text``: any value, sent as ``str(value)``; ``json``: a str, list or dict (or None), sent
#: as it is; ``model``: a model name or None. Batched entries send lists (``texts``, ``jsons``).
#: ``value``: any JSON value (null included); an optional one the caller leaves out is not sent,
#: so the host function's own default applies.
Kind = Literal["text", "json", "model", "texts", "jsons", "value"]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a host function."""

    name: str
    kind: Kind
    required: bool = True
    per_item: bool = True  # in the batched form, one value per item (a list named <name>s)
    item: str = ""  # a batched list's single-item name ("prompts" -> "prompt")
    keyword: bool = False  # keyword-only in the worker's function (after a bare ``*``)

    def batched(self) -> Param:
        """This parameter in the batched form: a list (an optional one may be left out by the
        caller; the worker then sends ``None`` for every item)."""
        if not self.per_item:
            return self
        kind: Kind = "texts" if self.kind == "text" else "jsons"
        return Param(f"{self.name}s", kind, self.required, item=self.name)


@dataclass(frozen=True, slots=True)
class HostFunction:
    """A row of the table: the single-item form, and whether a batched twin exists."""

    name: str
    params: tuple[Param, ...]
    handler: str  # the host handler that answers one item ("llm", "rlm")
    doc: str
    batched: bool = True
    batched_doc: str = ""
    # A list operation (llm_map and friends): ``counts`` names the list parameter whose items
    # the call answers (its length is the call's size); ``result="values"`` means the host
    # replies ``{"values": [...], "note": str}`` and the worker prints the note and returns the
    # values; ``select`` names a parameter whose items the worker keeps where a value is true.
    counts: str = ""
    result: Literal["", "values"] = ""
    select: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One callable name as the worker and the protocol see it (a row, or its batched twin)."""

    name: str
    params: tuple[Param, ...]
    handler: str
    batch: bool
    doc: str
    counts: str = ""
    result: str = ""
    select: str = ""

    def size(self, args: Mapping[str, Any]) -> int:
        """How many items a checked call carries (1 for a single call)."""
        if self.counts:
            return len(args[self.counts])
        if not self.batch:
            return 1
        return len(next(args[p.name] for p in self.params if p.per_item))

    def items(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The per-item argument dicts of a checked call (one for a single call), each keyed
        by the single-item parameter names."""
        if not self.batch:
            return [dict(args)]
        lists = {p.item: args[p.name] for p in self.params if p.per_item}
        shared = {p.name: args.get(p.name) for p in self.params if not p.per_item}
        return [{**shared, **{k: v[i] for k, v in lists.items()}} for i in range(self.size(args))]

    def check(self, args: Any) -> None:
        """Raise :class:`ProtocolError` unless ``args`` fit this entry (a batch's lists are all
        present and equally long)."""
        if not isinstance(args, dict):
            raise ProtocolError(f"call frame: {self.name} needs an object of arguments")
        length: int | None = None
        for p in self.params:
            if p.kind == "value":  # any JSON value; the tool's host handler checks its type
                if p.required and p.name not in args:
                    raise ProtocolError(f"call frame: {self.name} is missing {p.name!r}")
                continue
            value = args.get(p.name)
            if value is None and p.kind not in ("texts", "jsons"):  # a batch's lists: always
                if p.required:
                    raise ProtocolError(f"call frame: {self.name} is missing {p.name!r}")
                continue
            if p.kind == "text" and not isinstance(value, str):
                raise ProtocolError(f"call frame: {p.name} must be a string")
            if p.kind == "model" and not isinstance(value, str):
                raise ProtocolError(f"call frame: {p.name} must be a string or null")
            if p.kind in ("texts", "jsons"):
                if not isinstance(value, list):
                    raise ProtocolError(f"call frame: {p.name} must be a list")
                if p.kind == "texts" and not all(isinstance(v, str) for v in value):
                    raise ProtocolError(f"call frame: {p.name} must be a list of strings")
                if len(value) > MAX_BATCH:
                    raise ProtocolError(
                        f"call frame: {len(value)} items in one batch (limit {MAX_BATCH})"
                    )
                if not self.batch or not p.per_item:
                    continue
                if length is not None and len(value) != length:
                    raise ProtocolError(f"call frame: {p.name} must be as long as the prompts")
                length = len(value)

    def wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": [
                {"name": p.name, "kind": p.kind, "required": p.required}
                | ({"keyword": True} if p.keyword else {})
                for p in self.params
            ],
            "batch": self.batch,
            "doc": self.doc,
            "result": self.result,
            "select": self.select,
        }


class FunctionTable:
    """The host functions of a run, by name (rows and their batched twins)."""

    def __init__(self, rows: Iterable[HostFunction]) -> None:
        self.rows = tuple(rows)
        self._entries: dict[str, Entry] = {}
        for row in self.rows:
            self._add(
                Entry(
                    row.name,
                    row.params,
                    row.handler,
                    False,
                    row.doc,
                    row.counts,
                    row.result,
                    row.select,
                )
            )
            if row.batched:
                params = tuple(p.batched() for p in row.params)
                name = f"{row.name}_batched"
                self._add(Entry(name, params, row.handler, True, row.batched_doc or row.doc))

    def _add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"host function {entry.name!r} is defined twice")
        self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def check(self, fn: Any, args: Any) -> Entry:
        """The entry for a ``call`` frame's ``fn``, once its ``args`` are checked."""
        entry = self._entries.get(fn) if isinstance(fn, str) else None
        if entry is None:
            raise ProtocolError(f"call frame: unknown function {fn!r}")
        entry.check(args)
        return entry

    def wire(self) -> list[dict[str, Any]]:
        """The table as the ``init`` frame carries it to the worker."""
        return [entry.wire() for entry in self]

    def extended(self, rows: Iterable[HostFunction]) -> FunctionTable:
        """This table with more rows (an engine's tools); ``self`` when there are none."""
        rows = tuple(rows)
        return FunctionTable((*self.rows, *rows)) if rows else self


_PROMPT = Param("prompt", "text")
_MODEL = Param("model", "model", required=False, per_item=False)
_ITEMS = Param("items", "texts")

DEFAULT_FUNCTIONS = FunctionTable(
    [
        HostFunction(
            "llm_query",
            (_PROMPT, _MODEL),
            handler="llm",
            doc="Ask a language model one question; returns its answer as a string.",
            batched_doc="Ask many questions concurrently; answers come back in order. A failed "
            "item comes back as a string starting with '[llm_query error' instead of failing "
            "the batch.",
        ),
        HostFunction(
            "rlm_query",
            (_PROMPT, Param("context", "json", required=False)),
            handler="rlm",
            doc="Start a child RLM (its own REPL, one level deeper) on `context`; returns its "
            "answer. Past the depth limit it is a plain language-model call.",
            batched_doc="Run several child RLMs concurrently; answers come back in order.",
        ),
        HostFunction(
            "llm_map",
            (_ITEMS, Param("instruction", "text"), _MODEL),
            handler="map",
            doc="Apply `instruction` to every item; returns one answer string per item, in "
            "order (None where no usable answer came back). Items are packed many to a prompt.",
            batched=False,
            counts="items",
            result="values",
        ),
        HostFunction(
            "llm_classify",
            (
                _ITEMS,
                Param("labels", "texts"),
                Param("instruction", "text", required=False),
                _MODEL,
            ),
            handler="classify",
            doc="Give every item one of `labels`; returns one label per item, in order (None "
            "where no valid label came back). Items are packed many to a prompt.",
            batched=False,
            counts="items",
            result="values",
        ),
        HostFunction(
            "llm_filter",
            (_ITEMS, Param("condition", "text"), _MODEL),
            handler="filter",
            doc="Keep the items for which `condition` holds; returns them in order.",
            batched=False,
            counts="items",
            result="values",
            select="items",
        ),
    ]
)
