"""The local backend without a real model: resolution, routing, usage, cancellation, limits."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

import recursa.lm.local as local
from recursa.embedded.llama_context import StopAfterCode
from recursa.embedded.runtime import CallResult, LoadedModel, LoadSettings
from recursa.errors import ConfigError, LMError, LMRequestError, MissingDependencyError
from recursa.lm.base import ProviderOptions
from recursa.lm.registry import DEFAULT_MODEL, default_model_spec, resolve_model
from recursa.prompts import STRICT, profile_for
from recursa.types import LMSettings, Message

from .waiting import wait_until_async


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def llama_installed(monkeypatch):
    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: True)


class FakeModel:
    """Stands in for LoadedModel: records calls, answers from a script, runs on one thread."""

    def __init__(self, block: threading.Event | None = None) -> None:
        self.executor = ThreadPoolExecutor(1)
        self.calls: list[tuple[str, list[dict[str, str]], dict]] = []
        self.block = block
        self.aborted = threading.Event()

    def run(self, slot, messages, **kw) -> CallResult:
        self.calls.append((slot, messages, kw))
        # A long evaluation: wait until told to abort.
        if self.block is not None and kw["abort"].wait(5):
            self.aborted.set()
            return CallResult("", 10, 0, 0, "cancelled")
        return CallResult("```repl\nprint(1)\n```", 120, 100, 7, "stop")


@pytest.fixture
def fake(monkeypatch, llama_installed, gguf):
    model = FakeModel()
    monkeypatch.setattr(local.LocalLM, "_loaded", lambda self: model)
    lm = local.LocalLM(str(gguf))
    yield lm, model
    model.executor.shutdown()


# ---- resolution -----------------------------------------------------------------------------


def test_default_model_is_local_unless_recursa_model_is_set():
    assert DEFAULT_MODEL == "local"
    assert default_model_spec({}) == "local"
    assert default_model_spec({"RECURSA_MODEL": "openai:gpt-5-mini"}) == "openai:gpt-5-mini"
    assert default_model_spec({"RECURSA_MODEL": ""}) == "local"


def test_registry_builds_a_local_lm_for_a_gguf_path(llama_installed, gguf):
    lm = resolve_model(f"local:{gguf}", env={})
    assert isinstance(lm, local.LocalLM)
    assert lm.name == "local:tiny"
    assert lm.path == gguf.resolve()
    assert lm.capabilities.chunk_chars == local.DEFAULT_CHUNK_CHARS
    assert profile_for(lm.name) is STRICT


def test_local_means_the_default_catalogue_model(llama_installed, tmp_path, monkeypatch):
    monkeypatch.setattr("recursa.embedded.missing_parts", lambda spec: [])  # parts "installed"
    lm = resolve_model("local", env={"RECURSA_CACHE_DIR": str(tmp_path)})
    assert lm.name == "local:qwen2.5-coder-1.5b"
    assert lm.path == tmp_path / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    small = resolve_model("local:qwen2.5-coder-0.5b", env={"RECURSA_CACHE_DIR": str(tmp_path)})
    assert small.name == "local:qwen2.5-coder-0.5b"


def test_missing_llama_cpp_names_the_install_command(monkeypatch, gguf):
    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: False)
    with pytest.raises(MissingDependencyError) as info:
        resolve_model(f"local:{gguf}", env={})
    assert "pip install 'recursa[local]'" in str(info.value)
    assert info.value.extra == "local"


def test_env_tunes_threads_and_window(llama_installed, gguf):
    env = {"RECURSA_THREADS": "1", "RECURSA_LOCAL_CTX": "4096"}
    lm = local.local_from_env(str(gguf), ProviderOptions(), env)
    assert (lm._threads, lm._n_ctx) == (1, 4096)
    with pytest.raises(ConfigError, match="RECURSA_THREADS"):
        local.local_from_env(str(gguf), ProviderOptions(), {"RECURSA_THREADS": "two"})
    with pytest.raises(ConfigError):
        local.LocalLM(str(gguf), threads=0)


def test_importing_recursa_does_not_import_llama_cpp():
    code = (
        "import sys, recursa\n"
        "from recursa.lm.registry import available_providers\n"
        "import recursa.lm.local, recursa.embedded, recursa.cli\n"
        "assert 'local' in available_providers()\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not sys.platform.startswith("linux"),
    reason="needs llama_cpp, and /proc to find libgomp",
)
def test_llama_cpp_waits_passively_and_the_environment_is_left_as_it_was():
    # libgomp reads OMP_WAIT_POLICY once, when llama.cpp's libraries load it; recursa sets it
    # for that import only. A passive policy shows as a spin count of 0.
    code = (
        "import ctypes, os\n"
        "from recursa.embedded.runtime import import_llama_cpp\n"
        "import_llama_cpp()\n"
        "if 'libgomp' not in open('/proc/self/maps').read():\n"
        "    raise SystemExit(3)\n"
        "print('OMP_WAIT_POLICY' in os.environ, flush=True)\n"
        "ctypes.CDLL('libgomp.so.1').omp_display_env(1)\n"  # to stderr
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    if proc.returncode == 3:
        pytest.skip("this llama.cpp build does not use OpenMP")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr


# ---- calls ----------------------------------------------------------------------------------


async def test_a_conversation_goes_to_the_warm_context(fake):
    lm, model = fake
    messages = [Message.system("rules"), Message.user("question")]
    completion = await lm.complete(messages)
    slot, sent, kw = model.calls[0]
    assert slot == "conversation"
    assert sent == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "question"},
    ]
    assert kw["max_tokens"] == local.DEFAULT_ROOT_MAX_TOKENS
    assert kw["temperature"] == 0.0
    assert kw["code_turn"] is True
    assert completion.text.startswith("```repl")
    assert completion.usage.input_tokens == 120
    assert completion.usage.cached_tokens == 100
    assert completion.usage.output_tokens == 7
    assert completion.usage.calls == 1
    assert completion.model == lm.name


async def test_a_single_prompt_goes_to_the_scratch_context(fake):
    lm, model = fake
    settings = LMSettings(temperature=0.5, max_output_tokens=64, stop=("END",), seed=3)
    await lm.complete([Message.user("summarise this chunk")], settings)
    slot, _, kw = model.calls[0]
    assert slot == "scratch"
    assert kw["max_tokens"] == 64
    assert kw["temperature"] == 0.5
    assert kw["stop"] == ["END"]
    assert kw["seed"] == 3
    assert kw["code_turn"] is False


async def test_calls_are_serialised_on_one_worker(fake):
    lm, model = fake
    seen: list[str] = []
    original = model.run

    def run(slot, messages, **kw):
        seen.append(threading.current_thread().name)
        return original(slot, messages, **kw)

    model.run = run
    await asyncio.gather(*(lm.complete([Message.user(f"p{i}")]) for i in range(5)))
    assert len(seen) == 5 and len(set(seen)) == 1


async def test_a_cancelled_call_aborts_the_evaluation(monkeypatch, llama_installed, gguf):
    model = FakeModel(block=threading.Event())
    monkeypatch.setattr(local.LocalLM, "_loaded", lambda self: model)
    lm = local.LocalLM(str(gguf))
    task = asyncio.create_task(lm.complete([Message.user("long prompt")]))
    await wait_until_async(lambda: model.calls, "the evaluation to start", poll_s=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(model.aborted.wait, 5)
    model.executor.shutdown()


async def test_a_timeout_becomes_an_lm_timeout(monkeypatch, llama_installed, gguf):
    from recursa.errors import LMTimeoutError

    model = FakeModel(block=threading.Event())
    monkeypatch.setattr(local.LocalLM, "_loaded", lambda self: model)
    lm = local.LocalLM(str(gguf))
    with pytest.raises(LMTimeoutError):
        await lm.complete([Message.user("x")], LMSettings(timeout_s=0.05))
    assert await asyncio.to_thread(model.aborted.wait, 5)
    model.executor.shutdown()


async def test_llama_failures_become_lm_errors(fake):
    lm, model = fake

    def boom(*_a, **_k):
        raise RuntimeError("llama_decode returned 1")

    model.run = boom
    with pytest.raises(LMError, match="the local model failed"):
        await lm.complete([Message.user("x")])


async def test_no_messages_is_a_config_error(fake):
    lm, _ = fake
    with pytest.raises(ConfigError):
        await lm.complete([])


# ---- runtime pieces that need no weights ----------------------------------------------------


class _Detok:
    """Detokenizes 'tokens' that are indexes into a list of strings."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def detokenize(self, tokens, prev_tokens=None, special=False) -> bytes:
        return "".join(self.pieces[t] for t in tokens).encode()


@pytest.mark.parametrize(
    ("pieces", "stops_at"),
    [
        (["```", "repl", "\n", "x = 1", "\n", "```", "\n", "more"], 6),
        (["```", "python", "\n", "print(1)", "\n", "```\n", "FINAL(1)"], 6),
        (["```", "json", "\n", "{}", "\n", "```", "\n", "text"], None),  # not code: go on
        (["Let me ", "think", "\n", "about it", "\n", "```", "repl", "\n"], None),
    ],
)
def test_stop_after_the_first_complete_code_block(pieces, stops_at):
    # Token 0 is the prompt; token k (k >= 1) is pieces[k - 1].
    criterion = StopAfterCode(_Detok(["<prompt>", *pieces]), prompt_len=2)
    ids = [0, 0, *range(1, len(pieces) + 1)]
    stop = next((n for n in range(3, len(ids) + 1) if criterion(ids[:n], None)), None)
    assert (stop - 2 if stop else None) == stops_at


class _FakeContext:
    """A context whose 'tokens' are the characters of the rendered messages."""

    def __init__(self, n_ctx: int) -> None:
        self.llama = SimpleNamespace(n_ctx=lambda: n_ctx)

    def tokens(self, messages, prefill=""):
        return list("".join(m["content"] for m in messages) + prefill)


def _fit(messages, n_ctx, slot="conversation", max_tokens=100):
    model = LoadedModel.__new__(LoadedModel)
    model.settings = LoadSettings(path=__import__("pathlib").Path("m.gguf"))
    return model._fit(_FakeContext(n_ctx), slot, messages, max_tokens)


def test_a_long_conversation_drops_its_oldest_exchanges():
    msgs = [{"role": "system", "content": "S" * 50}, {"role": "user", "content": "Q" * 50}]
    for i in range(4):
        msgs += [
            {"role": "assistant", "content": f"{i}" * 100},
            {"role": "user", "content": "o" * 100},
        ]
    tokens, dropped = _fit(msgs, n_ctx=650)
    assert dropped == 4  # two exchanges of four
    text = "".join(tokens)
    assert text.startswith("S" * 50 + "Q" * 50)
    assert "0" not in text and "1" not in text and "3" * 100 in text
    assert text.endswith("o" * 100)


def test_a_prompt_that_cannot_fit_is_refused_with_advice():
    with pytest.raises(LMRequestError, match="send less text"):
        _fit([{"role": "user", "content": "x" * 1000}], n_ctx=600, slot="scratch")


def test_the_local_model_declares_that_it_decodes_greedily(tmp_path):
    """Without a temperature it samples at 0 (complete() sends 0.0), so the call cache may
    serve its repeated requests, as cache.cacheable documents."""
    from recursa.cache import cacheable
    from recursa.types import LMSettings

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    lm = resolve_model(f"local:{gguf}", env={})
    assert lm.capabilities.greedy_by_default
    assert cacheable(lm, LMSettings()) and not cacheable(lm, LMSettings(temperature=0.7))
