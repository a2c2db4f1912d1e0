"""The baselines: ``direct``, ``rag`` and ``summarize`` (see :mod:`recursa.bench.methods`).

Each runs inside a :class:`_Run`: a budget, an LM gate (the call cache included) and a trace
whose root ``run`` span ends with the answer, usage and score, as an RLM's trace does. Prompts
put the context before the question, so one window's questions share a prompt prefix that a
server's (or the local model's) prompt cache can reuse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from recursa.bench.methods import MethodEnv, Outcome, trace_path
from recursa.bench.tasks import Task, context_sha256, context_text
from recursa.errors import LMRequestError, MissingDependencyError
from recursa.gate import LMGate
from recursa.limits import CHARS_PER_TOKEN, Budget, BudgetExhausted, approx_tokens
from recursa.lm.wrappers import compose
from recursa.strategy import fit_middle  # lives with the direct strategy; re-exported here
from recursa.trace.jsonl import JSONLWriter
from recursa.trace.spans import Tracer
from recursa.types import LMSettings, Message, StopReason

__all__ = ["chunk_text", "direct", "fit_middle", "rag", "summarize"]

SYSTEM = (
    "You answer questions about the text the user gives you. Read it carefully, then answer "
    "exactly in the format the question asks for."
)
ANSWER_ROOM = 512  # tokens kept free for the answer when a prompt is fitted to the window
_SHRINK = 0.85  # when a fitted prompt is still refused, try again with this much of it
_MAX_FITS = 6


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Pieces of about ``chunk_chars``, cut at line ends where possible."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        while len(line) > chunk_chars:  # one huge line: cut it plainly
            if current:
                chunks.append("".join(current))
                current, size = [], 0
            chunks.append(line[:chunk_chars])
            line = line[chunk_chars:]
        if size + len(line) > chunk_chars and current:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


class _Run:
    """Budget + gate + trace for one baseline run on one task."""

    def __init__(self, name: str, task: Task, env: MethodEnv, score: Callable[[str], float]):
        self.name, self.env, self.task, self.score = name, env, task, score
        self.path = trace_path(env, task, name)
        self.writer = JSONLWriter(self.path, run_id=f"{task.task_id}.{name}")
        self.tracer = Tracer([self.writer], run_id=f"{task.task_id}.{name}")
        self.budget = Budget(env.limits, env.prices)
        limit = asyncio.Semaphore(env.limits.max_concurrency)
        self.gate = LMGate(
            self.budget,
            self.tracer,
            lambda lm: compose(lm, limit=limit, cache=env.cache, prices=env.prices),
        )
        self.settings = LMSettings(
            temperature=env.temperature, max_output_tokens=env.max_output_tokens
        )
        self.started = time.monotonic()
        self.span = self.tracer.start(
            "run",
            name,
            None,
            question=task.question[:4000],
            depth=0,
            model=env.plain_lm.name,
            sub_model=env.plain_lm.name,
            method=name,
            context={"kind": "text", "chars": task.context_chars, "parts": 1},
            warnings=[],
        )
        self.notes: dict[str, Any] = {}

    async def ask(self, prompt: str) -> str:
        messages = [Message.system(SYSTEM), Message.user(prompt)]
        completion = await self.gate.complete(
            self.env.plain_lm, messages, self.settings, role="sub", depth=0, parent=self.span
        )
        return completion.text

    def finish(self, answer: str, stop: StopReason, detail: str = "") -> Outcome:
        self.tracer.end(
            self.span,
            answer=answer,
            stop_reason=stop.value,
            detail=detail,
            iterations=0,
            usage=self.budget.usage.to_dict(),
            score=self.score(answer),
            **self.notes,
        )
        self.writer.close()
        return Outcome(
            answer=answer,
            stop_reason=stop.value,
            usage=self.budget.usage,
            wall_time_s=time.monotonic() - self.started,
            cache_hits=self.budget.ledger.cache_hits,
            saved_usd=self.budget.ledger.saved_usd,
            trace_path=self.path,
            notes=dict(self.notes, **({"detail": detail} if detail else {})),
        )

    async def guarded(self, body: Callable[[], Any]) -> Outcome:
        """Run ``body`` (returns the answer); a budget stop becomes a partial outcome."""
        try:
            answer = await body()
        except BudgetExhausted as stop:
            return self.finish("", stop.reason, stop.detail)
        except BaseException as exc:
            self.tracer.end(self.span, error=f"{type(exc).__name__}: {exc}")
            self.writer.close()
            raise
        return self.finish(answer, StopReason.FINAL)


def _room(env: MethodEnv, question: str) -> int:
    """Tokens of the window left for the context: minus the answer, question and template."""
    answer = min(env.max_output_tokens or ANSWER_ROOM, ANSWER_ROOM)
    return env.window_tokens - answer - approx_tokens(len(question) + len(SYSTEM)) - 64


async def _fitted(run: _Run, text: str, build: Callable[[str], str]) -> str:
    """Ask ``build(text)``, cutting ``text`` to the window; a refused prompt is cut further.

    The size that fitted is remembered per window, so the next question on the same window
    sends the same prefix (and hits the prompt cache) instead of searching again.
    """
    env, task = run.env, run.task
    key = f"{run.name}:{task.window}"
    limit = env.kept_chars.get(key) or max(1, _room(env, task.question)) * CHARS_PER_TOKEN
    for attempt in range(_MAX_FITS):
        body, cut = fit_middle(text, limit)
        try:
            answer = await run.ask(build(body))
        except LMRequestError:
            # Usually "too long": the estimate of 4 characters a token was optimistic here.
            if attempt == _MAX_FITS - 1:
                raise
            limit = int(min(limit, len(text)) * _SHRINK)
            continue
        env.kept_chars[key] = limit
        run.notes.update(
            context_tokens=approx_tokens(len(text)),
            kept_tokens=approx_tokens(min(limit, len(text))),
            window_tokens=env.window_tokens,
            window_source=env.window_source,
            cut=cut,
        )
        return answer
    raise AssertionError("unreachable")


async def direct(task: Task, env: MethodEnv, score: Callable[[str], float]) -> Outcome:
    """The whole context in the prompt (cut in the middle to the window), then the question."""
    run = _Run("direct", task, env, score)
    text = context_text(task.context)
    return await run.guarded(lambda: _fitted(run, text, lambda body: f"{body}\n\n{task.question}"))


# ---- rag -------------------------------------------------------------------------------------


def _bm25() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise MissingDependencyError("the rag baseline", "bench", "bm25s") from exc
    return bm25s


def _index(env: MethodEnv, task: Task) -> tuple[list[str], Any]:
    """Chunks and a BM25 index of the task's context (built once per distinct context)."""
    key = context_sha256(task.context)
    hit = env.indexes.get(key)
    if hit is not None:
        return hit
    bm25s = _bm25()
    chunks = chunk_text(context_text(task.context), env.chunk_tokens * CHARS_PER_TOKEN)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(chunks, stopwords="en", show_progress=False), show_progress=False
    )
    env.indexes.clear()  # keep one: contexts can be large and tasks come window by window
    env.indexes[key] = (chunks, retriever)
    return chunks, retriever


def retrieve(env: MethodEnv, task: Task, query: str) -> list[int]:
    """Indices (in document order) of the best chunks for ``query``, within ``rag_tokens``."""
    chunks, retriever = _index(env, task)
    k = max(1, min(len(chunks), env.rag_tokens // max(1, env.chunk_tokens)))
    tokens = _bm25().tokenize([query], stopwords="en", show_progress=False)
    try:
        ids, _ = retriever.retrieve(tokens, k=k, show_progress=False)
        best = [int(i) for i in ids[0]]
    except (ValueError, IndexError):  # a query with no indexed word retrieves nothing
        best = list(range(k))
    return sorted(best)


async def rag(task: Task, env: MethodEnv, score: Callable[[str], float]) -> Outcome:
    """BM25 picks the chunks that fill ``rag_tokens``; one call answers from them."""
    run = _Run("rag", task, env, score)

    def build(body: str) -> str:
        return f"Excerpts of a longer text, chosen for the question:\n\n{body}\n\n{task.question}"

    async def body() -> str:
        chunks, _ = _index(env, task)
        picked = retrieve(env, task, task.query or task.question)
        run.notes.update(chunks=len(picked), of_chunks=len(chunks))
        excerpts = "\n[...]\n".join(chunks[i].strip("\n") for i in picked)
        return await _fitted(run, excerpts, build)

    return await run.guarded(body)


# ---- summarize -------------------------------------------------------------------------------

NOTE_PROMPT = (
    "Here is part {i} of {n} of a longer text:\n\n{part}\n\nWrite down, briefly, everything in "
    "this part that helps answer the question below (facts, counts, names, values). If nothing "
    "does, write NOTHING.\nQuestion: {question}"
)
COMPACT_PROMPT = (
    "Notes taken from consecutive parts of a long text:\n\n{part}\n\nMerge these notes into "
    "one shorter set of notes, keeping everything that helps answer: {question}"
)
FINAL_PROMPT = "Notes taken from every part of a long text, in order:\n\n{notes}\n\n{question}"


async def _notes(run: _Run, parts: Sequence[str], template: str) -> list[str]:
    question = run.task.question
    prompts = [
        template.format(i=i + 1, n=len(parts), part=p, question=question)
        for i, p in enumerate(parts)
    ]
    return list(await asyncio.gather(*(run.ask(p) for p in prompts)))


async def _summarize_body(run: _Run, text: str) -> str:
    env = run.env
    piece = max(1, _room(env, run.task.question) - approx_tokens(len(NOTE_PROMPT))) // 2
    parts = chunk_text(text, piece * CHARS_PER_TOKEN)
    notes = await _notes(run, parts, NOTE_PROMPT)
    rounds = 0
    joined = "\n\n".join(f"[part {i + 1}] {n.strip()}" for i, n in enumerate(notes))
    # Compact until the notes fit one prompt (each round shrinks them; stop after a few).
    while approx_tokens(len(joined)) > piece and rounds < 4:
        groups = chunk_text(joined, piece * CHARS_PER_TOKEN)
        joined = "\n\n".join(await _notes(run, groups, COMPACT_PROMPT))
        rounds += 1
    run.notes.update(parts=len(parts), compactions=rounds)
    return await _fitted(
        run, joined, lambda body: FINAL_PROMPT.format(notes=body, question=run.task.question)
    )


async def summarize(task: Task, env: MethodEnv, score: Callable[[str], float]) -> Outcome:
    """A note per chunk on what matters for the question, compacted, then one answer."""
    run = _Run("summarize", task, env, score)
    text = context_text(task.context)
    return await run.guarded(lambda: _summarize_body(run, text))
