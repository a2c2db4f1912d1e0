"""Sampling settings as data: per-role sampling and the provider-option pass-through.

A run has two roles: the **root** (the RLM's own turns) and **sub** (``llm_query`` sub-calls and
child RLMs). :class:`Sampling` is the sampling of one role; :class:`~recursa.config.RunConfig`
holds a shorthand for both roles (``temperature``, ``top_p``...) and one :class:`Sampling` per
role whose values win over the shorthand. :class:`OptionMap` is the frozen JSON object of
provider options merged into each request body (``{"top_k": 20}``, ``{"service_tier": "flex"}``).

Every value is checked here, once, so a bad one fails when the RLM is built, with a message
that names the setting, and never halfway through a paid run.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from recursa.errors import ConfigError

__all__ = [
    "REASONING_EFFORTS",
    "OptionMap",
    "Sampling",
    "check_max_output_tokens",
    "check_reasoning_effort",
    "check_temperature",
    "check_top_p",
    "option_map",
]

#: What ``reasoning_effort`` may be, least effort first. ``none`` turns reasoning off where the
#: model allows it (OpenAI's newest models, Gemini); other models reject it.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")

# Request fields recursa writes itself: a provider option may not replace the conversation, the
# model, or how the answer is delivered (recursa reads one complete, non-streamed reply).
_PROTOCOL_KEYS = frozenset(
    {"model", "messages", "system", "prompt", "stream", "stream_options", "n"}
)
# Request fields that have a setting of their own: set through it, so the call cache's key,
# the budget's output reservation and every backend see the same value.
_SETTING_KEYS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "max_output_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning_effort",
}


def _number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be {what} (got {value!r})")
    return float(value)


def check_temperature(value: Any, name: str = "temperature") -> float | None:
    """``value`` as a temperature (0 to 2, the widest range an API takes), or ``None``."""
    if value is None:
        return None
    t = _number(value, name, "a number from 0 to 2")
    if not 0 <= t <= 2:
        raise ConfigError(f"{name} must be a number from 0 to 2 (got {value!r})")
    return t


def check_top_p(value: Any, name: str = "top_p") -> float | None:
    """``value`` as a nucleus-sampling mass (0 to 1), or ``None``."""
    if value is None:
        return None
    p = _number(value, name, "a number from 0 to 1")
    if not 0 <= p <= 1:
        raise ConfigError(f"{name} must be a number from 0 to 1 (got {value!r})")
    return p


def check_max_output_tokens(value: Any, name: str = "max_output_tokens") -> int | None:
    """``value`` as an output-token cap (a whole number, at least 1), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number of tokens, at least 1 (got {value!r})")
    return value


def check_reasoning_effort(value: Any, name: str = "reasoning_effort") -> str | None:
    """``value`` spelled canonically (one of :data:`REASONING_EFFORTS`), or ``None``."""
    if value is None:
        return None
    effort = value.strip().lower() if isinstance(value, str) else value
    if effort not in REASONING_EFFORTS:
        raise ConfigError(f"{name} must be one of {', '.join(REASONING_EFFORTS)} (got {value!r})")
    return str(effort)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"a provider option needs a non-empty name (got {key!r})")
    if key in _PROTOCOL_KEYS:
        raise ConfigError(
            f"provider option {key!r} is set by recursa itself (the model, the conversation and "
            "how the reply is delivered); remove it"
        )
    if key in _SETTING_KEYS:
        raise ConfigError(
            f"provider option {key!r} has a setting of its own: use {_SETTING_KEYS[key]} "
            f"(--{_SETTING_KEYS[key].replace('_', '-')} on the command line)"
        )
    return key


class OptionMap(Mapping[str, Any]):
    """A frozen, hashable JSON object: provider options as data.

    Values are kept as canonical JSON text, so the map is hashable, compares by content, cannot
    be changed through a value it handed out (each read decodes a fresh copy), and journals and
    cache keys see exactly what is sent. Keys recursa sets itself (``messages``, ``model``,
    ``stream``...) and keys with a setting of their own (``temperature``, ``max_tokens``...)
    are refused with a :class:`~recursa.errors.ConfigError`.
    """

    __slots__ = ("_items", "_text")

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> None:
        if isinstance(data, Mapping):
            pairs = list(data.items())
        else:
            try:
                pairs = [(k, v) for k, v in (data or ())]
            except (TypeError, ValueError):
                raise ConfigError(
                    f'provider options must be a JSON object, e.g. {{"top_k": 20}} (got {data!r})'
                ) from None
        text: dict[str, str] = {}
        for key, value in pairs:
            name = _check_key(key)
            try:
                text[name] = json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"provider option {name!r}: {value!r} is not JSON data (use strings, "
                    "numbers, true/false, null, lists and objects)"
                ) from None
        self._text = text
        self._items = tuple(sorted(text.items()))

    def __getitem__(self, key: str) -> Any:
        return json.loads(self._text[key])

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OptionMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        """A plain, fresh ``dict`` (JSON-ready)."""
        return {k: json.loads(v) for k, v in self._items}

    def merged(self, over: Mapping[str, Any]) -> OptionMap:
        """These options with ``over``'s added, key by key (``over`` wins)."""
        return OptionMap({**self.to_dict(), **dict(over)})

    def __repr__(self) -> str:
        return f"OptionMap({self.to_dict()!r})"


def option_map(value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> OptionMap:
    """``value`` as an :class:`OptionMap` (itself when it is one already)."""
    return value if isinstance(value, OptionMap) else OptionMap(value)


EMPTY_OPTIONS = OptionMap()


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampling of one role (root turns, or sub-calls and child RLMs). ``None``: not set
    here (the shorthand for both roles, else the backend's default, applies).

    Attributes:
        temperature: 0 to 2.
        top_p: nucleus sampling, 0 to 1.
        max_output_tokens: the output cap of one call.
        reasoning_effort: one of :data:`REASONING_EFFORTS`; see each backend for what it does.
        provider_options: JSON merged into the provider's request body (an :class:`OptionMap`;
            a ``dict`` is converted).
    """

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str | None = None
    provider_options: Mapping[str, Any] = EMPTY_OPTIONS

    def __post_init__(self) -> None:
        checked = {
            "temperature": check_temperature(self.temperature),
            "top_p": check_top_p(self.top_p),
            "max_output_tokens": check_max_output_tokens(self.max_output_tokens),
            "reasoning_effort": check_reasoning_effort(self.reasoning_effort),
            "provider_options": option_map(self.provider_options),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, value: Any, *, where: str = "sampling") -> Sampling:
        """``value`` (a :class:`Sampling`, a ``dict`` of its fields, an
        :class:`~recursa.types.LMSettings` or ``None``) as a :class:`Sampling`; a bad value is a
        :class:`ConfigError` that starts with ``where``."""
        if value is None:
            return cls()
        if isinstance(value, Sampling):
            return value
        names = cls.names()
        if isinstance(value, Mapping):
            for key in value:
                if key not in names:
                    close = difflib.get_close_matches(str(key), names, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ConfigError(
                        f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(names)}"
                    )
            data = dict(value)
        elif all(hasattr(value, n) for n in names):  # an LMSettings, or anything shaped so
            data = {n: getattr(value, n) for n in names}
        else:
            raise ConfigError(
                f"{where} must be a dict of {', '.join(names)} (got {type(value).__name__})"
            )
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def over(self, base: Sampling) -> Sampling:
        """This role's values where set, ``base``'s elsewhere; provider options are merged key
        by key, this role's winning."""
        return Sampling(
            temperature=_first(self.temperature, base.temperature),
            top_p=_first(self.top_p, base.top_p),
            max_output_tokens=_first(self.max_output_tokens, base.max_output_tokens),
            reasoning_effort=_first(self.reasoning_effort, base.reasoning_effort),
            provider_options=option_map(base.provider_options).merged(self.provider_options),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, JSON-ready (what a journal stores)."""
        data: dict[str, Any] = {}
        for name in self.names():
            value = getattr(self, name)
            if name == "provider_options":
                if value:
                    data[name] = option_map(value).to_dict()
            elif value is not None:
                data[name] = value
        return data


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b
