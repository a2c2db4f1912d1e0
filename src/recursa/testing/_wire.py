"""Wire formats of the fake LLM server: faults, recorded requests, request checks, and the
OpenAI / Anthropic response bodies. Standard library only; see :mod:`recursa.testing.fake_server`.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Fault", "Messages", "RecordedRequest", "count_tokens", "parse_fault"]

Messages = list[dict[str, str]]


def count_tokens(text: str) -> int:
    """The fake's tokenizer: four characters per token, rounded up (what usage reports)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure to inject. Build one with the class methods."""

    # "http", "hang", "not_json", "no_content", "disconnect", and the hostile ones: "json",
    # "usage", "huge", "trickle"
    kind: str
    status: int = 200
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0  # hang: extra delay; http: Retry-After as an HTTP date this far ahead
    body: str = ""  # json: the whole body; usage: the usage fields to override (JSON text)
    size: int = 0  # huge: bytes of reply text
    declare_length: bool = True  # huge: send Content-Length (else read until the close)

    @classmethod
    def http(cls, status: int, message: str = "", headers: dict[str, str] | None = None) -> Fault:
        """An error status with the API's usual JSON error body."""
        return cls(
            "http", status, message or f"fake error {status}", tuple((headers or {}).items())
        )

    @classmethod
    def rate_limit(
        cls,
        retry_after: float | None = None,
        *,
        retry_after_ms: int | None = None,
        retry_after_date_s: float | None = None,
    ) -> Fault:
        """A 429, optionally with ``Retry-After`` in seconds, ``retry-after-ms``, or
        ``Retry-After`` as an HTTP date ``retry_after_date_s`` seconds after the response."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        fault = cls.http(429, "rate limit reached (fake)", headers)
        return fault if retry_after_date_s is None else replace(fault, seconds=retry_after_date_s)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls.http(status, "the fake server is having a bad day")

    @classmethod
    def auth(cls, status: int = 401) -> Fault:
        return cls.http(status, "invalid API key (fake)")

    @classmethod
    def bad_request(cls, message: str = "invalid request (fake)") -> Fault:
        return cls.http(400, message)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds`` more (past a client's timeout)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def not_json(cls) -> Fault:
        """A 200 whose body is an HTML page, as proxies under load send."""
        return cls("not_json")

    @classmethod
    def no_content(cls) -> Fault:
        """A 200 JSON body without ``choices`` (OpenAI) or ``content`` (Anthropic)."""
        return cls("no_content")

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without answering."""
        return cls("disconnect")

    # ---- hostile servers: the replies a lying, broken or malicious server sends ----------------
    @classmethod
    def json_body(cls, body: Any, status: int = 200) -> Fault:
        """Answer with exactly this JSON (any shape: wrong types, missing fields...)."""
        return cls("json", status, body=json.dumps(body))

    @classmethod
    def usage(cls, **fields: Any) -> Fault:
        """A normal reply whose ``usage`` fields are replaced (negative, strings, huge...)."""
        return cls("usage", body=json.dumps(fields))

    @classmethod
    def huge(cls, size: int, *, declare_length: bool = True) -> Fault:
        """A well-formed reply whose text is ``size`` bytes, streamed in chunks (the server
        never holds it whole). Without ``declare_length`` no Content-Length is sent."""
        return cls("huge", size=size, declare_length=declare_length)

    @classmethod
    def trickle(cls, seconds_per_byte: float) -> Fault:
        """A normal reply sent one byte every ``seconds_per_byte``: each read returns in time,
        the whole answer takes minutes."""
        return cls("trickle", seconds=seconds_per_byte)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server saw, with what it decided to answer."""

    method: str
    path: str
    api: str  # "openai", "anthropic", "models" or "unknown"
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON body (None if absent or not JSON)
    time: float  # time.time() on arrival
    messages: Messages = field(default_factory=list)  # normalised: system first, text only
    status: int = 200
    fault: str | None = None
    reply: str | None = None
    peer: str = ""  # the client's "host:port": one per connection, so pooling shows
    query: str = ""  # the URL's query string, undecoded (Azure's "api-version=...")

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def answered(self, status: int, fault: str | None, reply: str | None) -> RecordedRequest:
        """This request with what the server decided to answer."""
        return replace(self, status=status, fault=fault, reply=reply)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "api": self.api,
            "status": self.status,
            "fault": self.fault,
            "reply": self.reply,
            "peer": self.peer,
            "headers": self.headers,
            "body": self.body,
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def normalise_messages(api: str, body: Any) -> Messages:
    if not isinstance(body, dict):
        return []
    out: Messages = []
    if api == "anthropic" and body.get("system"):
        out.append({"role": "system", "content": _text(body["system"])})
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            out.append({"role": str(m.get("role", "")), "content": _text(m.get("content"))})
    return out


def route(method: str, path: str) -> str:
    path = path.rstrip("/")
    if method == "POST" and path.endswith("/chat/completions"):
        return "openai"
    if method == "POST" and path.endswith("/messages"):
        return "anthropic"
    if method == "GET" and path.endswith("/models"):
        return "models"
    return "unknown"


def _api_key_sent(api: str, headers: dict[str, str]) -> str | None:
    if api == "anthropic":
        return headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ")
    return headers.get("api-key")  # Azure OpenAI's header


def refusal(api: str, body: Any, headers: dict[str, str], api_key: str | None) -> Fault | None:
    """What a real server would refuse, answered the way it would (so client bugs show)."""
    if api == "unknown":
        return Fault.http(404, "no such route on the fake LLM server")
    if api_key is not None and _api_key_sent(api, headers) != api_key:
        return Fault.auth()
    if api == "models":
        return None
    if not isinstance(body, dict):
        return Fault.bad_request("the body is not a JSON object")
    if body.get("stream"):
        return Fault.bad_request("streaming is not supported by the fake LLM server")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return Fault.bad_request("messages: a non-empty list is required")
    if api == "anthropic" and "anthropic-version" not in headers:
        return Fault.bad_request("anthropic-version: header is required")
    if api == "anthropic" and not isinstance(body.get("max_tokens"), int):
        return Fault.bad_request("max_tokens: Field required")
    return None


def _cut(text: str, stops: Any, max_tokens: Any) -> tuple[str, str, str | None]:
    """Apply stop sequences and the output-token cap: (text, "stop"|"length", matched stop)."""
    stops = [stops] if isinstance(stops, str) else list(stops or [])
    hits = [(text.find(s), s) for s in stops if isinstance(s, str) and s and s in text]
    matched = None
    if hits:
        index, matched = min(hits)
        text = text[:index]
    if isinstance(max_tokens, int) and count_tokens(text) > max_tokens:
        return text[: max_tokens * 4], "length", None
    return text, "stop", matched


def openai_body(req: RecordedRequest, text: str, n: int, cached: int) -> dict[str, Any]:
    body = req.body
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    text, reason, _ = _cut(text, body.get("stop"), cap)
    prompt = count_tokens("".join(m["content"] for m in req.messages))
    out = count_tokens(text)
    return {
        "id": f"chatcmpl-fake{n}",
        "object": "chat.completion",
        "created": int(req.time),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt), "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_fake",
    }


def anthropic_body(
    req: RecordedRequest, text: str, n: int, cached: int, created: int
) -> dict[str, Any]:
    text, reason, matched = _cut(text, req.body.get("stop_sequences"), req.body.get("max_tokens"))
    prompt = count_tokens("".join(m["content"] for m in req.messages))
    read = min(cached, prompt)
    write = min(created, prompt - read)
    return {
        "id": f"msg_fake{n}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": {"stop": "stop_sequence" if matched else "end_turn"}.get(
            reason, "max_tokens"
        ),
        "stop_sequence": matched,
        "usage": {
            "input_tokens": prompt - read - write,
            "output_tokens": count_tokens(text),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        },
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(api: str, fault: Fault) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(fault.status, "api_error")
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": fault.message}}
    return {"error": {"message": fault.message, "type": kind, "param": None, "code": None}}


def fault_headers(fault: Fault) -> list[tuple[str, str]]:
    headers = list(fault.headers)
    if fault.kind == "http" and fault.seconds:
        # Rounded up: an HTTP date has whole seconds and must not promise less than asked.
        headers.append(
            (
                "retry-after",
                email.utils.formatdate(math.ceil(time.time() + fault.seconds), usegmt=True),
            )
        )
    return headers


def no_content_body(api: str, n: int, model: Any) -> dict[str, Any]:
    if api == "anthropic":
        return {"id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": model}
    return {"id": f"chatcmpl-fake{n}", "object": "chat.completion", "model": model}


def model_entry(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "recursa-fake"}


def parse_fault(spec: str) -> tuple[Fault, int | None]:
    """``NAME[:ARG][*TIMES]`` -> (fault, times). NAME: ``429`` (ARG: Retry-After seconds), any
    other status code, ``hang`` (ARG: seconds), ``not-json``, ``no-content``, ``disconnect``,
    ``negative-usage``, ``trickle`` (ARG: seconds per byte), ``huge`` (ARG: bytes).
    TIMES: a count, or ``all`` (default 1)."""
    body, star, times_text = spec.partition("*")
    times = None if times_text == "all" else int(times_text) if star else 1
    name, _, arg = body.partition(":")
    simple: dict[str, Callable[[], Fault]] = {
        "not-json": Fault.not_json,
        "no-content": Fault.no_content,
        "negative-usage": lambda: Fault.usage(prompt_tokens=-1_000_000, input_tokens=-1_000_000),
    }
    if name == "trickle":
        return Fault.trickle(float(arg or 1)), times
    if name == "huge":
        return Fault.huge(int(arg or 100_000_000)), times
    if name == "429":
        return Fault.rate_limit(float(arg) if arg else None), times
    if name.isdigit():
        return Fault.http(int(name)), times
    if name == "hang":
        return Fault.hang(float(arg or 3600)), times
    if name == "disconnect":
        return Fault.disconnect(), times
    if name in simple:
        return simple[name](), times
    raise ValueError(f"unknown fault {spec!r}: use 429[:S], a status code, hang:S, not-json, ...")
