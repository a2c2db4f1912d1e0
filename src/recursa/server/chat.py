"""The OpenAI chat-completions wire format: requests in, completions, chunks and errors out.

How a conversation becomes a run:

- The **question** is the text of the last message, which must come from the user. When that
  message has several text parts, the last part is the question and the ones before it are
  attachments.
- The **context** is a list of strings, one per earlier message with text (system, developer,
  user, assistant and tool messages alike), each written ``"ROLE: TEXT"`` (``"ROLE (NAME): ..."``
  when the message has a name), followed by the attachments as ``"user (attachment): TEXT"``.
- A conversation of one single-part user message has nothing else to read, so its context is
  the question's own text (a ``str``): pasting a long document with a question still works.

Only text is accepted; images, audio and files get a 400 rather than being silently dropped.
Extra body field ``recursa`` holds options of ours: ``progress`` (bool), ``session`` (an id:
continue in that session's REPL, see :mod:`recursa.server.sessions`) and limits to tighten.

A body is checked before anything reads it (:func:`decode_body`): JSON nested deeper than
:data:`MAX_JSON_DEPTH` is a 400, and lone surrogates (``"\\ud800"``, which no UTF-8 writer
accepts: not the trace, the stored summary or the response) become U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recursa.errors import (
    ConfigError,
    LMError,
    LMRateLimitError,
    RecursaError,
    SandboxError,
)
from recursa.sampling import check_reasoning_effort, check_top_p
from recursa.server.errors import RequestError, ServerBusy
from recursa.types import Result

__all__ = [
    "MAX_JSON_DEPTH",
    "ChatRequest",
    "chunk",
    "completion_body",
    "decode_body",
    "error_body",
    "error_for",
    "finish_reason",
    "parse_chat_request",
    "run_info",
    "scrub",
    "usage_body",
]

# Deep enough for any chat request (tool schemas included), shallow enough that nothing that
# walks the body recursively can run out of stack.
MAX_JSON_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TEXT_PARTS = frozenset({"text", "input_text"})


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it can be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def _clean(value: Any, depth: int) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {scrub(k): _clean(v, depth + 1) for k, v in value.items()}
    return value


def decode_body(raw: bytes) -> Any:
    """A request body as checked JSON: :class:`RequestError` (400) when it is not JSON, not
    UTF-8, or nested too deeply; lone surrogates replaced. CPU-heavy for big bodies: call it
    off the event loop."""
    try:
        value = json.loads(raw)
    except RecursionError:  # the decoder's own guard, far past MAX_JSON_DEPTH
        raise RequestError(
            f"the request body is nested more than {MAX_JSON_DEPTH} levels deep"
        ) from None
    except ValueError:  # UnicodeDecodeError included
        raise RequestError("the request body is not valid JSON (UTF-8)") from None
    return _clean(value, 1)


@dataclass(frozen=True)
class ChatRequest:
    """What we use of a chat-completions request."""

    model: str
    question: str
    context: str | list[str]
    stream: bool = False
    include_usage: bool = False
    progress: bool | None = None  # None: the server's default
    limits: Mapping[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    session: str | None = None  # recursa.session: continue in that session's REPL
    top_p: float | None = None
    reasoning_effort: str | None = None
    attachments: tuple[str, ...] = ()  # the last message's text parts before the question


def _texts(content: Any, where: str) -> list[str]:
    """The text parts of one message's content."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise RequestError("content must be a string or a list of parts", param=where)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal":
            continue
        else:
            raise RequestError(
                f"content parts of type {kind!r} are not supported: send text",
                param=f"{where}[{i}]",
            )
    return texts


def _label(message: Mapping[str, Any]) -> str:
    name = message.get("name")
    return f"{message['role']} ({name})" if isinstance(name, str) and name else message["role"]


def _messages(body: Mapping[str, Any]) -> tuple[str, str | list[str], list[str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    entries: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise RequestError(
                f"each message needs a role, one of: {', '.join(sorted(_ROLES))}",
                param=f"messages[{i}]",
            )
        if i == len(messages) - 1:
            break
        text = "\n\n".join(t for t in _texts(m.get("content"), f"messages[{i}].content") if t)
        if m.get("tool_calls"):
            text += f"\n[tool calls: {json.dumps(m['tool_calls'], ensure_ascii=False)}]"
        if text.strip():
            entries.append(f"{_label(m)}: {text.strip()}")
    last = messages[-1]
    where = f"messages[{len(messages) - 1}]"
    if last["role"] != "user":
        raise RequestError(
            "the last message must come from the user: it is the question", param=where
        )
    parts = [t for t in _texts(last.get("content"), f"{where}.content") if t.strip()]
    if not parts:
        raise RequestError("the last user message has no text; it is the question", param=where)
    question = parts[-1]
    entries += [f"user (attachment): {t}" for t in parts[:-1]]
    return question, (entries or question), parts[:-1]


def _flag(body: Mapping[str, Any], key: str, param: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false", param=param)
    return value


def parse_chat_request(body: Any) -> ChatRequest:
    """Check a decoded JSON body and pull out what a run needs; :class:`RequestError` if bad."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model is required, e.g. 'rlm'", param="model")
    if body.get("n") not in (None, 1):
        raise RequestError("only n=1 is supported", param="n")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        raise RequestError("temperature must be a number from 0 to 2", param="temperature")
    options = {} if body.get("stream_options") is None else body["stream_options"]
    if not isinstance(options, dict):
        raise RequestError("stream_options must be an object", param="stream_options")
    ours = {} if body.get("recursa") is None else body["recursa"]
    if not isinstance(ours, dict):
        raise RequestError("recursa must be an object", param="recursa")
    question, context, attachments = _messages(body)
    session = ours.get("session")
    if session is not None:
        from recursa.server.sessions import check_session_id

        session = check_session_id(session)
    return ChatRequest(
        model=model.strip(),
        question=question,
        context=context,
        stream=bool(_flag(body, "stream", "stream")),
        include_usage=bool(_flag(options, "include_usage", "stream_options.include_usage")),
        progress=_flag(ours, "progress", "recursa.progress"),
        limits={k: v for k, v in ours.items() if k not in ("progress", "session")},
        temperature=None if temperature is None else float(temperature),
        session=session,
        attachments=tuple(attachments),
        **_sampling(body),
    )


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """``top_p`` and ``reasoning_effort``, checked (the other sampling fields a client could
    send stay the server's: provider options are never taken from a client)."""
    try:
        return {
            "top_p": check_top_p(body.get("top_p")),
            "reasoning_effort": check_reasoning_effort(body.get("reasoning_effort")),
        }
    except ConfigError as exc:
        param = "top_p" if str(exc).startswith("top_p") else "reasoning_effort"
        raise RequestError(str(exc), param=param) from None


def request_sampling(req: ChatRequest) -> dict[str, Any]:
    """The request's sampling as RLM keyword arguments (only what it set)."""
    pairs = (("top_p", req.top_p), ("reasoning_effort", req.reasoning_effort))
    return {k: v for k, v in pairs if v is not None}


# ---- responses ------------------------------------------------------------------------------


def usage_body(result: Result) -> dict[str, Any]:
    """Tokens of the whole run (root turns, sub-calls and child runs) in OpenAI's shape."""
    u = result.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def run_info(result: Result) -> dict[str, Any]:
    """Our own fields about the run (under ``recursa``; OpenAI clients keep unknown fields)."""
    info = result.to_dict()
    info.pop("answer", None)
    info.pop("trace_path", None)  # a path on the server is none of the client's business
    return info


def finish_reason(result: Result) -> str:
    # "length" is the closest OpenAI word for "a limit cut the answer short".
    return "stop" if not result.partial else "length"


def completion_body(cid: str, created: int, model: str, result: Result) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": usage_body(result),
        "recursa": run_info(result),
    }


def chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` makes the choice-less usage chunk."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    )
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    body.update(extra)
    return body


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_for(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, OpenAI error body, extra headers) for an exception."""
    if isinstance(exc, RequestError):
        return exc.status, error_body(str(exc), exc.type, exc.code, exc.param), {}
    if isinstance(exc, ServerBusy):
        headers = {"Retry-After": str(exc.retry_after_s)}
        return 429, error_body(str(exc), exc.type, exc.code), headers
    if isinstance(exc, ConfigError):  # e.g. a context that cannot be loaded
        return 400, error_body(str(exc), "invalid_request_error"), {}
    if isinstance(exc, LMRateLimitError):
        return 503, error_body(str(exc), "api_error", "upstream_rate_limited"), {}
    if isinstance(exc, LMError):
        return 502, error_body(f"the model failed: {exc}", "api_error", "upstream_error"), {}
    if isinstance(exc, SandboxError):
        return 500, error_body(f"the sandbox failed: {exc}", "server_error", "sandbox_error"), {}
    if isinstance(exc, RecursaError):
        return 500, error_body(str(exc), "server_error", "run_failed"), {}
    return 500, error_body("internal server error; see the server log", "server_error"), {}
