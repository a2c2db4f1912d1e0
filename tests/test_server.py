"""The OpenAI-compatible API, driven by the official ``openai`` client against a live uvicorn
server on 127.0.0.1 (in a background thread, so its sandbox workers are this process's
children and can be checked)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from recursa.limits import Limits  # noqa: E402
from recursa.server.config import ServerConfig  # noqa: E402
from recursa.server.openai_api import create_app  # noqa: E402

ECHO = "```repl\nFINAL(repr(context))\n```"
SECRET = "```repl\nimport re\nFINAL(re.search(r'secret-[0-9a-z]+', str(context)).group(0))\n```"
LOOP = "```repl\nprint('still looking')\n```"
PID = "```repl\nimport os\nprint('PID', os.getpid())\n```"
SLEEP = "```repl\nimport time\ntime.sleep(300)\n```"


def write_script(folder: Path, name: str, **script) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(script))
    return f"scripted:{path}"


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, str]:
    return {
        "echo": write_script(tmp_path, "echo", default=ECHO),
        "secret": write_script(tmp_path, "secret", default=SECRET),
        "loop": write_script(tmp_path, "loop", default=LOOP),
        "sleepy": write_script(tmp_path, "sleepy", replies=[PID, SLEEP]),
        "broken": write_script(tmp_path, "broken", replies=[]),
    }


class LiveServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.app = create_app(config)
        cfg = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            timeout_graceful_shutdown=5,  # a failed test may leave a stream open
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="the server to start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def client(self, api_key: str = "unused", **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kw)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health").json()

    def summary(self, run_id: str) -> dict:
        return json.loads((self.config.stored_runs_dir / run_id / "summary.json").read_text())


def wait_until(check: Callable[[], object], what: str, deadline_s: float = 60.0) -> None:
    """Poll ``check`` until it is true; the deadline only keeps a broken test from hanging."""
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def live(scripts) -> Callable[..., LiveServer]:
    started: list[LiveServer] = []

    @contextmanager
    def make(**overrides) -> Iterator[LiveServer]:
        overrides.setdefault("model", scripts["echo"])
        aliases = {k: v for k, v in scripts.items() if k != "echo"}
        config = ServerConfig(aliases=aliases, **overrides)
        with LiveServer(config) as server:
            started.append(server)
            yield server

    return make


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ---- plain completions -----------------------------------------------------------------------


def test_conversation_becomes_context_and_last_user_message_the_question(live):
    messages = [
        {"role": "system", "content": "You are terse."},
        user("The code word is walnut."),
        {"role": "assistant", "content": "Noted.", "name": "bot"},
        user("What is the code word?"),
    ]
    with live() as srv:
        raw = srv.client().chat.completions.with_raw_response.create(model="rlm", messages=messages)
        done = raw.parse()
        answer = done.choices[0].message.content
        assert answer == repr(
            ["system: You are terse.", "user: The code word is walnut.", "assistant (bot): Noted."]
        )
        assert done.choices[0].finish_reason == "stop"
        assert done.object == "chat.completion" and done.model == "rlm"
        info = done.model_extra["recursa"]
        assert info["stop_reason"] == "final" and info["iterations"] == 1
        assert done.id == f"chatcmpl-{info['run_id']}"
        assert raw.headers["x-recursa-run-id"] == info["run_id"]
        assert done.usage.prompt_tokens > 0 and done.usage.total_tokens == (
            done.usage.prompt_tokens + done.usage.completion_tokens
        )
        summary = srv.summary(info["run_id"])
        assert summary["status"] == "final" and summary["source"] == "openai"
        assert summary["question"] == "What is the code word?"
        assert (srv.config.stored_runs_dir / info["run_id"] / "trace.jsonl").exists()


def test_one_message_is_its_own_context_and_text_parts_are_attachments(live):
    with live() as srv:
        client = srv.client()
        alone = client.chat.completions.create(model="rlm", messages=[user("just this")])
        assert alone.choices[0].message.content == repr("just this")
        parts = [
            {"type": "text", "text": "attached notes"},
            {"type": "text", "text": "what do the notes say?"},
        ]
        done = client.chat.completions.create(
            model="rlm", messages=[{"role": "user", "content": parts}]
        )
        assert done.choices[0].message.content == repr(["user (attachment): attached notes"])


# ---- streaming -------------------------------------------------------------------------------


def test_streaming_sends_chunks_answer_and_usage_without_progress(live):
    with live() as srv:
        stream = srv.client().chat.completions.create(
            model="rlm",
            messages=[user("stream me")],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == repr("stream me")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert not any(
        c.model_extra.get("recursa", {}).get("progress")
        or (c.choices and getattr(c.choices[0].delta, "reasoning_content", None))
        for c in chunks
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_streaming_wire_format_is_openai_sse(live):
    with live() as srv:
        body = {"model": "rlm", "messages": [user("x")], "stream": True}
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            text = r.read().decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_streaming_progress_when_asked(live):
    with live() as srv:
        stream = srv.client().chat.completions.create(
            model="loop",
            messages=[user("go")],
            stream=True,
            extra_body={"recursa": {"progress": True, "max_iterations": 2}},
        )
        chunks = list(stream)
    progress = [
        c.model_extra["recursa"]["progress"]
        for c in chunks
        if "recursa" in c.model_extra and "progress" in c.model_extra["recursa"]
    ]
    kinds = [p["kind"] for p in progress]
    # Two iterations, then the "answer now" turn the limit allows, which runs no code.
    assert kinds == ["iteration", "cell"] * 2 + ["iteration"]
    assert "last turn" in progress[-1]["message"] and progress[-1]["iteration"] == 3
    assert [p["step"] for p in progress] == list(range(1, len(progress) + 1))
    for c in chunks:
        if "progress" in c.model_extra.get("recursa", {}):
            assert c.choices[0].delta.content is None
            assert c.choices[0].delta.reasoning_content.startswith(
                c.model_extra["recursa"]["progress"]["message"]
            )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


# ---- models, auth, request checks ------------------------------------------------------------


def test_models_lists_default_and_aliases_and_unknown_is_404(live, scripts):
    with live() as srv:
        client = srv.client()
        ids = [m.id for m in client.models.list().data]
        assert ids[0] == "rlm" and {"secret", "loop", "sleepy"} <= set(ids)
        assert (
            client.models.retrieve("secret").model_extra["recursa"]["root_model"]
            == (scripts["secret"])
        )
        for name in ("nope", "rlm:nosuchprovider:x", "rlm:scripted:/etc/passwd"):
            with pytest.raises(openai.NotFoundError) as err:
                client.chat.completions.create(model=name, messages=[user("q")])
            assert err.value.body["code"] == "model_not_found"
            assert err.value.body["param"] == "model"


def test_fixed_models_refuse_other_names(live):
    with live(open_models=False) as srv, pytest.raises(openai.NotFoundError):
        srv.client().chat.completions.create(model="rlm:openai:gpt-5-mini", messages=[user("q")])


def test_bearer_token_is_required_when_configured(live):
    with live(api_key="s3cret") as srv:
        with pytest.raises(openai.AuthenticationError) as err:
            srv.client("wrong").models.list()
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
        assert httpx.post(f"{srv.url}/v1/chat/completions", json={}).status_code == 401
        assert srv.client("s3cret").models.list().data[0].id == "rlm"
        assert srv.health()["status"] == "ok"


def test_body_over_the_limit_is_413(live):
    with live(max_body_bytes=10_000) as srv:
        with pytest.raises(openai.APIStatusError) as err:
            srv.client().chat.completions.create(model="rlm", messages=[user("x" * 20_000)])
        assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
        small = srv.client().chat.completions.create(model="rlm", messages=[user("x" * 100)])
        assert small.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"recursa": {"max_iterations": 0}}, "recursa.max_iterations"),
        ({"recursa": {"max_iterations": 2.5}}, "recursa.max_iterations"),
        ({"recursa": {"max_cost_usd": -1}}, "recursa.max_cost_usd"),
        ({"recursa": {"timeout_s": "soon"}}, "recursa.timeout_s"),
        ({"recursa": {"max_iteration": 3}}, "recursa.max_iteration"),
        ({"recursa": {"progress": "yes"}}, "recursa.progress"),
        ({"recursa": []}, "recursa"),
        ({"n": 2}, "n"),
        ({"temperature": 5}, "temperature"),
    ],
)
def test_bad_options_are_400(live, extra, param):
    with live() as srv:
        with pytest.raises(openai.BadRequestError) as err:
            srv.client().chat.completions.create(
                model="rlm", messages=[user("q")], extra_body=extra
            )
        assert err.value.body["param"] == param
        assert err.value.body["type"] == "invalid_request_error"


def test_bad_conversations_are_400(live):
    with live() as srv:
        client = srv.client()
        bad = [
            [user("q"), {"role": "assistant", "content": "a"}],
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            [{"role": "wizard", "content": "q"}],
            [],
        ]
        for messages in bad:
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="rlm", messages=messages)
        r = httpx.post(f"{srv.url}/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.get(f"{srv.url}/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_requests_may_tighten_limits_but_never_loosen_them(live):
    with live(limits=Limits(max_iterations=3, timeout_s=60)) as srv:
        client = srv.client()
        tight = client.chat.completions.create(
            model="loop", messages=[user("q")], extra_body={"recursa": {"max_iterations": 1}}
        )
        loose = client.chat.completions.create(
            model="loop", messages=[user("q")], extra_body={"recursa": {"max_iterations": 10}}
        )
    assert tight.model_extra["recursa"]["iterations"] == 1
    assert loose.model_extra["recursa"]["iterations"] == 3
    assert tight.choices[0].finish_reason == "length"
    assert loose.model_extra["recursa"]["stop_reason"] == "max_iterations"


def test_a_failing_run_is_a_500_in_openai_format(live):
    with live() as srv:
        with pytest.raises(openai.InternalServerError) as err:
            srv.client().chat.completions.create(model="broken", messages=[user("q")])
        assert err.value.body["code"] == "run_failed"
        stream = srv.client().chat.completions.create(
            model="broken", messages=[user("q")], stream=True
        )
        with pytest.raises(openai.APIError, match="script"):
            list(stream)


# ---- capacity, disconnects, isolation --------------------------------------------------------


def _progress(chunk) -> dict:
    return (chunk.model_extra or {}).get("recursa", {}).get("progress") or {}


def _worker_pid(srv: LiveServer, run_id: str) -> int:
    trace = srv.config.stored_runs_dir / run_id / "trace.jsonl"
    for line in trace.read_text().splitlines()[1:]:
        span = json.loads(line)
        out = span["attrs"].get("stdout") or ""
        if span["kind"] == "cell" and out.startswith("PID"):
            return int(out.split()[1])
    raise AssertionError("no cell printed its PID")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_full_server_answers_429_at_once(live):
    with live(max_concurrent_runs=1, retry_after_s=7) as srv:
        client = srv.client()
        first = client.chat.completions.create(
            model="sleepy",
            messages=[user("q")],
            stream=True,
            extra_body={"recursa": {"progress": True}},
        )
        next(iter(first))
        assert srv.health()["active_runs"] == 1
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="rlm", messages=[user("q")])
        assert err.value.response.headers["retry-after"] == "7"
        assert err.value.body["code"] == "server_busy"
        first.close()
        wait_until(lambda: srv.health()["active_runs"] == 0, "the cancelled run to end")
        done = client.chat.completions.create(model="rlm", messages=[user("again")])
        assert done.choices[0].message.content == repr("again")


def test_disconnected_stream_cancels_the_run_and_kills_its_sandbox(live):
    with live() as srv:
        stream = srv.client().chat.completions.create(
            model="sleepy",
            messages=[user("q")],
            stream=True,
            extra_body={"recursa": {"progress": True}},
        )
        run_id = None
        for c in stream:
            run_id = c.id.removeprefix("chatcmpl-")
            if _progress(c).get("kind") == "iteration" and _progress(c)["iteration"] == 2:
                break  # cell 1 (which printed the worker's pid) is done; cell 2 sleeps
        pid = _worker_pid(srv, run_id)
        assert not _gone(pid)
        stream.close()
        wait_until(lambda: _gone(pid), "the sandbox worker to be killed")
        wait_until(lambda: srv.health()["active_runs"] == 0, "the run slot to be freed")
        summary = srv.config.stored_runs_dir / run_id / "summary.json"
        wait_until(summary.exists, "the run summary")
        assert srv.summary(run_id)["status"] == "cancelled"


def test_disconnected_plain_request_cancels_the_run(live):
    with live() as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{srv.url}/v1/chat/completions",
                json={"model": "sleepy", "messages": [user("q")]},
                timeout=httpx.Timeout(5.0, read=1.5),
            )
        wait_until(lambda: srv.health()["active_runs"] == 0, "the run to be cancelled")
        runs = list(srv.config.stored_runs_dir.iterdir())
        assert len(runs) == 1
        assert srv.summary(runs[0].name)["status"] == "cancelled"


async def test_twenty_concurrent_requests_each_see_only_their_own_context(live):
    n = 20
    with live(max_concurrent_runs=n) as srv:
        client = openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        secrets = [f"secret-{i:02d}{os.urandom(4).hex()}" for i in range(n)]

        async def ask(secret: str):
            messages = [{"role": "system", "content": f"Your key is {secret}."}, user("Key?")]
            return await client.chat.completions.create(model="secret", messages=messages)

        started = time.monotonic()
        results = await asyncio.gather(*(ask(s) for s in secrets))
        elapsed = time.monotonic() - started
        await client.close()
        assert [r.choices[0].message.content for r in results] == secrets
        assert len({r.model_extra["recursa"]["run_id"] for r in results}) == n
        assert srv.health()["active_runs"] == 0
    print(f"{n} concurrent runs answered in {elapsed:.2f}s")
