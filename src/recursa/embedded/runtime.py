"""Running a GGUF model in this process with llama.cpp (``llama-cpp-python``), imported lazily.

One :class:`LoadedModel` per (file, settings) per process, shared by every run. It holds two
llama contexts over the same weights (loaded and repacked once):

- ``conversation``: the root's growing, append-only chat. Its KV cache stays warm, so each
  iteration only evaluates the tokens added since the last one.
- ``scratch``: one-message prompts (sub-calls), created on first use, so sub-calls never evict
  the root's cache.

All work on a model runs on its one worker thread: calls are serialised (two cores cannot run two
generations faster than one) and the caller's event loop never blocks. A call can be aborted,
even in the middle of evaluating a long prompt.

llama_cpp is imported with ``OMP_WAIT_POLICY=PASSIVE`` set for that import only (OpenMP threads
then sleep rather than spin while they wait; see :func:`import_llama_cpp`): the process
environment is left unchanged, and a user's own ``OMP_WAIT_POLICY`` wins.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recursa._imports import import_with_env
from recursa.embedded.llama_context import CODE_PREFILL, LlamaContext, SharedWeights, StopAfterCode
from recursa.errors import LMRequestError, MissingDependencyError

if TYPE_CHECKING:
    from recursa.embedded.probe import RuntimeChoice

__all__ = [
    "CallResult",
    "LoadSettings",
    "LoadedModel",
    "default_threads",
    "import_llama_cpp",
    "load_llama",
    "loaded_model",
    "unload_all",
]

Slot = Literal["conversation", "scratch"]

log = logging.getLogger("recursa.embedded")


def default_threads() -> tuple[int, int]:
    """``(generation threads, prompt threads)`` for this process's CPUs.

    Prompt evaluation is compute-bound: it uses every CPU (at most 8). Generation is bound by
    memory bandwidth and synchronisation: measured on 2 cores, 1 thread generates as fast as 2
    (15 tokens/s) and keeps that speed when another process competes for the CPU, where 2
    threads drop to 13 (passive waiting) or 4-7 (spinning). So it gets half the CPUs.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    prompt = max(1, min(n, 8))
    return max(1, prompt // 2), prompt


def import_llama_cpp() -> Any:
    """``llama_cpp``, or a :class:`MissingDependencyError` naming the extra to install."""
    # OpenMP threads spin while they wait by default. On a small machine that is shared (the
    # sandbox, other programs) spinning threads fight for the CPU: measured on 2 cores with one
    # competing process, generation fell from 26 to 4-7 tokens/s. Passive waiting costs little
    # (prompt speed is the same) and never collapses. libgomp has no call to set the policy: it
    # reads OMP_WAIT_POLICY once, when it is loaded with llama.cpp's libraries during this
    # import. So the variable is set for the import alone (os.environ is left as it was), and
    # a user's own OMP_WAIT_POLICY wins.
    try:
        llama_cpp = import_with_env("llama_cpp", {"OMP_WAIT_POLICY": "PASSIVE"})
    except ImportError as exc:
        raise MissingDependencyError("the embedded local model", "local", "llama_cpp") from exc
    return llama_cpp


def load_llama(
    lib: Any,
    path: str,
    *,
    n_ctx: int,
    n_threads: int,
    n_threads_batch: int,
    n_batch: int = 512,
    extra_bufts: bool = True,
    weights_from: Any = None,
) -> Any:
    """A ``llama_cpp.Llama`` over ``path``.

    ``extra_bufts=False`` turns off llama.cpp's extra buffer types (AMX and repacked weights):
    plain kernels, for CPUs where those crash. ``weights_from`` (another Llama) lends its loaded
    weights instead of loading a second copy (~0.6 GB of repacked tensors, and seconds).
    """
    # The module Llama() builds its model from (llama_cpp.llama imports it as ``internals``);
    # Any, because its LlamaModel class is swapped for a factory function below.
    internals: Any = importlib.import_module("llama_cpp._internals")
    original = internals.LlamaModel

    def model(**kw: Any) -> Any:
        if weights_from is not None:
            return SharedWeights(weights_from._model)
        kw["params"].use_extra_bufts = extra_bufts
        return original(**kw)

    # Llama() builds its model through internals.LlamaModel and exposes neither switch: swap the
    # factory while this Llama is built (only on the model's one worker thread, or the probe).
    internals.LlamaModel = model
    try:
        return lib.Llama(
            path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_batch=n_batch,
            verbose=False,
        )
    finally:
        internals.LlamaModel = original


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """What makes a loaded model distinct (two LocalLMs with equal settings share one)."""

    path: Path
    n_ctx: int = 16_384  # the root conversation's window
    scratch_n_ctx: int = 8_192  # one sub-call prompt plus its answer
    n_threads: int = 0  # generation threads; 0: default_threads()
    n_threads_batch: int = 0  # prompt threads; 0: default_threads()
    n_batch: int = 512
    prefix_cache_dir: Path | None = None  # where system-prompt KV states persist (None: off)
    # llama.cpp's "extra buffer types" (weights repacked for AMX or wide SIMD kernels): True or
    # False, or None to use what a child-process probe found safe on this CPU (probe_records).
    extra_bufts: bool | None = None
    probe_records: Path | None = None  # where probe outcomes are kept (None: this process only)


@dataclass(frozen=True, slots=True)
class CallResult:
    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: str
    dropped_messages: int = 0  # old exchanges left out to fit the window


MIN_ANSWER_ROOM = 512  # tokens kept free for the reply when a prompt is fitted to the window
# A stored system prompt that differs only in its last few tokens (the context's size) is used.
PREFIX_SLACK = 32


class LoadedModel:
    """A GGUF file loaded once, with its conversation and scratch contexts and worker thread."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        gen, prompt = default_threads()
        self.threads = settings.n_threads or gen
        self.threads_batch = settings.n_threads_batch or prompt
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="recursa-llama")
        self._lib: Any = None  # llama_cpp, imported on the worker when the first context loads
        self._contexts: dict[str, LlamaContext] = {}
        self.prefix_cache: Any = None  # a PrefixCache once the conversation context exists
        self.choice: RuntimeChoice | None = None  # how the weights load safely here
        self.load_s = 0.0

    # ---- loading (on the worker thread) ---------------------------------------------------------
    def _new_llama(self, n_ctx: int, shared_from: LlamaContext | None) -> Any:
        return load_llama(
            self._lib,
            str(self.settings.path),
            n_ctx=n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads_batch,
            n_batch=self.settings.n_batch,
            extra_bufts=self._runtime_choice().extra_bufts,
            weights_from=None if shared_from is None else shared_from.llama,
        )

    def _runtime_choice(self) -> RuntimeChoice:
        """How to load the weights without crashing here: asked of a child process once per
        build, CPU and weights file (:mod:`recursa.embedded.probe`), or set by the caller."""
        if self.choice is None:
            from recursa.embedded.probe import RuntimeChoice, safe_settings

            if self.settings.extra_bufts is not None:
                self.choice = RuntimeChoice(self.settings.extra_bufts, "override")
            else:
                self.choice = safe_settings(
                    self.settings.path, self.settings.probe_records, threads=self.threads_batch
                )
        return self.choice

    def context(self, slot: Slot) -> LlamaContext:
        """The context for ``slot``, created on first use (call on the worker thread)."""
        ctx = self._contexts.get(slot)
        if ctx is not None:
            return ctx
        started = time.perf_counter()
        if self._lib is None:
            self._lib = import_llama_cpp()
        if slot == "conversation":
            llama = self._new_llama(self.settings.n_ctx, None)
        else:
            owner = self.context("conversation")
            llama = self._new_llama(self.settings.scratch_n_ctx, owner)
        ctx = self._contexts[slot] = LlamaContext(llama, self._lib)
        # Llama(verbose=False) still lets llama.cpp print errors to stderr, which is the CLI's
        # progress display; an aborted call (Ctrl-C, timeout) would print one. Real failures
        # raise exceptions with the same text, so nothing is lost. (Llama() resets the level.)
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        if slot == "conversation" and self.settings.prefix_cache_dir is not None:
            from recursa.embedded.prefix_cache import PrefixCache

            self.prefix_cache = PrefixCache(
                self.settings.prefix_cache_dir, self.settings.path, self.settings.n_ctx, self._lib
            )
        self.load_s += time.perf_counter() - started
        return ctx

    # ---- one call (on the worker thread) --------------------------------------------------------
    def run(
        self,
        slot: Slot,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int | None,
        code_turn: bool,
        abort: threading.Event,
        sampling: Mapping[str, Any] | None = None,
    ) -> CallResult:
        """Generate a reply; ``sampling`` holds further llama.cpp sampling arguments (top_p,
        top_k, min_p..., checked by the caller)."""
        ctx = self.context(slot)
        ctx.abort = abort
        prefill = CODE_PREFILL if code_turn else ""
        tokens, dropped = self._fit(ctx, slot, messages, max_tokens, prefill)
        evaluated_now = self._warm_from_disk(ctx, slot, messages, tokens)
        cached = ctx.cached_prefix(tokens) - evaluated_now if ctx.llama.n_tokens else 0
        criteria = None
        if code_turn:
            stopper = StopAfterCode(ctx.llama, len(tokens), prefill)
            criteria = self._lib.StoppingCriteriaList([stopper])
        try:
            out = ctx.llama.create_completion(
                tokens,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stop,
                seed=seed,
                stopping_criteria=criteria,
                **dict(sampling or {}),
            )
        except RuntimeError:
            if abort.is_set():  # the caller gave up; the cache is still consistent up to here
                return CallResult("", len(tokens), cached, 0, "cancelled")
            raise
        choice, usage = out["choices"][0], out["usage"]
        return CallResult(
            text=prefill + choice["text"],
            prompt_tokens=usage["prompt_tokens"],
            cached_tokens=cached,
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice.get("finish_reason") or "stop",
            dropped_messages=dropped,
        )

    def choose(
        self, slot: Slot, messages: list[dict[str, str]], choices: list[str], abort: threading.Event
    ) -> CallResult:
        """The most likely of ``choices`` as the reply to ``messages``, by the model's own
        probabilities: nothing is generated, so the answer is always one of them.

        When the choices start with different tokens one forward pass over the prompt decides
        (its shared prefix with the previous prompt is reused from the KV cache, like any call
        here); otherwise each choice's tokens are scored in turn and the sums compared."""
        import numpy as np

        if not choices:
            raise LMRequestError("no choices to choose from", model=self.settings.path.name)
        ctx = self.context(slot)
        ctx.abort = abort
        llama = ctx.llama
        tokens, _ = self._fit(ctx, slot, messages, 1)
        cached = ctx.cached_prefix(tokens) if llama.n_tokens else 0
        n_vocab = llama.n_vocab()

        def logprobs() -> Any:
            raw = self._lib.llama_get_logits_ith(llama.ctx, -1)
            logits = np.ctypeslib.as_array(raw, shape=(n_vocab,)).astype(np.float64)
            return logits - np.logaddexp.reduce(logits)

        options = [llama.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in choices]
        try:
            llama.n_tokens = cached
            llama.eval(tokens[cached:])
            first = logprobs()
            heads = [o[0] if o else -1 for o in options]
            if len(set(heads)) == len(heads) and -1 not in heads:
                scores = [float(first[h]) for h in heads]
            else:
                scores = []
                for option in options:
                    score = float(first[option[0]]) if option else float("-inf")
                    for j in range(1, len(option)):
                        llama.eval(option[j - 1 : j])
                        score += float(logprobs()[option[j]])
                    llama.n_tokens = len(tokens)  # back to the prompt for the next choice
                    llama._requires_eval = True  # the logits held are a choice's, not the prompt's
                    scores.append(score)
        except RuntimeError:
            if abort.is_set():
                llama.n_tokens = min(llama.n_tokens, cached)
                return CallResult("", len(tokens), cached, 0, "cancelled")
            raise
        best = max(range(len(choices)), key=scores.__getitem__)
        return CallResult(choices[best], len(tokens), cached, 0, "choice")

    def _warm_from_disk(
        self, ctx: LlamaContext, slot: Slot, messages: list[dict[str, str]], tokens: list[int]
    ) -> int:
        """On a fresh conversation context, load the system prompt's stored KV state, or
        evaluate it and store it for the next process. Returns the tokens evaluated here."""
        if (
            self.prefix_cache is None
            or slot != "conversation"
            or ctx.llama.n_tokens
            or messages[0]["role"] != "system"
        ):
            return 0
        from recursa.embedded.prefix_cache import MIN_PREFIX_TOKENS, common_prefix

        prefix = tokens[: common_prefix(ctx.tokens(messages[:1]), tokens)]
        if len(prefix) < MIN_PREFIX_TOKENS:
            return 0
        found = self.prefix_cache.best(tokens)
        fits = found is not None and found[1] >= len(prefix) - PREFIX_SLACK
        if fits and self.prefix_cache.load(ctx.llama, found[0]):
            return 0
        ctx.llama.reset()
        ctx.llama.eval(prefix)
        with contextlib.suppress(OSError):  # a read-only cache only costs the next process time
            self.prefix_cache.save(ctx.llama, prefix)
        return len(prefix)

    def _fit(
        self,
        ctx: LlamaContext,
        slot: Slot,
        messages: list[dict[str, str]],
        max_tokens: int,
        prefill: str = "",
    ) -> tuple[list[int], int]:
        """The prompt's tokens, leaving room for an answer. A conversation too long for the
        window loses its oldest exchanges (the system prompt and the question stay)."""
        n_ctx = ctx.llama.n_ctx()
        room = min(max_tokens, MIN_ANSWER_ROOM)
        tokens = ctx.tokens(messages, prefill)
        dropped = 0
        while len(tokens) + room > n_ctx and slot == "conversation" and len(messages) >= 5:
            # Keep [system, question, ..., latest]; drop the oldest reply and what it was shown.
            messages = messages[:2] + messages[4:]
            dropped += 2
            tokens = ctx.tokens(messages, prefill)
        if dropped:
            log.info("left out the %d oldest messages to fit the %d-token window", dropped, n_ctx)
        if len(tokens) + room > n_ctx:
            raise LMRequestError(
                f"the prompt has {len(tokens):,} tokens but the local model's {slot} window "
                f"holds {n_ctx:,} (with room for an answer): send less text, about "
                f"{(n_ctx - room) * 3:,} characters at most",
                model=self.settings.path.name,
            )
        return tokens, dropped

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        # The scratch context borrows the conversation's weights: free it first.
        for slot in ("scratch", "conversation"):
            ctx = self._contexts.pop(slot, None)
            if ctx is not None:
                with contextlib.suppress(Exception):
                    ctx.close()


_LOADED: dict[LoadSettings, LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


def loaded_model(settings: LoadSettings) -> LoadedModel:
    """The process-wide model for ``settings`` (its contexts load lazily on its worker)."""
    with _LOADED_LOCK:
        model = _LOADED.get(settings)
        if model is None:
            model = _LOADED[settings] = LoadedModel(settings)
        return model


@atexit.register
def unload_all() -> None:
    """Free every loaded model (also run at exit, so contexts close in a safe order)."""
    with _LOADED_LOCK:
        models = list(_LOADED.values())
        _LOADED.clear()
    for model in models:
        model.close()
