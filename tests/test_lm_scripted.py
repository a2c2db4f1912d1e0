"""ScriptedLM: ordered replies, rules, callables, expectations, files, and loud failures."""

from __future__ import annotations

import json
import time

import pytest

from recursa.errors import ConfigError, ScriptMismatch
from recursa.limits import approx_tokens
from recursa.lm.base import LM
from recursa.lm.scripted import ScriptedLM, Step
from recursa.types import Message


def ask(text: str) -> list[Message]:
    return [Message.system("sys"), Message.user(text)]


async def test_replies_come_in_order_and_calls_are_recorded():
    lm = ScriptedLM(["one", "two"])
    assert isinstance(lm, LM)
    assert lm.remaining == 2
    first = await lm.complete(ask("a"))
    second = await lm.complete(ask("b"))
    assert (first.text, second.text) == ("one", "two")
    assert lm.remaining == 0
    assert lm.prompts == ["a", "b"]
    assert lm.calls[0] == ask("a")
    assert first.finish_reason == "stop"
    assert first.model == "scripted"


async def test_usage_is_estimated_at_four_characters_per_token():
    lm = ScriptedLM(["x" * 10])
    c = await lm.complete(ask("y" * 40))
    assert c.usage.input_tokens == approx_tokens(len("sys") + 40)
    assert c.usage.output_tokens == approx_tokens(10)
    assert c.usage.calls == 1


async def test_rules_win_over_ordered_replies_and_do_not_consume_them():
    lm = ScriptedLM(["ordered"], rules=[(r"chunk \d+", "from rule")])
    assert (await lm.complete(ask("chunk 7"))).text == "from rule"
    assert lm.remaining == 1
    assert (await lm.complete(ask("root turn"))).text == "ordered"


async def test_rules_match_the_last_user_message_only():
    lm = ScriptedLM(rules=[("secret", "found")], default="nothing")
    messages = [Message.user("the secret"), Message.assistant("..."), Message.user("next")]
    assert (await lm.complete(messages)).text == "nothing"


async def test_callables_get_the_messages():
    lm = ScriptedLM(
        [lambda msgs: f"{len(msgs)} messages"],
        rules=[("upper", lambda msgs: msgs[-1].content.upper())],
    )
    assert (await lm.complete(ask("upper me"))).text == "UPPER ME"
    assert (await lm.complete(ask("count"))).text == "2 messages"


async def test_a_single_callable_or_string_answers_every_call():
    echo = ScriptedLM(lambda msgs: "echo: " + msgs[-1].content)
    fixed = ScriptedLM("always")
    assert (await echo.complete(ask("a"))).text == "echo: a"
    assert (await echo.complete(ask("b"))).text == "echo: b"
    assert [(await fixed.complete(ask(str(i)))).text for i in range(3)] == ["always"] * 3


async def test_default_answers_after_the_replies_run_out():
    lm = ScriptedLM(["first"], default="later")
    assert [(await lm.complete(ask(str(i)))).text for i in range(3)] == ["first", "later", "later"]


async def test_step_expect_passes_and_fails_loudly():
    lm = ScriptedLM([Step("ok", expect=r"Question: .*capital"), Step("no", expect="never")])
    assert (await lm.complete(ask("Question: the capital of France?"))).text == "ok"
    with pytest.raises(ScriptMismatch, match="expected a prompt matching 'never'") as info:
        await lm.complete(ask("something else"))
    assert "something else" in str(info.value)


async def test_exhausted_script_names_the_prompt():
    lm = ScriptedLM(["only"])
    await lm.complete(ask("first"))
    with pytest.raises(ScriptMismatch, match="1 replies") as info:
        await lm.complete(ask("the unexpected second prompt"))
    assert "the unexpected second prompt" in str(info.value)


async def test_latency_is_applied():
    lm = ScriptedLM(["x"], latency_s=0.05)
    started = time.perf_counter()
    await lm.complete(ask("a"))
    assert time.perf_counter() - started >= 0.05


def test_name_gets_the_scripted_prefix():
    assert ScriptedLM(name="demo").name == "scripted:demo"
    assert ScriptedLM(name="scripted:x").name == "scripted:x"


# ---- files --------------------------------------------------------------------------------------


async def test_from_file_object_format(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            {
                "replies": ["r1", "r2"],
                "rules": [{"match": "chunk", "reply": "rule reply"}],
                "default": "dflt",
                "latency_s": 0.01,
            }
        )
    )
    lm = ScriptedLM.from_file(path)
    assert lm.name == "scripted:script"
    assert lm.latency_s == 0.01
    texts = [(await lm.complete(ask(p))).text for p in ["a", "chunk 1", "b", "c"]]
    assert texts == ["r1", "rule reply", "r2", "dflt"]


async def test_from_file_bare_list(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(["x", "y"]))
    lm = ScriptedLM.from_file(str(path))
    assert [(await lm.complete(ask("q"))).text for _ in range(2)] == ["x", "y"]
    with pytest.raises(ScriptMismatch):
        await lm.complete(ask("q"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "expected a list of replies or an object"),
        ('{"replies": "not a list"}', "'replies' must be a list of strings"),
        ('{"replies": [1, 2]}', "'replies' must be a list of strings"),
        ('{"rules": [{"match": "x"}]}', "each rule needs 'match' and 'reply'"),
        ('{"rules": ["x"]}', "each rule needs 'match' and 'reply'"),
        ('{"rules": [{"match": "(unclosed", "reply": "r"}]}', "not a valid regular expression"),
        ('{"latency_s": "slow"}', "latency_s"),
    ],
)
def test_bad_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        ScriptedLM.from_file(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read script"):
        ScriptedLM.from_file(tmp_path / "nope.json")
