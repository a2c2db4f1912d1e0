"""A fake LLM server on loopback: the OpenAI Chat Completions and Anthropic Messages APIs.

It tests code that talks to real HTTP backends with no network and no key. In a test::

    with FakeLLMServer(rules=[(r"capital of France", "Paris")]) as srv:
        lm = OpenAIChatLM("fake", base_url=srv.base_url)      # Anthropic: base_url=srv.url
        srv.fail_next(Fault.rate_limit(retry_after=1))        # the next request gets a 429
        ...
        assert srv.requests[-1].body["model"] == "fake"

As a process (the first stdout line is the base URL; ``--help`` lists the knobs)::

    python -m recursa.testing.fake_server --port 0 --latency 0.2 --log requests.jsonl

Each completion request is answered by, in order: an injected fault (:meth:`fail_next`,
:meth:`fail_matching`), the first rule whose regex is found in the last user message, the next
canned reply in the queue, and finally the responder (a function of the messages, or a string;
by default an echo). Routes are matched by suffix (``.../chat/completions``, ``.../messages``,
``.../models``), so one base URL serves both APIs. Standard library only.

Hostile servers are faults too: :meth:`Fault.usage` (lying usage: negative, strings, huge),
:meth:`Fault.json_body` (any JSON, wrong types included), :meth:`Fault.huge` (a reply of any size,
streamed) and :meth:`Fault.trickle` (a reply sent a byte at a time).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
from pathlib import Path
from typing import Any

from recursa.testing._server import FakeLLMServer, Responder
from recursa.testing._wire import Fault, RecordedRequest, count_tokens, parse_fault

__all__ = [
    "FakeLLMServer",
    "Fault",
    "RecordedRequest",
    "Responder",
    "count_tokens",
    "main",
    "parse_fault",
]

# ---- as a process ---------------------------------------------------------------------------


def _load_script(path: str) -> dict[str, Any]:
    """The JSON script format of ScriptedLM; a rule may carry ``"fault"`` instead of a reply."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data = {"replies": data} if isinstance(data, list) else data
    rules = [
        (r["match"], parse_fault(r["fault"])[0] if "fault" in r else str(r["reply"]))
        for r in data.get("rules", [])
    ]
    return {
        "replies": [str(r) for r in data.get("replies", [])],
        "rules": rules,
        "default": data.get("default"),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recursa.testing.fake_server",
        description="A fake OpenAI/Anthropic-compatible LLM server. Prints its base URL first.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--log", help="append every request as a JSON line to this file")
    p.add_argument(
        "--script", help="JSON: {replies: [...], rules: [{match, reply|fault}], default}"
    )
    p.add_argument("--reply", action="append", default=[], help="a canned reply (repeatable)")
    p.add_argument("--rule", nargs=2, action="append", default=[], metavar=("REGEX", "REPLY"))
    p.add_argument("--default", help="the reply when nothing else matches (default: an echo)")
    p.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault into the next requests: 500*3, 429:2, hang:30, not-json, "
        "negative-usage, trickle:0.5 (seconds per byte), huge:100000000 (bytes)",
    )
    p.add_argument(
        "--fail-matching", nargs=2, action="append", default=[], metavar=("REGEX", "SPEC")
    )
    p.add_argument("--api-key", help="require this key (401 otherwise)")
    p.add_argument("--cached-tokens", type=int, default=0)
    p.add_argument("--cache-creation-tokens", type=int, default=0)
    p.add_argument("--backlog", type=int, default=1024, help="the listen backlog")
    return p


def _server_from_args(args: argparse.Namespace) -> FakeLLMServer:
    script = _load_script(args.script) if args.script else {"replies": [], "rules": []}
    srv = FakeLLMServer(
        [*script["replies"], *args.reply],
        rules=[*args.rule, *script["rules"]],
        responder=args.default if args.default is not None else script.get("default"),
        latency_s=args.latency,
        host=args.host,
        port=args.port,
        log_path=args.log,
        api_key=args.api_key,
        cached_tokens=args.cached_tokens,
        cache_creation_tokens=args.cache_creation_tokens,
        backlog=args.backlog,
    )
    for spec in args.fail:
        srv.fail_next(*parse_fault(spec))
    for pattern, spec in args.fail_matching:
        fault, times = parse_fault(spec)
        srv.fail_matching(pattern, fault, times if "*" in spec else None)
    return srv


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C. The first stdout line is the base URL (``.../v1``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the server's threads start (they inherit the mask) and then waited for, so
    # no signal handler ever runs in the middle of the server's own locking.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        srv = _server_from_args(args)
        srv.start()
    except (OSError, ValueError, KeyError, TypeError, re.error) as exc:
        parser.error(f"{type(exc).__name__}: {exc}")
    try:
        print(srv.base_url, flush=True)
        signal.sigwait(stop_signals)
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
