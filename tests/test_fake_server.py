"""The fake LLM server itself: wire formats, scripting, faults, concurrency, process mode."""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recursa.testing import FakeLLMServer, Fault
from recursa.testing.fake_server import count_tokens, parse_fault

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def chat(client: httpx.Client, srv: FakeLLMServer, prompt: str, **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}
    return client.post(f"{srv.base_url}/chat/completions", json=body)


def messages_api(client: httpx.Client, srv: FakeLLMServer, body: dict) -> httpx.Response:
    return client.post(f"{srv.url}/v1/messages", json=body, headers=ANTHROPIC_HEADERS)


@pytest.fixture
def srv():
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def client():
    with httpx.Client(timeout=10) as c:
        yield c


# ---- wire formats -------------------------------------------------------------------------------


def test_openai_body_has_choices_and_usage(client):
    with FakeLLMServer(["the answer"], cached_tokens=3) as srv:
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
        resp = client.post(
            f"{srv.base_url}/chat/completions", json={"model": "m", "messages": msgs}
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "the answer", "refusal": None}
    assert choice["finish_reason"] == "stop"
    prompt = count_tokens("be brief" + "hi there")
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == count_tokens("the answer")
    assert data["usage"]["total_tokens"] == prompt + count_tokens("the answer")
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 3


def test_anthropic_body_splits_input_into_uncached_read_and_write(client):
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys prompt"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 40}]}],
    }
    with FakeLLMServer(["ok"], cached_tokens=5, cache_creation_tokens=2) as srv:
        data = messages_api(client, srv, body).json()
        seen = srv.requests[0]
    assert data["type"] == "message"
    assert data["content"] == [{"type": "text", "text": "ok"}]
    assert data["stop_reason"] == "end_turn"
    usage = data["usage"]
    total = count_tokens("sys prompt" + "a" * 40)
    assert usage["cache_read_input_tokens"] == 5
    assert usage["cache_creation_input_tokens"] == 2
    assert usage["input_tokens"] == total - 5 - 2
    assert seen.messages == [
        {"role": "system", "content": "sys prompt"},
        {"role": "user", "content": "a" * 40},
    ]


def test_models_lists_configured_ids(client):
    with FakeLLMServer(models=["a", "b"]) as srv:
        data = client.get(f"{srv.base_url}/models").json()
    assert [m["id"] for m in data["data"]] == ["a", "b"]


def test_stop_sequence_and_max_tokens_cut_the_reply(client):
    with FakeLLMServer(responder="alpha STOP beta") as srv:
        stopped = chat(client, srv, "x", stop=["STOP"]).json()["choices"][0]
        capped = chat(client, srv, "x", max_tokens=1).json()["choices"][0]
        anth = messages_api(
            client,
            srv,
            {
                "model": "c",
                "max_tokens": 50,
                "stop_sequences": ["STOP"],
                "messages": [{"role": "user", "content": "x"}],
            },
        ).json()
    assert stopped["message"]["content"] == "alpha "
    assert stopped["finish_reason"] == "stop"
    assert capped["message"]["content"] == "alph"
    assert capped["finish_reason"] == "length"
    assert (anth["stop_reason"], anth["stop_sequence"]) == ("stop_sequence", "STOP")


def test_refuses_what_real_servers_refuse(client):
    with FakeLLMServer(api_key="sekrit") as srv:
        no_key = chat(client, srv, "x")
        good = client.post(
            f"{srv.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": "Bearer sekrit"},
        )
        anth_no_version = client.post(
            f"{srv.url}/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": "sekrit"},
        )
        unknown = client.post(f"{srv.url}/v2/nothing", json={})
    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"
    assert good.status_code == 200
    assert anth_no_version.status_code == 400
    assert anth_no_version.json()["type"] == "error"
    assert unknown.status_code == 404


def test_streaming_and_empty_messages_are_400(client, srv):
    assert chat(client, srv, "x", stream=True).status_code == 400
    resp = client.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": []})
    assert resp.status_code == 400


# ---- scripting ----------------------------------------------------------------------------------


def test_rules_come_before_the_queue_and_the_queue_before_the_responder(client):
    with FakeLLMServer(
        ["first", "second"], rules=[("capital", "Paris")], responder="fallback"
    ) as srv:
        texts = [
            chat(client, srv, p).json()["choices"][0]["message"]["content"]
            for p in ["one", "the capital?", "two", "three"]
        ]
    assert texts == ["first", "Paris", "second", "fallback"]


def test_responder_gets_normalised_messages_and_default_echoes(client):
    seen = []

    def responder(messages):
        seen.append(messages)
        return f"{len(messages)} messages"

    with FakeLLMServer() as srv:
        echo = chat(client, srv, "what   is\nthis").json()["choices"][0]["message"]["content"]
        srv.responder = responder
        body = {
            "model": "c",
            "max_tokens": 9,
            "system": "S",
            "messages": [{"role": "user", "content": "u"}],
        }
        text = messages_api(client, srv, body).json()["content"][0]["text"]
    assert echo == "fake reply to: what is this"
    assert text == "2 messages"
    assert seen == [[{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]]


def test_a_raising_responder_becomes_a_500_that_says_so(client):
    def broken(messages):
        raise KeyError("oops")

    with FakeLLMServer(responder=broken) as srv:
        resp = chat(client, srv, "x")
    assert resp.status_code == 500
    assert "KeyError" in resp.json()["error"]["message"]


# ---- faults -------------------------------------------------------------------------------------


def test_fail_next_counts_down_then_answers(client, srv):
    srv.fail_next(Fault.server_error(503), times=2)
    statuses = [chat(client, srv, "x").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in srv.requests] == [503, 503, 200]
    assert [r.fault for r in srv.requests] == ["http", "http", None]


def test_fail_matching_hits_only_matching_prompts(client, srv):
    srv.fail_matching("poison", Fault.bad_request("no thanks"))
    assert chat(client, srv, "fine").status_code == 200
    bad = chat(client, srv, "this is poison")
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "no thanks"
    assert chat(client, srv, "more poison").status_code == 400  # times=None: forever


def test_faults_can_be_queued_like_replies(client):
    with FakeLLMServer([Fault.auth(403), "ok"]) as srv:
        assert chat(client, srv, "x").status_code == 403
        assert chat(client, srv, "x").status_code == 200


def test_rate_limit_headers(client, srv):
    srv.fail_next(Fault.rate_limit(2))
    srv.fail_next(Fault.rate_limit(retry_after_ms=250))
    srv.fail_next(Fault.rate_limit(retry_after_date_s=3))
    seconds = chat(client, srv, "x")
    ms = chat(client, srv, "x")
    before = time.time()
    dated = chat(client, srv, "x")
    assert seconds.status_code == ms.status_code == dated.status_code == 429
    assert seconds.headers["retry-after"] == "2"
    assert ms.headers["retry-after-ms"] == "250"
    when = email.utils.parsedate_to_datetime(dated.headers["retry-after"]).timestamp()
    assert when >= before + 3


def test_body_faults(client, srv):
    srv.fail_next(Fault.not_json())
    srv.fail_next(Fault.no_content())
    html = chat(client, srv, "x")
    empty = chat(client, srv, "x")
    assert html.status_code == 200
    assert html.headers["content-type"] == "text/html"
    with pytest.raises(ValueError):
        html.json()
    assert "choices" not in empty.json()


def test_disconnect_closes_without_an_answer(client, srv):
    srv.fail_next(Fault.disconnect())
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, srv, "x")
    assert chat(client, srv, "x").status_code == 200
    assert srv.requests[0].status == 0


def test_hang_delays_past_a_client_timeout(srv):
    srv.fail_next(Fault.hang(3))
    with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        chat(c, srv, "x")


def test_parse_fault_specs():
    fault, times = parse_fault("500")
    assert (fault.kind, fault.status, times) == ("http", 500, 1)
    fault, times = parse_fault("503*3")
    assert (fault.kind, fault.status, times) == ("http", 503, 3)
    fault, times = parse_fault("429:2*all")
    assert (fault.status, dict(fault.headers), times) == (429, {"retry-after": "2"}, None)
    assert parse_fault("hang:1.5")[0] == Fault.hang(1.5)
    assert parse_fault("not-json")[0].kind == "not_json"
    assert parse_fault("no-content")[0].kind == "no_content"
    assert parse_fault("disconnect")[0].kind == "disconnect"
    assert parse_fault("trickle:0.5")[0] == Fault.trickle(0.5)
    assert parse_fault("huge:1000")[0] == Fault.huge(1000)
    assert parse_fault("negative-usage")[0].kind == "usage"
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("explode")


# ---- hostile servers ----------------------------------------------------------------------------


def test_usage_fault_replaces_usage_fields_of_a_normal_reply(client, srv):
    srv.queue("hi")
    srv.fail_next(Fault.usage(prompt_tokens=-5, completion_tokens="7"))
    data = chat(client, srv, "x").json()
    assert data["choices"][0]["message"]["content"] == "hi"
    assert (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]) == (-5, "7")
    assert data["usage"]["total_tokens"] >= 0  # the fields not named stay as they were


def test_json_body_fault_answers_exactly_that(client, srv):
    srv.fail_next(Fault.json_body({"choices": [{"message": {"content": 42}}]}, status=201))
    resp = chat(client, srv, "x")
    assert (resp.status_code, resp.json()) == (201, {"choices": [{"message": {"content": 42}}]})
    assert srv.requests[0].status == 201


@pytest.mark.parametrize("declare_length", [True, False])
def test_huge_fault_sends_a_valid_body_of_that_size(client, srv, declare_length):
    srv.fail_next(Fault.huge(3 << 20, declare_length=declare_length))
    resp = chat(client, srv, "x")
    assert ("content-length" in resp.headers) is declare_length
    text = resp.json()["choices"][0]["message"]["content"]
    assert text == "x" * (3 << 20)
    srv.fail_next(Fault.huge(1000))
    body = messages_api(
        client, srv, {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert body.json()["content"][0]["text"] == "x" * 1000


def test_trickle_fault_sends_each_byte_in_time_but_the_whole_slowly(srv):
    srv.fail_next(Fault.trickle(0.02))
    started = time.monotonic()
    with httpx.Client(timeout=0.5) as c:  # a per-read timeout: never reached
        resp = chat(c, srv, "x")
    assert resp.json()["choices"][0]["message"]["content"].startswith("fake reply")
    assert time.monotonic() - started > len(resp.content) * 0.02 * 0.5


# ---- concurrency, connections, lifecycle --------------------------------------------------------


async def test_many_concurrent_requests_each_get_their_own_answer():
    n = 120
    with FakeLLMServer(latency_s=0.2) as srv:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            started = time.perf_counter()
            resps = await asyncio.gather(
                *[
                    client.post(
                        f"{srv.base_url}/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                    )
                    for i in range(n)
                ]
            )
            elapsed = time.perf_counter() - started
        seen = srv.requests
    texts = [r.json()["choices"][0]["message"]["content"] for r in resps]
    assert texts == [f"fake reply to: q{i}" for i in range(n)]
    assert sorted(r.last_user for r in seen) == sorted(f"q{i}" for i in range(n))
    assert elapsed >= 0.2  # the latency was applied


def test_requests_are_served_concurrently_not_one_by_one():
    # Every responder waits until all of them are running: a serial server would time out.
    n = 100
    barrier = threading.Barrier(n, timeout=20)

    def responder(messages):
        barrier.wait()
        return "together"

    with FakeLLMServer(responder=responder) as srv:

        def one(i: int, out: list) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})
            conn.request("POST", "/v1/chat/completions", body)
            out[i] = conn.getresponse().status
            conn.close()

        statuses: list = [None] * n
        threads = [threading.Thread(target=one, args=(i, statuses)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.max_in_flight == n
    assert statuses == [200] * n


def test_keep_alive_serves_many_requests_on_one_connection():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with FakeLLMServer() as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        socks = []
        for _ in range(3):
            conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            socks.append(conn.sock)
        conn.close()
        peers = {r.peer for r in srv.requests}
    assert socks[0] is not None
    assert socks[0] is socks[1] is socks[2]
    assert len(peers) == 1


def _listen_backlog(port: int) -> int:
    """The kernel's backlog of the socket listening on ``port`` (``ss`` shows it as Send-Q)."""
    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2) to read a listening socket's backlog")
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[2])  # State Recv-Q Send-Q Local Peer


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 1 << 16


@pytest.mark.parametrize("asked", [None, 2048])
def test_listen_backlog_is_large_by_default_and_configurable(asked):
    # socketserver's default of 5 drops SYNs of a burst of connections (1 s retransmits).
    kwargs = {} if asked is None else {"backlog": asked}
    with FakeLLMServer(**kwargs) as srv:
        backlog = _listen_backlog(srv.port)
    assert backlog == min(asked or 1024, _somaxconn())
    assert backlog >= min(1024, _somaxconn())


def test_accepted_connections_have_tcp_nodelay():
    # A reply is two writes (headers, body): with Nagle on, the second waits for a delayed ACK.
    with FakeLLMServer() as srv, httpx.Client(timeout=10) as c:
        assert chat(c, srv, "x").status_code == 200  # the keep-alive connection stays open
        conns = list(srv._conns)
        flags = [conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for conn in conns]
    assert len(conns) == 1
    assert all(flags)


async def test_a_burst_of_200_connections_is_served_at_once():
    # All 200 connect together and every responder waits until all 200 are running, so each
    # connection was accepted and served concurrently; each answer is its own.
    n = 200
    barrier = threading.Barrier(n, timeout=30)

    def responder(messages):
        barrier.wait()
        return "echo " + messages[-1]["content"]

    with FakeLLMServer(responder=responder) as srv:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            resps = await asyncio.gather(*[chat_async(client, srv, f"q{i}") for i in range(n)])
        peers = {r.peer for r in srv.requests}
        most = srv.max_in_flight
    assert [r.status_code for r in resps] == [200] * n
    assert [r.json()["choices"][0]["message"]["content"] for r in resps] == [
        f"echo q{i}" for i in range(n)
    ]
    assert len(peers) == n
    assert most == n


async def chat_async(client: httpx.AsyncClient, srv: FakeLLMServer, prompt: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    return await client.post(f"{srv.base_url}/chat/completions", json=body)


def test_stop_ends_every_thread_even_with_idle_and_hanging_connections():
    before = set(threading.enumerate())
    srv = FakeLLMServer().start()
    idle = httpx.Client(timeout=120)
    chat(idle, srv, "warm")  # leaves an idle keep-alive connection open
    srv.fail_next(Fault.hang(60))
    outcome: list = []

    def hanging() -> None:
        try:
            with httpx.Client(timeout=120) as c:
                outcome.append(chat(c, srv, "hang").status_code)
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    waiter = threading.Thread(target=hanging)
    waiter.start()
    srv.wait_for_requests(2)
    srv.stop()
    waiter.join(timeout=10)
    idle.close()
    assert not waiter.is_alive()
    assert outcome == ["RemoteProtocolError"]  # the hanging request was dropped, not answered
    left = [t.name for t in set(threading.enumerate()) - before]
    assert not [n for n in left if "process_request" in n or n == "fake-llm-server"]


def test_wait_for_requests_returns_when_enough_arrived(client, srv):
    chat(client, srv, "a")
    assert len(srv.wait_for_requests(1, timeout_s=5)) == 1
    assert len(srv.wait_for_requests(2, timeout_s=0.1)) == 1  # timed out: what there is


def test_jsonl_log_has_one_line_per_request(tmp_path, client):
    log = tmp_path / "requests.jsonl"
    with FakeLLMServer(["ok"], log_path=log) as srv:
        srv.fail_next(Fault.server_error())
        chat(client, srv, "first")
        chat(client, srv, "second")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["status"], x["fault"], x["reply"]) for x in lines] == [
        (500, "http", None),
        (200, None, "ok"),
    ]
    assert lines[1]["body"]["messages"][0]["content"] == "second"
    assert lines[1]["path"] == "/v1/chat/completions"


# ---- as a process -------------------------------------------------------------------------------


def _spawn(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "recursa.testing.fake_server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    return proc.returncode, err


def test_process_mode_prints_its_url_serves_and_logs(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps({"rules": [{"match": "boom", "fault": "503"}], "replies": ["from script"]})
    )
    proc, url = _spawn(
        "--latency", "0.05", "--log", str(log), "--script", str(script),
        "--rule", "capital", "Paris", "--fail", "500*1",
    )  # fmt: skip
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with httpx.Client(timeout=10) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "capital?"}]}
            statuses = [c.post(f"{url}/chat/completions", json=body).status_code]
            statuses.append(c.post(f"{url}/chat/completions", json=body).status_code)
            body["messages"][0]["content"] = "go boom"
            statuses.append(c.post(f"{url}/chat/completions", json=body).status_code)
            body["messages"][0]["content"] = "plain"
            last = c.post(f"{url}/chat/completions", json=body).json()
    finally:
        code, err = _finish(proc)
    assert statuses == [500, 200, 503]
    assert last["choices"][0]["message"]["content"] == "from script"
    assert code == 0
    assert err == ""  # no warnings (a double import under -m would print one)
    assert [json.loads(x)["status"] for x in log.read_text().splitlines()] == [500, 200, 503, 200]


def test_process_mode_takes_a_backlog():
    proc, url = _spawn("--backlog", "300")
    try:
        backlog = _listen_backlog(int(url.rsplit(":", 1)[1].split("/")[0]))
    finally:
        code, _ = _finish(proc)
    assert backlog == min(300, _somaxconn())
    assert code == 0


def test_process_mode_rejects_a_bad_fault_spec():
    proc = subprocess.run(
        [sys.executable, "-m", "recursa.testing.fake_server", "--fail", "explode"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert "unknown fault" in proc.stderr
