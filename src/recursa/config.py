"""One frozen run configuration: everything that decides how a run behaves, as data.

:class:`RunConfig` is what :class:`~recursa.rlm.RLM` is built from (its keyword arguments are a
shorthand for it), what every engine of a run reads, and what a run's journal stores
(:meth:`RunConfig.to_dict`) so that ``RLM.resume(run_id)`` can rebuild the run in another
process (:meth:`RunConfig.from_dict`). Secrets (API keys) are never part of it. Objects that are
not data (an LM instance, a sandbox factory, a custom prompt profile) are passed to the RLM
beside the configuration and are recorded here by name only.

The library does not read the environment here: defaults for models come from the registry
(:func:`recursa.lm.registry.default_model_spec`) and the CLI, the edges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recursa.limits import Limits
from recursa.strategy import check_strategy
from recursa.types import LMSettings

__all__ = ["RunConfig"]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How a run behaves. ``None`` fields mean "the default" (see :class:`~recursa.rlm.RLM`).

    Attributes:
        model, sub_model: ``provider:model`` names (``None``: the default model; the root's).
        models: extra models ``llm_query(prompt, model=...)`` may pick, by name.
        base_url: the root provider's API root.
        sandbox: the isolation tier's name (``None`` when a factory object was passed).
        prompt_profile: the prompt profile's name (``None``: chosen per model).
        temperature, max_output_tokens: sampling for root turns and sub-calls.
        sub_calls: allow ``llm_query``/``rlm_query``.
        limits: the run's :class:`~recursa.limits.Limits`.
        call_timeout_s, max_retries: per-call HTTP timeout and retry count.
        journal: record the run so it can be resumed.
        sub_prompt_chars: what the system prompt says one sub-call can read, when the sub
            model declares nothing (``Capabilities.chunk_chars``).
        strategy: how a run answers: ``"rlm"`` (the REPL loop), ``"direct"`` (one plain call
            with the whole context in the prompt) or ``"auto"`` (direct when the context fits
            the root model's window with room to spare); see :mod:`recursa.strategy`.
    """

    model: str | None = None
    sub_model: str | None = None
    models: tuple[str, ...] = ()
    base_url: str | None = None
    sandbox: str | None = "process"
    prompt_profile: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    sub_calls: bool = True
    limits: Limits = field(default_factory=Limits)
    call_timeout_s: float | None = None
    max_retries: int | None = None
    journal: bool = True
    sub_prompt_chars: int = 100_000
    strategy: str = "rlm"

    def __post_init__(self) -> None:
        # Checked (and spelled canonically) here, so a bad name fails before any model is built.
        object.__setattr__(self, "strategy", check_strategy(self.strategy))

    @property
    def root_settings(self) -> LMSettings:
        return LMSettings(temperature=self.temperature, max_output_tokens=self.max_output_tokens)

    @property
    def sub_settings(self) -> LMSettings:
        return self.root_settings

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data (what a run's journal stores)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["limits"] = dataclasses.asdict(self.limits)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The configuration ``to_dict`` wrote (unknown keys are ignored, missing ones take
        their defaults, so journals of older versions still resume)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["limits"] = Limits(**dict(data.get("limits") or {}))
        values["models"] = tuple(data.get("models") or ())
        return cls(**values)
