"""``recursa serve``: an OpenAI-compatible HTTP API in front of RLMs (Starlette + uvicorn).

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``, and
``GET /health`` (no auth; counts only). Every request runs in its own RLM with its own sandbox
worker; :class:`~recursa.server.runs.RunManager` caps how many run at once and refuses the rest
with 429 straight away (queueing would hide overload from clients that could go elsewhere).

A client that goes away cancels its run: streaming responses notice through sse-starlette's
disconnect listener, plain ones through a task that waits for ``http.disconnect``. Cancelling
the run task makes the engine shut its sandbox worker down on the way out.

Nothing a request sends may hold up the event loop (``/health`` and every other run live on
it): decoding and checking the body, loading its context and building its models run in a
worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from recursa.context import Context, load_context
from recursa.errors import RecursaError
from recursa.limits import Limits
from recursa.lm.base import LM
from recursa.rlm import RLM
from recursa.server.chat import (
    ChatRequest,
    chunk,
    completion_body,
    decode_body,
    error_body,
    error_for,
    finish_reason,
    parse_chat_request,
    request_sampling,
    run_info,
    scrub,
    usage_body,
)
from recursa.server.config import ModelChoice, ServerConfig, tighten_limits
from recursa.server.errors import BodyTooLarge, RequestError
from recursa.server.runs import RunHandle, RunManager
from recursa.server.sessions import SessionEntry

__all__ = ["create_app", "serve"]

log = logging.getLogger("recursa.server")

PING_S = 15  # SSE comment lines keep proxies from closing a stream that is quiet for a while
_PUBLIC_PATHS = frozenset({"/health"})


class BearerAuth:
    """Pure ASGI middleware: every path but ``/health`` needs ``Authorization: Bearer KEY``.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so streaming responses and disconnect
    detection pass through untouched.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _PUBLIC_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            # compare_digest: the time taken must not tell an attacker how much of a key matched.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                body = error_body(
                    "invalid or missing API key: send 'Authorization: Bearer <key>'",
                    "invalid_request_error",
                    "invalid_api_key",
                )
                response = JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _JSON(JSONResponse):
    """A JSON response that can always be written: a lone surrogate (a model may produce one)
    becomes U+FFFD instead of failing the response."""

    def render(self, content: Any) -> bytes:
        return scrub(_data(content)).encode("utf-8")


def _error_response(exc: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    status, body, extra = error_for(exc)
    if status >= 500 and not isinstance(exc, RecursaError):
        log.error("request failed", exc_info=exc)
    return _JSON(body, status, headers={**(headers or {}), **extra})


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing bodies over ``limit`` bytes before reading all of them."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body is {int(declared):,} bytes; the limit is {limit:,}")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:  # chunked uploads declare no length
            raise BodyTooLarge(f"the request body is over the limit of {limit:,} bytes")
        parts.append(part)
    return b"".join(parts)


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body has been read, so nothing else arrives)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the connection broke in some other way: gone all the same
        return


def _data(body: dict[str, Any]) -> str:
    return scrub(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


async def _stream(
    handle: RunHandle, req: ChatRequest, cid: str, created: int, progress: bool
) -> AsyncIterator[str]:
    """The SSE events of one streamed completion (sse-starlette adds ``data:`` and blank lines)."""
    model = req.model
    try:
        yield _data(chunk(cid, created, model, {"role": "assistant", "content": ""}))
        if progress:
            async for event in handle.progress():
                # Text for chat UIs that show reasoning, structured data for programs; no
                # ``content``, so the answer stays clean.
                delta = {"reasoning_content": event.message + "\n"}
                yield _data(
                    chunk(cid, created, model, delta, recursa={"progress": event.to_dict()})
                )
        try:
            result = await handle.result()
        except Exception as exc:  # headers are gone: the error travels as an event
            status, body, _ = error_for(exc)
            if status >= 500 and not isinstance(exc, RecursaError):
                log.error("streamed run %s failed", handle.run_id, exc_info=exc)
            yield _data(body)
            return
        yield _data(chunk(cid, created, model, {"content": result.answer}))
        yield _data(chunk(cid, created, model, {}, finish_reason(result), recursa=run_info(result)))
        if req.include_usage:
            yield _data(chunk(cid, created, model, None, usage=usage_body(result)))
        yield "[DONE]"
    finally:
        handle.cancel()  # no-op when the run is over; otherwise the client left


async def _complete(
    request: Request, handle: RunHandle, req: ChatRequest, cid: str, created: int
) -> Response:
    headers = {"X-Recursa-Run-Id": handle.run_id}
    watcher = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({handle.task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        handle.cancel()
        raise
    finally:
        watcher.cancel()
    if not handle.task.done():  # the client left first
        handle.cancel()
        return Response(status_code=499, headers=headers)  # nobody reads it
    try:
        result = handle.task.result()
    except Exception as exc:
        return _error_response(exc, headers)
    return _JSON(completion_body(cid, created, req.model, result), headers=headers)


def _prepare(
    manager: RunManager, raw: bytes
) -> tuple[ChatRequest, ModelChoice, Limits, Context, tuple[RLM, list[LM]] | None]:
    """Everything a run needs from a request body. Runs in a worker thread: a big or hostile
    body (32 MB of JSON, a huge context) costs CPU that must not stall the event loop. A
    question for a live session needs no new RLM (None)."""
    cfg = manager.config
    req = parse_chat_request(decode_body(raw))
    choice = cfg.choose_model(req.model)
    limits = tighten_limits(cfg.limits, req.limits)
    live = req.session is not None and manager.sessions.get(req.session) is not None
    if live and req.attachments:
        attached = req.attachments
        context = load_context(attached[0] if len(attached) == 1 else list(attached))
    else:
        context = load_context(req.context)
    sampling = request_sampling(req)
    built = None if live else manager.build_rlm(choice, limits, req.temperature, sampling)
    return req, choice, limits, context, built


async def _take_session(
    manager: RunManager,
    req: ChatRequest,
    choice: ModelChoice,
    limits: Limits,
    context: Context,
    built: tuple[RLM, list[LM]] | None,
) -> SessionEntry:
    """The request's session, busy: started with this request's context, or (live) given the
    last message's attachments as one more context."""
    assert req.session is not None

    def build() -> tuple[RLM, list[LM]]:
        return built or manager.build_rlm(choice, limits, req.temperature, request_sampling(req))

    entry, created = manager.sessions.acquire(req.session, req.model, build, context)
    if built is not None and not created:  # went live in the meantime: not needed
        for lm in built[1]:
            await lm.aclose()
    if not created and req.attachments:
        try:
            await entry.open(None).add_context(context)
        except BaseException:
            manager.sessions.release(entry)
            raise
    return entry


async def chat_completions(request: Request) -> Response:
    manager: RunManager = request.app.state.manager
    cfg = manager.config
    try:
        raw = await _read_body(request, cfg.max_body_bytes)
        req, choice, limits, context, built = await asyncio.to_thread(_prepare, manager, raw)
        progress = req.stream and (cfg.progress if req.progress is None else req.progress)
        session = None
        if req.session is not None:
            session = await _take_session(manager, req, choice, limits, context, built)
        try:
            handle = manager.start(
                choice,
                req.question,
                context,
                limits=limits,
                temperature=req.temperature,
                progress=progress,
                source="openai",
                built=built,
                session=session,
            )
        except BaseException:
            if session is not None:
                manager.sessions.release(session)
            raise
    except ClientDisconnect:  # gone while sending the body: nobody to answer
        return Response(status_code=499)
    except Exception as exc:
        return _error_response(exc)
    cid, created = f"chatcmpl-{handle.run_id}", int(time.time())
    if not req.stream:
        return await _complete(request, handle, req, cid, created)
    from sse_starlette import EventSourceResponse

    async def closed(_message: Any) -> None:
        handle.cancel()

    return EventSourceResponse(
        _stream(handle, req, cid, created, progress),
        sep="\n",  # OpenAI's framing: "data: ...\n\n"
        ping=PING_S,
        headers={"X-Recursa-Run-Id": handle.run_id},
        client_close_handler_callable=closed,
    )


def _card(choice: ModelChoice, created: int) -> dict[str, Any]:
    return {
        "id": choice.name,
        "object": "model",
        "created": created,
        "owned_by": "recursa",
        "recursa": {"root_model": choice.root, "sub_model": choice.sub or choice.root},
    }


async def list_models(request: Request) -> Response:
    cfg: ServerConfig = request.app.state.manager.config
    created = request.app.state.started
    cards = [_card(c, created) for c in cfg.model_names().values()]
    return _JSON({"object": "list", "data": cards})


async def get_model(request: Request) -> Response:
    cfg: ServerConfig = request.app.state.manager.config
    try:
        choice = cfg.choose_model(request.path_params["model_id"])
    except RequestError as exc:
        return _error_response(exc)
    return _JSON(_card(choice, request.app.state.started))


async def health(request: Request) -> Response:
    manager: RunManager = request.app.state.manager
    limit = manager.config.max_concurrent_runs
    return JSONResponse(
        {"status": "ok", "active_runs": manager.active, "max_concurrent_runs": limit}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else None
    body = error_body(str(exc.detail), "invalid_request_error", code)
    return JSONResponse(body, exc.status_code, headers=exc.headers)


def create_app(config: ServerConfig) -> Starlette:
    """The ASGI app. Runs still going when it shuts down are cancelled and their sandboxes
    stopped before the lifespan ends."""
    manager = RunManager(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await manager.aclose()

    middleware = [Middleware(BearerAuth, api_key=config.api_key)] if config.api_key else []
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.started = int(time.time())
    return app


def serve(
    config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        # Streams still open after this long are cut so shutdown cannot hang on a slow run.
        timeout_graceful_shutdown=10,
    )
