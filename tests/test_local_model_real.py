"""The real embedded model (Qwen2.5-Coder-1.5B) on prompts of thousands of tokens.

Short prompts are not enough: on CPUs with AMX, llama.cpp's matrix kernels crashed the process
only once a prompt passed 256 tokens, so every short-prompt test passed there. These tests run a
prompt of more than 2,000 tokens through the same path a run takes (probe, load, evaluate,
generate) and check the answer. Skipped only where the ``local`` extra is missing, and never in
CI (see ``localmodel.require_local_model``).
"""

from __future__ import annotations

import pytest

from recursa.embedded import probe
from recursa.examples.haystack import haystack
from recursa.lm.local import LocalLM
from recursa.types import LMSettings, Message

from .localmodel import WEIGHTS_ENV, require_local_model

pytestmark = pytest.mark.slow

FACT = "The shipping manifest for crate 58 lists 316 copper valves."
QUESTION = "How many copper valves does the manifest for crate 58 list? Reply with the number only."


@pytest.fixture(scope="module")
def lm() -> LocalLM:
    require_local_model()
    return LocalLM(env=WEIGHTS_ENV)  # the default model, as `recursa ask` loads it


async def test_a_prompt_of_over_2000_tokens_is_answered_from_its_middle(lm):
    text = haystack(15_000, seed=11, needle=FACT, at=0.45)  # ~2,300 tokens
    prompt = [Message.user(f"Read this log.\n\n{text}\n\n{QUESTION}")]
    reply = await lm.complete(prompt, LMSettings(max_output_tokens=12))
    assert reply.usage.input_tokens >= 2_000
    assert "316" in reply.text
    # The same path a run takes chose its kernels through the probe (or the caller's setting).
    choice = lm._loaded().choice
    assert choice is not None and choice.source in ("probe", "record", "override")


def test_the_real_probe_survives_a_prompt_longer_than_one_batch(lm, tmp_path):
    choice = probe.safe_settings(lm.path, tmp_path / "p.json", force=True, threads=2)
    survived = [a for a in choice.attempts if a.ok]
    assert survived, choice.attempts
    assert survived[0].prompt_tokens >= 512
    assert survived[0].prompt_tok_per_s > 0 and survived[0].generation_tok_per_s > 0
    assert "CPU" in choice.system_info  # llama.cpp's own list of what it was built with


async def test_choices_are_scored_not_generated_and_share_the_prompts_prefix(lm):
    head = "Is the item a fruit or a vehicle?\n\nReply with fruit or vehicle.\n\nItem: "
    settings = LMSettings(choices=("fruit", "vehicle"))
    first = await lm.complete([Message.user(head + "a ripe banana")], settings)
    second = await lm.complete([Message.user(head + "a red bus with two decks")], settings)
    assert (first.text, second.text) == ("fruit", "vehicle")
    assert first.finish_reason == second.finish_reason == "choice"
    assert second.usage.output_tokens == 0
    assert second.usage.cached_tokens >= 15  # the instruction was not evaluated again
    # Choices that start with the same token are scored token by token.
    same_start = LMSettings(choices=("red fruit", "red vehicle"))
    third = await lm.complete([Message.user(head + "a red fire truck")], same_start)
    assert third.text == "red vehicle"
    # A generated reply after scoring still sees the right state.
    plain = await lm.complete(
        [Message.user(head + "a red fire truck")], LMSettings(max_output_tokens=4)
    )
    assert "vehicle" in plain.text.lower()
