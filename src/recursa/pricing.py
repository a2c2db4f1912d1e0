"""Model prices in USD per million tokens, and the cost of a call.

One table serves the whole tree of calls. Users extend or override it from a JSON or TOML file
(``--prices FILE`` or ``RECURSA_PRICES``) whose top level maps a model name to its prices::

    {"my-finetune": {"input": 0.30, "output": 1.20, "cached_input": 0.03}}

Model names are matched without their provider prefix, exactly first and then by the longest
known prefix, so dated snapshots such as ``gpt-5-mini-2025-08-07`` find ``gpt-5-mini``.
Local and scripted models cost nothing. A model with no known price yields ``None``: callers
count such calls as unpriced rather than pretending they were free.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from recursa.errors import ConfigError
from recursa.types import Usage

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable"]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. ``cached_input`` defaults to ``input`` when unknown."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.input_tokens)
        fresh = usage.input_tokens - cached
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (fresh * self.input + cached * cached_rate + usage.output_tokens * self.output) / 1e6


# Public list prices as published by the providers (USD / 1M tokens). Extend with a file.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "gpt-5": ModelPrice(1.25, 10.00, 0.125),
        "gpt-5-mini": ModelPrice(0.25, 2.00, 0.025),
        "gpt-5-nano": ModelPrice(0.05, 0.40, 0.005),
        "gpt-4.1": ModelPrice(2.00, 8.00, 0.50),
        "gpt-4.1-mini": ModelPrice(0.40, 1.60, 0.10),
        "gpt-4.1-nano": ModelPrice(0.10, 0.40, 0.025),
        "gpt-4o": ModelPrice(2.50, 10.00, 1.25),
        "gpt-4o-mini": ModelPrice(0.15, 0.60, 0.075),
        "o3": ModelPrice(2.00, 8.00, 0.50),
        "o4-mini": ModelPrice(1.10, 4.40, 0.275),
        "claude-opus-4-1": ModelPrice(15.00, 75.00, 1.50),
        "claude-opus-4": ModelPrice(15.00, 75.00, 1.50),
        "claude-sonnet-4-5": ModelPrice(3.00, 15.00, 0.30),
        "claude-sonnet-4": ModelPrice(3.00, 15.00, 0.30),
        "claude-haiku-4-5": ModelPrice(1.00, 5.00, 0.10),
        "claude-3-5-haiku": ModelPrice(0.80, 4.00, 0.08),
    }
)

# Providers whose calls are free by nature (they run on the user's machine or are fakes).
_FREE_PROVIDERS = frozenset({"local", "scripted", "ollama"})


def _split(model: str) -> tuple[str, str]:
    provider, sep, name = model.partition(":")
    return (provider, name) if sep else ("", model)


class PriceTable:
    """An immutable price table; :meth:`with_overrides` and :meth:`from_file` make new ones."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES if prices is None else prices)

    def __contains__(self, model: str) -> bool:
        return self.lookup(model) is not None

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        merged = dict(self._prices)
        merged.update(overrides)
        return PriceTable(merged)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price for ``model`` (with or without its ``provider:`` prefix), or ``None``."""
        provider, name = _split(model)
        # An exact entry wins, so a price file can price a local model (GPU hours, chargeback).
        for key in (model, name):
            if key in self._prices:
                return self._prices[key]
        if provider in _FREE_PROVIDERS or model in _FREE_PROVIDERS:
            return ModelPrice(0.0, 0.0, 0.0)
        best = max((k for k in self._prices if name.startswith(k)), key=len, default=None)
        return self._prices[best] if best else None

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self.lookup(model)
        return None if price is None else price.cost(usage)

    def price(self, model: str, usage: Usage) -> Usage:
        """``usage`` with its cost attached (or marked unpriced)."""
        return usage.with_cost(self.cost(model, usage))

    @classmethod
    def from_file(cls, path: str | Path, base: PriceTable | None = None) -> PriceTable:
        """The default table (or ``base``) extended by a JSON or TOML price file."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read price file {p}: {exc.strerror}") from exc
        try:
            data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"price file {p} is not valid JSON/TOML: {exc}") from exc
        return (base or cls()).with_overrides(_parse_prices(data, p))


def _parse_prices(data: object, source: Path) -> dict[str, ModelPrice]:
    if not isinstance(data, dict):
        raise ConfigError(f"price file {source}: expected a table of model -> prices")
    out: dict[str, ModelPrice] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or "input" not in entry or "output" not in entry:
            raise ConfigError(
                f"price file {source}: '{model}' needs 'input' and 'output' (USD per 1M tokens)"
            )
        try:
            cached = entry.get("cached_input")
            out[str(model)] = ModelPrice(
                float(entry["input"]),
                float(entry["output"]),
                None if cached is None else float(cached),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"price file {source}: '{model}' has a non-numeric price") from exc
    return out
