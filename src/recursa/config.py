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

from recursa.errors import ConfigError
from recursa.limits import Limits
from recursa.prompts import check_system_prompt
from recursa.sampling import EMPTY_OPTIONS, Sampling, option_map
from recursa.strategy import check_strategy
from recursa.types import LMSettings

__all__ = ["RunConfig"]


def _check_compaction(threshold: object, window: object) -> None:
    """A :class:`ConfigError` for a compaction threshold or window no run can use."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        threshold = None
    if threshold is None or not 0 < threshold <= 1:
        raise ConfigError(
            "compaction_threshold must be a fraction of the root model's window, above 0 and "
            "at most 1 (0.85 compacts at 85%)"
        )
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise ConfigError("root_window must be a number of tokens (an integer), or None")
    if window is not None and window < 256:
        raise ConfigError(f"root_window must be at least 256 tokens, not {window}")


def _check_prompts(system_prompt: object, prologue: object) -> None:
    """A :class:`ConfigError` for a system prompt or prologue that is not usable text."""
    for name, value in (("system_prompt", system_prompt), ("prologue", prologue)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be text (a str), not {type(value).__name__}")
    if isinstance(system_prompt, str):
        check_system_prompt(system_prompt)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How a run behaves. ``None`` fields mean "the default" (see :class:`~recursa.rlm.RLM`).

    Attributes:
        model, sub_model: ``provider:model`` names (``None``: the default model; the root's).
        models: extra models ``llm_query(prompt, model=...)`` may pick, by name.
        base_url: the root provider's API root.
        sandbox: the isolation tier's name (``None`` when a factory object was passed).
        prompt_profile: the prompt profile's name (``None``: chosen per model).
        system_prompt: the text of a system prompt of the user's own, replacing the profile's
            system text at every depth (the profile's turn messages and rules stay); it may use
            the placeholders of :data:`recursa.prompts.SYSTEM_PLACEHOLDERS`. ``None``: the
            profile's. Journaled as text, so a resumed run sends the same prompt.
        prologue: text put before the question in the top-level RLM's first user turn
            (standing instructions, tips for the task). ``None``: none.
        temperature, max_output_tokens, top_p, reasoning_effort, provider_options: sampling
            for both roles, root turns and sub-calls (see :mod:`recursa.sampling`).
        root_sampling, sub_sampling: sampling of one role (:class:`~recursa.sampling.Sampling`;
            "sub" is ``llm_query`` sub-calls and child RLMs). A value set here wins over the
            shorthand for both roles; provider options are merged key by key.
        sub_calls: allow ``llm_query``/``rlm_query``.
        limits: the run's :class:`~recursa.limits.Limits`.
        call_timeout_s, max_retries: per-call HTTP timeout and retry count.
        journal: record the run so it can be resumed.
        sub_prompt_chars: what the system prompt says one sub-call can read, when the sub
            model declares nothing (``Capabilities.chunk_chars``).
        strategy: how a run answers: ``"rlm"`` (the REPL loop), ``"direct"`` (one plain call
            with the whole context in the prompt) or ``"auto"`` (direct when the context fits
            the root model's window with room to spare); see :mod:`recursa.strategy`.
        compaction: compact a root conversation that nears its model's window (older turns
            become a summary; the whole transcript stays in the REPL, see
            :mod:`recursa.compaction`). ``None``: on when the window is known; ``True``: on,
            with a warning when no window is known; ``False``: off.
        compaction_threshold: the fraction of the window at which it compacts.
        root_window: the root model's context window in tokens, for models that declare none
            (API models) or to compact earlier than the declared one.
        tools, sub_tools: the names of the caller's tools (``RLM(tools=...)``) of the root and
            of child RLMs (``None``: the root's). The functions are objects, passed again to
            resume a run (:meth:`RLM.from_config` says which are missing).
    """

    model: str | None = None
    sub_model: str | None = None
    models: tuple[str, ...] = ()
    base_url: str | None = None
    sandbox: str | None = "process"
    prompt_profile: str | None = None
    system_prompt: str | None = None
    prologue: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None
    provider_options: Mapping[str, Any] = EMPTY_OPTIONS
    root_sampling: Sampling = field(default_factory=Sampling)
    sub_sampling: Sampling = field(default_factory=Sampling)
    sub_calls: bool = True
    limits: Limits = field(default_factory=Limits)
    call_timeout_s: float | None = None
    max_retries: int | None = None
    journal: bool = True
    sub_prompt_chars: int = 100_000
    strategy: str = "rlm"
    compaction: bool | None = None
    compaction_threshold: float = 0.85
    root_window: int | None = None
    tools: tuple[str, ...] = ()
    sub_tools: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Checked (and spelled canonically) here, so a bad name fails before any model is built.
        object.__setattr__(self, "strategy", check_strategy(self.strategy))
        _check_prompts(self.system_prompt, self.prologue)
        if self.prologue is not None and not self.prologue.strip():
            object.__setattr__(self, "prologue", None)  # an empty prologue says nothing
        _check_compaction(self.compaction_threshold, self.root_window)
        # Sampling values are checked here too, so a bad one fails before any model is built.
        shared = self._shared()
        object.__setattr__(self, "reasoning_effort", shared.reasoning_effort)
        object.__setattr__(self, "provider_options", shared.provider_options)
        for role in ("root_sampling", "sub_sampling"):
            object.__setattr__(self, role, Sampling.of(getattr(self, role), where=role))

    def _shared(self) -> Sampling:
        """The shorthand for both roles, as one :class:`Sampling`."""
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_output_tokens=self.max_output_tokens,
            reasoning_effort=self.reasoning_effort,
            provider_options=self.provider_options,
        )

    def _settings(self, role: Sampling) -> LMSettings:
        s = role.over(self._shared())
        return LMSettings(
            temperature=s.temperature,
            max_output_tokens=s.max_output_tokens,
            top_p=s.top_p,
            reasoning_effort=s.reasoning_effort,
            provider_options=s.provider_options,
        )

    @property
    def root_settings(self) -> LMSettings:
        """What every root turn of the top-level RLM sends."""
        return self._settings(self.root_sampling)

    @property
    def sub_settings(self) -> LMSettings:
        """What sub-calls and child RLMs' turns send."""
        return self._settings(self.sub_sampling)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data (what a run's journal stores)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["limits"] = dataclasses.asdict(self.limits)
        data["models"] = list(self.models)
        data["tools"] = list(self.tools)
        data["sub_tools"] = None if self.sub_tools is None else list(self.sub_tools)
        data["provider_options"] = option_map(self.provider_options).to_dict()
        data["root_sampling"] = self.root_sampling.to_dict()
        data["sub_sampling"] = self.sub_sampling.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The configuration ``to_dict`` wrote (unknown keys are ignored, missing ones take
        their defaults, so journals of older versions still resume)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["limits"] = Limits(**dict(data.get("limits") or {}))
        values["models"] = tuple(data.get("models") or ())
        values["tools"] = tuple(data.get("tools") or ())
        sub_tools = data.get("sub_tools")
        values["sub_tools"] = None if sub_tools is None else tuple(sub_tools)
        for role in ("root_sampling", "sub_sampling"):
            values[role] = Sampling.of(data.get(role), where=role)
        values["provider_options"] = data.get("provider_options") or {}
        return cls(**values)
