"""The strict prompt profile that small local models get, checked without a model.

Each property here was measured with Qwen2.5-Coder-1.5B: breaking it made the model fail.
"""

from __future__ import annotations

import re

import pytest

from recursa.parsing import find_code_blocks
from recursa.prompts import PROFILES, STANDARD, STRICT, profile_for


def _system(hint: str, *, sub_chars: int = 8_000, sub_calls: bool = True) -> str:
    return STRICT.system(context_hint=hint, sub_calls=sub_calls, sub_chars=sub_chars)


@pytest.mark.parametrize(
    "name",
    ["local:qwen2.5-coder-1.5b", "local:/models/any.gguf", "ollama:qwen2.5-coder:1.5b"],
)
def test_small_and_local_models_get_the_strict_profile(name):
    assert profile_for(name) is STRICT


def test_large_api_models_keep_the_standard_profile():
    assert profile_for("openai:gpt-5-mini") is STANDARD
    assert PROFILES["strict"] is STRICT


def test_system_prompt_is_the_same_for_every_context_but_its_last_line():
    # The local backend reuses the KV cache of a shared prefix across runs in one process:
    # everything that varies per context must come last.
    a = _system("a str of 420,076 characters").splitlines()
    b = _system("a dict of 12 parts").splitlines()
    assert a[:-1] == b[:-1]
    assert a[-1] != b[-1]


def test_no_placeholder_answer_the_model_could_copy():
    # Measured: with 'FINAL("the answer")' in the rules the 1.5B model answered "the answer".
    texts = [
        _system("a str"),
        STRICT.first_step,
        STRICT.after_output,
        STRICT.no_code,
        STRICT.final_before_code,
        STRICT.final_unverified,
        STRICT.repeated_code,
        STRICT.final_turn,
    ]
    for text in texts:
        assert 'FINAL("the answer")' not in text
        assert "your answer" not in text.lower()


@pytest.mark.parametrize(
    "context",
    [
        "aaa The code for vault 17 is 4817263. bbb",
        {"notes/a.txt": "nothing here", "notes/b.txt": "The code for vault 17 is 4817263."},
        ["nothing here", "The code for vault 17 is 4817263."],
    ],
)
def test_first_step_gives_a_search_that_runs_on_any_context(context):
    # Measured: a template that assumed a str failed on folders (a dict) with a TypeError.
    code = find_code_blocks(_system("a str"))[0]  # the example first_step points to
    assert "Whitfield" in STRICT.first_step and "first example" in STRICT.first_step
    printed: list[str] = []
    namespace = {"context": context, "print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    exec(compile(code.replace("Whitfield", "vault"), "<first_step>", "exec"), namespace)
    assert printed[0] == "1 matches"
    assert "4817263" in printed[1]
    if isinstance(context, dict):
        assert "### notes/b.txt" in printed[1]  # the window names the file


def test_every_example_in_the_system_prompt_is_valid_python():
    blocks = find_code_blocks(_system("a str"))
    assert len(blocks) >= 4
    for code in blocks:
        compile(code, "<example>", "exec")


def test_sub_call_example_uses_the_sub_models_chunk_size():
    text = _system("a str", sub_chars=8_000)
    assert "size = 8000" in text
    assert "at most 8,000 characters" in text
    assert "size = 3000" in _system("a str", sub_chars=3_000)
    without = _system("a str", sub_calls=False)
    assert "llm_query" not in without


def test_strict_rules_ask_for_code_first_and_refuse_early_answers():
    assert STRICT.require_code_before_final is True
    assert STANDARD.require_code_before_final is False
    rules = _system("a str")
    assert re.search(r"exactly one ```repl block", rules)
    assert "0 matches" in rules  # measured: without it the model answered after a failed search
