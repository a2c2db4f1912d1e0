"""Batch items: one JSON object per line of a JSONL file, checked before anything runs.

An item::

    {"id": "c-17", "question": "Who signed it?", "paths": ["contracts/c-17.pdf.txt"],
     "limits": {"max_cost_usd": 0.5, "max_iterations": 10}}

- ``id`` (string or integer, unique in the file) keys the item's result line;
- ``question``: what to ask;
- its context, one or both of: ``context`` (text, a list, or a JSON object, as given) and
  ``paths`` (``path``): a file or folder, or a list of them, relative to the items file's
  folder; several sources make a list context, as ``recursa ask -c a -c b`` does;
- ``limits`` (optional): :class:`~recursa.limits.Limits` fields that replace the batch's
  per-run limits for this item.

Every error names the line, so a file of thousands of items is fixed in one pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.errors import ConfigError
from recursa.limits import Limits

__all__ = ["Item", "ItemError", "load_items", "parse_items"]

_KNOWN = frozenset({"id", "question", "context", "paths", "path", "limits"})
_LIMIT_FIELDS = frozenset(f.name for f in dataclasses.fields(Limits))


class ItemError(ConfigError):
    """An item line is not a valid item; the message names the line and what to fix."""


@dataclass(frozen=True)
class Item:
    """One question of a batch. ``sources`` are ``load_context`` sources (text, JSON data or
    ``Path``); ``limits`` the item's own :class:`Limits` overrides; ``digest`` a hash of what
    the item asks, so an edited item never resumes the journal of its older self."""

    id: str
    question: str
    sources: tuple[Any, ...]
    limits: Mapping[str, Any] = field(default_factory=dict)
    digest: str = ""
    line: int = 0

    def limits_over(self, base: Limits) -> Limits:
        """``base`` with this item's overrides (checked when the item was read)."""
        return dataclasses.replace(base, **dict(self.limits)) if self.limits else base


def _where(line: int, source: str) -> str:
    return f"{source}, line {line}"


def _paths(value: Any, base: Path, where: str) -> list[Path]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ItemError(f"{where}: 'paths' must be a path or a list of paths")
    return [p if (p := Path(v).expanduser()).is_absolute() else base / p for v in values]


def _limits(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ItemError(f"{where}: 'limits' must be an object of Limits fields")
    unknown = sorted(set(value) - _LIMIT_FIELDS)
    if unknown:
        raise ItemError(
            f"{where}: unknown limit(s) {', '.join(unknown)}; use Limits fields such as "
            "max_iterations, max_llm_calls, max_tokens, max_cost_usd, timeout_s"
        )
    try:
        Limits(**value)
    except (ConfigError, TypeError) as exc:
        raise ItemError(f"{where}: {exc}") from None
    return dict(value)


def _item(data: Any, line: int, base: Path, source: str) -> Item:
    where = _where(line, source)
    if not isinstance(data, dict):
        raise ItemError(f"{where}: an item must be a JSON object with an id and a question")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ItemError(
            f"{where}: unknown key(s) {', '.join(unknown)}; an item has id, question, "
            "context, paths and limits"
        )
    raw_id = data.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise ItemError(f"{where}: 'id' must be a non-empty string or an integer")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ItemError(f"{where}: 'question' must be a non-empty string")
    if "path" in data and "paths" in data:
        raise ItemError(f"{where}: give 'path' or 'paths', not both")
    sources: list[Any] = []
    if data.get("context") is not None:
        sources.append(data["context"])
    listed = data.get("paths", data.get("path"))
    if listed is not None:
        sources += _paths(listed, base, where)
    if not sources:
        raise ItemError(f"{where}: no context: give 'context' (text or JSON) or 'paths'")
    limits = _limits(data["limits"], where) if data.get("limits") is not None else {}
    digest = hashlib.sha256(
        json.dumps([question, data.get("context"), listed], sort_keys=True, default=str).encode()
    ).hexdigest()
    return Item(str(raw_id), question, tuple(sources), limits, digest, line)


def parse_items(
    lines: Iterable[str], *, base: Path | None = None, source: str = "items"
) -> Iterator[Item]:
    """Items from JSON lines (blank lines are skipped). Raises :class:`ItemError` naming the
    first bad line, or the second line of a repeated id."""
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ItemError(f"{_where(number, source)}: not JSON ({exc.msg})") from None
        item = _item(data, number, base or Path.cwd(), source)
        if item.id in seen:
            raise ItemError(
                f"{_where(number, source)}: id {item.id!r} is already used on line "
                f"{seen[item.id]}; ids key the results, so each must be unique"
            )
        seen[item.id] = number
        yield item


def load_items(path: str | Path) -> list[Item]:
    """The items of a JSONL file; paths in items are relative to the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ItemError(f"no items file {p}: pass a JSONL file, one item per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ItemError(f"cannot read the items file {p}: {exc}") from None
    items = list(parse_items(text.splitlines(), base=p.resolve().parent, source=str(p)))
    if not items:
        raise ItemError(f"{p} holds no items: write one JSON object per line")
    return items
