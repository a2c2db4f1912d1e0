"""Adversarial review, issue 13: attacks on ``recursa serve``, ``recursa mcp`` and ``recursa ask``
from their clients and from the models behind them, each asserting its fix.

- keys and models: a client picks only configured or allowed models, and each provider's key
  goes only to that provider's URL (``--base-url`` is per provider; ``litellm:`` included);
- replies built to make parsing quadratic parse in linear time and never stall the server;
- files are sized before they are read (a 6 GB sparse file, FIFOs, devices, a FIFO .gitignore);
- lone surrogates and invalid UTF-8 are repaired or refused with a 400 / one-line error;
- request JSON nested without end is a 400;
- journals, traces, stored runs and the call cache are private to the user (0700 / 0600);
- answers and progress reach a terminal without control sequences, pipes byte-exact.

Servers run in-process on 127.0.0.1 (uvicorn in a thread); the fake model servers are
:class:`recursa.testing.FakeLLMServer` on loopback too. Bounds on time are generous: they
separate "linear" from "stalled for minutes", not fast from slow.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from recursa.cli import main  # noqa: E402
from recursa.cli.options import LimitOptions  # noqa: E402
from recursa.cli.serve import base_urls, server_config  # noqa: E402
from recursa.context import load_context  # noqa: E402
from recursa.errors import ConfigError, ContextError  # noqa: E402
from recursa.parsing import find_code_blocks, find_final, strip_code_blocks  # noqa: E402
from recursa.server.config import ServerConfig  # noqa: E402
from recursa.server.openai_api import create_app  # noqa: E402
from recursa.testing import FakeLLMServer  # noqa: E402

from .test_server import ECHO, write_script  # noqa: E402

OK = "```repl\nFINAL('ok')\n```"
ANTHROPIC_SECRET = "sk-ant-planted-4f1d9c"
OPENAI_SECRET = "sk-oai-planted-77e2b0"


# ---- helpers ---------------------------------------------------------------------------------


def wait_until(check: Callable[[], object], what: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class LiveServer:
    """``recursa serve``'s app under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        cfg = uvicorn.Config(
            create_app(config),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            timeout_graceful_shutdown=5,
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

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def post(self, body: bytes | dict, timeout: float = 120) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        return httpx.post(
            f"{self.url}/v1/chat/completions", content=data, headers=headers, timeout=timeout
        )

    def health(self, timeout: float = 10) -> dict:
        return httpx.get(f"{self.url}/health", timeout=timeout).json()

    def summary(self, run_id: str) -> dict:
        return json.loads((self.config.stored_runs_dir / run_id / "summary.json").read_text())


@contextmanager
def live(**config) -> Iterator[LiveServer]:
    with LiveServer(ServerConfig(**config)) as server:
        yield server


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def secrets_in(srv: FakeLLMServer) -> str:
    """Everything the fake server was sent in headers, as one string to search."""
    return json.dumps([r.headers for r in srv.requests])


# ---- 3. a client picks only configured or allowed models; keys go to their own URL ---------


def test_a_client_can_name_only_configured_models(tmp_path):
    echo = write_script(tmp_path, "echo", default=ECHO)
    with live(model=echo, runs_dir=tmp_path / "runs") as srv:
        for name in (
            "rlm:anthropic:claude-x",
            "rlm:openai:gpt-x",
            "rlm:gpt-x",  # a bare name the registry would send to openai
            "rlm:OpenAI:gpt-x",
            "rlm:local:/etc/passwd",  # a file on the server, loaded as model weights
            "rlm:litellm:openai/gpt-x",  # litellm picks the key from the model name
            f"rlm:scripted:{tmp_path / 'echo.json'}x",
        ):
            reply = srv.post({"model": name, "messages": [user("q")]})
            assert reply.status_code == 404, (name, reply.text)
            assert reply.json()["error"]["code"] == "model_not_found"
        # The configured model may still be named in full.
        same = srv.post({"model": f"rlm:{echo}", "messages": [user("hello")]})
        assert same.status_code == 200 and same.json()["choices"][0]["message"]["content"]
        assert srv.health()["active_runs"] == 0


def test_allowed_patterns_never_open_local_files_or_scripted_models(tmp_path):
    cfg = ServerConfig(model="openai:gpt-5", allowed_models=("openai:gpt-5*", "anthropic:*"))
    assert cfg.choose_model("rlm:openai:gpt-5-mini").root == "openai:gpt-5-mini"
    assert cfg.choose_model("rlm:gpt-5-nano").root == "openai:gpt-5-nano"
    for name in ("rlm:openai:o3", "rlm:local:/tmp/x.gguf", "rlm:litellm:openai/gpt-5", "rlm:x:y"):
        with pytest.raises(ConfigError):
            cfg.choose_model(name)
    everything = ServerConfig(model="openai:gpt-5", allowed_models=("*:*",))
    with pytest.raises(ConfigError):
        everything.choose_model("rlm:scripted:/etc/passwd")
    with pytest.raises(ConfigError):  # --fixed-models overrules the patterns
        ServerConfig(allowed_models=("*:*",), open_models=False).choose_model("rlm:openai:x")


@pytest.mark.parametrize("direction", ["openai-url, anthropic picked", "anthropic-url, openai"])
def test_a_base_url_never_receives_another_providers_key(direction, tmp_path, monkeypatch):
    with FakeLLMServer(responder=OK) as proxy, FakeLLMServer(responder=OK) as home:
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
        if direction.startswith("openai"):
            # The operator's --base-url is for its OpenAI-compatible server; a client asks
            # for an Anthropic model, whose key must go to Anthropic's own URL only.
            monkeypatch.setenv("ANTHROPIC_BASE_URL", home.url)
            model, url, allow, pick, secret = (
                "openai:fake-model",
                proxy.base_url,
                "anthropic:*",
                "anthropic:claude-x",
                ANTHROPIC_SECRET,
            )
        else:
            monkeypatch.setenv("OPENAI_BASE_URL", home.base_url)
            model, url, allow, pick, secret = (
                "anthropic:claude-x",
                proxy.url,
                "openai:*",
                "openai:gpt-x",
                OPENAI_SECRET,
            )
        limits = LimitOptions(
            max_iterations=3,
            max_depth=1,
            max_cost=None,
            max_calls=None,
            max_tokens=None,
            timeout=120,
            cell_timeout=60,
        )
        config = server_config(
            model=model,
            sub_model=None,
            base_url=[url],
            sandbox="process",
            limits=limits,
            max_runs=2,
            no_store=True,
            keep_runs=10,
            allowed_models=(allow,),
        )
        with LiveServer(config) as srv:
            reply = srv.post({"model": f"rlm:{pick}", "messages": [user("q")]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "ok"
            # The configured model still uses the operator's URL.
            assert srv.post({"model": "rlm", "messages": [user("q")]}).status_code == 200
        assert home.completions and secret in secrets_in(home)
        assert proxy.completions, "the configured model should have used --base-url"
        assert secret not in secrets_in(proxy)


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="no litellm extra")
def test_litellm_models_through_serve_need_an_allow_pattern_and_get_no_foreign_url(
    tmp_path, monkeypatch
):
    with FakeLLMServer(responder=OK) as proxy, FakeLLMServer(responder=OK) as openai_home:
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
        monkeypatch.setenv("OPENAI_BASE_URL", openai_home.base_url)
        base = {"model": "anthropic:claude-x", "base_urls": {"anthropic": proxy.url}}
        body = {"model": "rlm:litellm:openai/fake-model", "messages": [user("q")]}
        with live(**base, store_runs=False) as srv:
            refused = srv.post(body)
            assert refused.status_code == 404 and "--allow-model" in refused.text
        with live(**base, store_runs=False, allowed_models=("litellm:*",)) as srv:
            reply = srv.post(body, timeout=300)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "ok"
        # litellm resolved the key and the URL of the provider in the model name (openai);
        # the --base-url given for anthropic was never handed to it.
        assert OPENAI_SECRET in secrets_in(openai_home)
        assert not proxy.requests


def test_base_url_flags_are_per_provider(monkeypatch, capsys):
    assert base_urls(["http://vllm:8000/v1"], "openai:m") == {"openai": "http://vllm:8000/v1"}
    assert base_urls(["http://a/v1", "Anthropic=http://b"], "ollama:q") == {
        "ollama": "http://a/v1",
        "anthropic": "http://b",
    }
    with pytest.raises(ConfigError):
        base_urls(["http://a", "openai=http://b"], "openai:m")
    for bad in ({"base_url": "http://x"}, {"api_key": "sk-x"}):
        with pytest.raises(ConfigError):  # one URL or key for every provider is the leak
            ServerConfig(rlm_options=bad)
    with pytest.raises(ConfigError):
        ServerConfig(allowed_models=("gpt-*",))  # a pattern names a provider
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = ["serve", "--model", "openai:x", "--fixed-models", "--allow-model", "openai:*"]
    assert main(args) == 2
    assert "--allow-model" in capsys.readouterr().err


# ---- 7. replies cannot make parsing quadratic or stall the server ---------------------------

MB = 1_000_000
HOSTILE = {
    "unclosed fences": "```x\n" * (MB // 5),
    "unclosed repl fences": "```repl y\n" * (MB // 10),
    "unclosed FINAL": "FINAL(\n" * (MB // 7),
    "unclosed quoted FINAL": 'FINAL("\n' * (MB // 8),
    "fences and FINALs": "```repl\nFINAL(\n" * (MB // 16),
    "nested parentheses": "FINAL(" + "(" * MB,
    "escapes before a far quote": "FINAL('" + "\\a" * (MB // 2),
    "closed empty blocks": "```\n```\n" * (MB // 16),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_megabyte_of_hostile_reply_parses_in_linear_time(name):
    text = HOSTILE[name]
    started = time.perf_counter()
    find_code_blocks(text)
    find_final(text)
    strip_code_blocks(text)
    # Linear work is well under a second here; the quadratic parser took 42 s on 112 KB.
    assert time.perf_counter() - started < 5.0


# The grammar the parser implements, written as the old whole-reply regexes: slow on hostile
# input, exact on small input, so the linear parser is checked against it.
_REF_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n(?P<body>.*?)^[ \t]*```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_REF_TAIL = re.compile(
    r"^[ \t]*```[ \t]*(?:repl|python|py|python3)[ \t]*\n(?P<body>(?:(?!^[ \t]*```).)*)\Z",
    re.DOTALL | re.MULTILINE | re.IGNORECASE,
)
_REF_ANY = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)


def _ref_blocks(text: str) -> list[str]:
    import textwrap

    out, end = [], 0
    for m in _REF_FENCE.finditer(text):
        end = m.end()
        if m.group("lang").lower() in {"repl", "python", "py", "python3"}:
            out.append(textwrap.dedent(m.group("body")).strip("\n"))
    tail = _REF_TAIL.search(text, end)
    if tail:
        out.append(textwrap.dedent(tail.group("body")).strip("\n"))
    return [c for c in out if c.strip()]


def _ref_strip(text: str) -> str:
    return _REF_TAIL.sub("", _REF_ANY.sub("", text))


PIECES = [
    "```",
    "```repl",
    "```python",
    "```json",
    "  ```",
    "``` ",
    "```PY",
    "````",
    "\t```repl",
    "```repl x",
    "x = 1",
    "FINAL(",
    "FINAL(42)",
    "FINAL('a)')",
    "FINAL_VAR(x)",
    ")",
    "(",
    "'",
    '"',
    "It's",
    '"""',
    "\\",
    "```\r",
    "",
]


def test_the_linear_parser_reads_replies_as_the_reference_grammar_does():
    rng = random.Random(13)
    for _ in range(5000):
        text = "".join(
            rng.choice(PIECES) + rng.choice(["\n", "\n", " ", ""]) for _ in range(rng.randint(0, 9))
        )
        assert find_code_blocks(text) == _ref_blocks(text), text
        assert strip_code_blocks(text) == _ref_strip(text), text


# The server under test as its own process, so that a stalled server (a regex holding the GIL)
# cannot also stall the test that is timing it.
SERVE = [sys.executable, "-m", "recursa", "serve"]


@contextmanager
def serve_process(*args: str) -> Iterator[str]:
    """``recursa serve ARGS --port 0`` as a process; yields its base URL; killed on the way out."""
    cmd = [*SERVE, "--port", "0", "--log-level", "info", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = []
        for line in proc.stderr:  # ends at EOF if the server dies
            seen.append(line)
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                break
        else:
            pytest.fail("the server did not start:\n" + "".join(seen))
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield m.group(1)
    finally:
        proc.kill()
        proc.wait(60)


def test_a_hostile_reply_does_not_stall_the_server(tmp_path):
    hostile = write_script(tmp_path, "hostile", default="```x\n" * (MB // 5))
    with serve_process("--model", hostile, "--no-store") as url:
        body = {
            "model": "rlm",
            "messages": [user("anything")],
            "recursa": {"max_iterations": 2, "timeout_s": 60},
        }
        answer: dict = {}

        def ask() -> None:
            answer["r"] = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)

        worker = threading.Thread(target=ask, daemon=True)
        worker.start()
        # /health answers while the run parses its replies (it lives on the same loop).
        while worker.is_alive():
            assert httpx.get(f"{url}/health", timeout=15).json()["status"] == "ok"
            time.sleep(0.2)
        reply = answer["r"]
        assert reply.status_code == 200, reply.text
        assert reply.json()["recursa"]["stop_reason"] == "max_iterations"


# ---- 10. files are sized before they are read ------------------------------------------------


@pytest.fixture
def hostile_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("The code word is walnut.\n" + "filler\n" * 400)
    (root / "more.txt").write_text("more\n" * 4000)
    with open(root / "huge.txt", "wb") as f:
        f.truncate(6 * 1024**3)  # 6 GB, sparse: costs no disk, would cost 6 GB of memory
    os.mkfifo(root / "pipe")
    return root


def _in_thread(fn: Callable[[], object], deadline_s: float = 60) -> object:
    """Run ``fn`` with a deadline, so an attack that hangs fails instead of stalling."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline_s)
    assert not thread.is_alive(), "loading hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_load_context_checks_sizes_and_kinds_before_reading(hostile_root):
    with pytest.raises(ContextError) as err:
        _in_thread(lambda: load_context(hostile_root / "huge.txt"))
    assert "--max-file-mb" in str(err.value) and "max_file_bytes" in str(err.value)
    ctx = _in_thread(lambda: load_context(hostile_root))
    assert sorted(ctx.value) == ["more.txt", "notes.txt"]
    warnings = " ".join(ctx.warnings)
    assert "huge.txt" in warnings and "--max-file-mb" in warnings and "pipe" in warnings
    with pytest.raises(ContextError) as err:
        _in_thread(lambda: load_context(hostile_root, max_context_bytes=5000))
    assert "--max-context-mb" in str(err.value) and "max_context_bytes" in str(err.value)
    for device in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(ContextError, match="not a regular file"):
            _in_thread(lambda d=device: load_context(Path(d)))


def test_a_fifo_or_huge_gitignore_does_not_hang_a_folder_load(tmp_path):
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    os.mkfifo(root / ".gitignore")  # nobody ever writes to it
    with open(root / "sub" / ".gitignore", "wb") as f:
        f.truncate(3 * 1024**3)
    ctx = _in_thread(lambda: load_context(root))
    assert sorted(ctx.value) == ["a.txt", "sub/b.txt"]
    assert sum("rules were not applied" in w for w in ctx.warnings) == 2


async def test_mcp_refuses_big_files_and_totals_before_reading(hostile_root, tmp_path):
    pytest.importorskip("mcp")
    from mcp import Client, StdioServerParameters

    files = "```repl\nFINAL(repr(sorted(context)) if isinstance(context, dict) else 'text')\n```"
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": files}))
    env = {k: os.environ[k] for k in ("RECURSA_DATA_DIR", "RECURSA_CACHE_DIR") if k in os.environ}
    args = ["-m", "recursa", "mcp", "--root", str(hostile_root), "--model", f"scripted:{script}"]
    args += ["--max-file-mb", "1", "--max-context-mb", "0.02"]  # 20 KiB in all
    params = StdioServerParameters(command=sys.executable, args=args, env=env)
    async with Client(params, read_timeout_seconds=120) as client:
        started = time.monotonic()
        huge = await client.call_tool("ask", {"question": "files?", "paths": ["huge.txt"]})
        assert huge.is_error and "--max-file-mb" in huge.content[0].text
        assert time.monotonic() - started < 60  # reading 6 GB first took far longer
        pipe = await client.call_tool("ask", {"question": "files?", "paths": ["pipe"]})
        assert pipe.is_error and "not a regular file" in pipe.content[0].text
        both = await client.call_tool(
            "ask", {"question": "files?", "paths": ["notes.txt", "more.txt"]}
        )
        assert both.is_error and "--max-context-mb" in both.content[0].text
        folder = await client.call_tool("ask", {"question": "files?", "paths": ["notes.txt"]})
        assert not folder.is_error and folder.structured_content["answer"] == "text"


# ---- 17. lone surrogates and invalid UTF-8 --------------------------------------------------


def test_lone_surrogates_in_a_request_are_replaced_and_the_run_is_stored(tmp_path):
    echo = write_script(tmp_path, "echo", default=ECHO)
    with live(model=echo, runs_dir=tmp_path / "runs") as srv:
        raw = b'{"model": "rlm", "messages": [{"role": "user", "content": "a\\ud800b\\udfffc"}]}'
        reply = srv.post(raw)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == repr("a\ufffdb\ufffdc")
        summary = srv.summary(reply.headers["x-recursa-run-id"])
        assert summary["status"] == "final" and summary["question"] == "a\ufffdb\ufffdc"
        stream = httpx.post(
            f"{srv.url}/v1/chat/completions",
            content=raw[:-1] + b', "stream": true}',
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert stream.status_code == 200 and "[DONE]" in stream.text
        assert "\\ufffd" in stream.text or "\ufffd" in stream.text


def test_a_lone_surrogate_in_the_answer_cannot_break_the_response(tmp_path):
    odd = write_script(tmp_path, "odd", default="```repl\nFINAL('x\\ud800y')\n```")
    with live(model=odd, runs_dir=tmp_path / "runs") as srv:
        reply = srv.post({"model": "rlm", "messages": [user("q")]})
        assert reply.status_code == 200, reply.text
        # Repaired on the way (by the sandbox protocol or by the response itself).
        assert reply.json()["choices"][0]["message"]["content"] in ("x?y", "x\ufffdy")
        summary = srv.summary(reply.headers["x-recursa-run-id"])
        assert summary["status"] == "final"
        streamed = srv.post({"model": "rlm", "messages": [user("q")], "stream": True})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
    # Whatever reaches a response or an SSE event with a lone surrogate is written, not a 500.
    from recursa.server.openai_api import _JSON, _data

    assert _JSON({"answer": "x\ud800y"}).body == '{"answer":"x\ufffdy"}'.encode()
    assert _data({"answer": "x\udfffy"}).encode("utf-8") == '{"answer":"x\ufffdy"}'.encode()


def test_a_body_that_is_not_utf8_is_a_400(tmp_path):
    echo = write_script(tmp_path, "echo", default=ECHO)
    with live(model=echo, store_runs=False) as srv:
        reply = srv.post(b'{"model": "rlm", "messages": [{"role": "user", "content": "\xff"}]}')
        assert reply.status_code == 400
        assert reply.json()["error"]["type"] == "invalid_request_error"


def test_cli_question_with_invalid_utf8_is_answered_not_a_traceback(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")
    with FakeLLMServer(responder=OK) as srv:
        cmd = [sys.executable, "-m", "recursa", "ask", "-c", str(doc), "-m", "openai:fake"]
        cmd += ["--base-url", srv.base_url, "--no-journal", b"what \xff\xfe is it?"]
        proc = subprocess.run(cmd, capture_output=True, timeout=300)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 0, err
        assert proc.stdout == b"ok\n" and "Traceback" not in err
        assert "not UTF-8" in err
        assert "what \ufffd\ufffd is it?" in json.dumps(
            srv.completions()[0].body, ensure_ascii=False
        )


# ---- 18. nesting -----------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_not_a_500(tmp_path):
    echo = write_script(tmp_path, "echo", default=ECHO)
    with live(model=echo, store_runs=False) as srv:
        deep = b"[" * 200_000 + b"]" * 200_000
        nested: object = "x"
        for _ in range(500):
            nested = {"a": nested}
        moderate = {"model": "rlm", "messages": [user("q")], "tools": [nested]}
        for body in (deep, moderate):
            reply = srv.post(body)
            assert reply.status_code == 400, reply.text[:200]
            assert "nested" in reply.json()["error"]["message"]
        assert srv.health()["status"] == "ok"
        fine = srv.post({"model": "rlm", "messages": [user("still fine")]})
        assert fine.status_code == 200


# ---- 19. stored data is private -------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_stored_server_runs_are_private(tmp_path, umask_022):
    echo = write_script(tmp_path, "echo", default=ECHO)
    runs = tmp_path / "fresh" / "server-runs"
    with live(model=echo, runs_dir=runs) as srv:
        reply = srv.post({"model": "rlm", "messages": [user("secret prompt")]})
        run_id = reply.headers["x-recursa-run-id"]
    assert _mode(tmp_path / "fresh") == 0o700 and _mode(runs) == 0o700
    assert _mode(runs / run_id) == 0o700
    for name in ("summary.json", "trace.jsonl"):
        assert _mode(runs / run_id / name) == 0o600, name


def test_journals_traces_and_the_call_cache_are_private(tmp_path, monkeypatch, umask_022):
    data, cache = tmp_path / "new" / "data", tmp_path / "new" / "cache"
    monkeypatch.setenv("RECURSA_DATA_DIR", str(data))
    monkeypatch.setenv("RECURSA_CACHE_DIR", str(cache))
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")
    model = write_script(tmp_path, "ok", default=OK)
    trace = tmp_path / "out" / "t.jsonl"
    args = ["ask", "-q", "--cache", "-c", str(doc), "-m", model, "--trace", str(trace), "q"]
    assert main(args) == 0
    (run,) = (data / "runs").iterdir()
    for folder in (tmp_path / "new", data, data / "runs", run, cache):
        assert _mode(folder) == 0o700, folder
    files = [*run.iterdir(), *cache.iterdir(), trace]
    assert any(f.name == "journal.sqlite" for f in files)
    assert any(f.name == "calls.sqlite" for f in files)
    for f in files:
        assert _mode(f) == 0o600, f


# ---- 20. terminals get no control sequences from models ------------------------------------

NASTY = "before\x1b]52;c;cGF3bmVk\x07\x1b]0;owned\x1b\\\x1b[2J\x9b31m\rafter"


def _run_on_pty(cmd: list[str]) -> bytes:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(300) == 0
        return out
    finally:
        os.close(master)


def test_answers_reach_a_terminal_without_control_sequences(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")
    model = write_script(tmp_path, "nasty", default=f"```repl\nFINAL({NASTY!r})\n```")
    cmd = [sys.executable, "-m", "recursa", "ask", "-q", "--no-journal", "-c", str(doc)]
    cmd += ["-m", model, "q"]
    shown = _run_on_pty(cmd).decode("utf-8", "replace")
    assert "before" in shown and "after" in shown
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "52;" not in shown and "owned" not in shown
    piped = subprocess.run(cmd, capture_output=True, timeout=300)
    assert piped.returncode == 0
    assert piped.stdout == (NASTY + "\n").encode("utf-8")  # byte-exact into a pipe
    as_json = _run_on_pty([*cmd[:-1], "--json", "q"]).decode("utf-8", "replace")
    assert "\x9b" not in as_json and "\x1b" not in as_json


def test_progress_display_shows_no_control_sequences():
    from rich.console import Console

    from recursa.cli.progress import LiveProgress, terminal_safe
    from recursa.trace.spans import Span

    assert terminal_safe("a\tb\nc" + NASTY) == "a\tb\ncbeforeafter"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200)
    progress = LiveProgress(console)
    run = Span(kind="run", name="run", attrs={"depth": 0, "model": "m\x1b]0;title\x07"})
    it = Span(kind="iteration", name="iteration 1", parent_id=run.id, attrs={"index": 1})
    cell = Span(kind="cell", name="cell 1", parent_id=it.id, attrs={"code": f"print('{NASTY}')"})
    sub = Span(kind="sub_call", name="q", parent_id=cell.id, attrs={"fn": "llm\x1b[2J", "n": 2})
    for span in (run, it, cell, sub):
        progress.on_start(span)
    console.print(progress.__rich__())
    text = out.getvalue()
    assert "before" in text and "llm" in text
    assert "\x1b]" not in text and "\x07" not in text and "\x1b[2J" not in text


def test_trace_show_strips_terminal_escapes_from_model_text(tmp_path):
    """A trace holds model text; `recursa trace show --full` must not replay its escapes."""
    from recursa.trace.show import span_label
    from recursa.trace.spans import Span

    span = Span(
        kind="cell",
        name="cell 1",
        start=0.0,
        end=1.0,
        attrs={"code": "print(1)\x1b]52;c;ZXZpbA==\x07", "stdout": "hi\x1b]0;pwned\x07\x1b[2J"},
    )
    label = span_label(span, full=True)
    assert "\x1b" not in label and "\x07" not in label
    assert "hi" in label
