"""Sampling per role, and what each backend sends for it: top_p, reasoning_effort and the
provider-option pass-through, from RunConfig down to the request body."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from recursa import RLM, Limits, RunConfig, ScriptedLM
from recursa.cli import main
from recursa.errors import ConfigError
from recursa.lm.anthropic import THINKING_BUDGETS, AnthropicLM
from recursa.lm.openai import OpenAIChatLM
from recursa.lm.retry import RetryPolicy
from recursa.sampling import OptionMap, Sampling
from recursa.server.chat import parse_chat_request, request_sampling
from recursa.server.errors import RequestError
from recursa.store import request_key
from recursa.testing import FakeLLMServer
from recursa.types import LMSettings, Message
from tests.conftest import repl
from tests.test_local_backend import fake, gguf, llama_installed  # noqa: F401 - fixtures

HELLO = [Message.system("Be brief."), Message.user("Hello?")]
FAST = RetryPolicy(max_retries=0)


# ---- the values ---------------------------------------------------------------------------------


def test_settings_without_the_new_fields_keep_their_cache_keys():
    # The call cache keys on to_dict(): a request made before these fields existed must map to
    # the same key, and one that sets them to another.
    old = LMSettings(temperature=0.0, max_output_tokens=64)
    assert old.to_dict() == {
        "temperature": 0.0,
        "max_output_tokens": 64,
        "stop": None,
        "seed": None,
    }
    key = request_key("m", HELLO, old)
    for changed in (
        LMSettings(temperature=0.0, max_output_tokens=64, top_p=0.5),
        LMSettings(temperature=0.0, max_output_tokens=64, reasoning_effort="low"),
        LMSettings(temperature=0.0, max_output_tokens=64, provider_options={"top_k": 3}),
    ):
        assert request_key("m", HELLO, changed) != key
    full = LMSettings(top_p=0.5, reasoning_effort="HIGH", provider_options={"a": [1, {"b": 2}]})
    assert full.to_dict()["reasoning_effort"] == "high"
    assert full.to_dict()["provider_options"] == {"a": [1, {"b": 2}]}


def test_provider_options_are_frozen_hashable_json():
    options = OptionMap({"b": [1, 2], "a": {"x": True}})
    assert options == {"a": {"x": True}, "b": [1, 2]} and list(options) == ["a", "b"]
    assert hash(options) == hash(OptionMap({"a": {"x": True}, "b": [1, 2]}))
    options["b"].append(3)  # a fresh copy each read: the map cannot be changed through it
    assert options["b"] == [1, 2]
    assert hash(LMSettings(provider_options={"a": 1})) == hash(
        LMSettings(provider_options={"a": 1})
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"messages": []}, "set by recursa itself"),
        ({"model": "x"}, "set by recursa itself"),
        ({"stream": True}, "set by recursa itself"),
        ({"temperature": 1}, "use temperature"),
        ({"max_tokens": 9}, "use max_output_tokens"),
        ({"reasoning_effort": "low"}, "use reasoning_effort"),
        ({"f": float("nan")}, "not JSON data"),
        ({"f": object()}, "not JSON data"),
        ({"": 1}, "non-empty name"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_provider_options_recursa_controls_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        LMSettings(provider_options=options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 1.5}, "top_p must be a number from 0 to 1"),
        ({"top_p": True}, "top_p must be"),
        ({"temperature": 3}, "temperature must be a number from 0 to 2"),
        ({"reasoning_effort": "extreme"}, "none, minimal, low, medium, high"),
        ({"max_output_tokens": 0}, "at least 1"),
    ],
)
def test_bad_sampling_values_fail_when_the_config_is_built(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**kwargs)
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig(sub_sampling=kwargs)
    assert str(info.value).startswith("sub_sampling: ")


def test_unknown_role_keys_name_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        RLM(ScriptedLM(["x"]), sub_sampling={"max_tokens": 10})
    text = str(info.value)
    assert "sub_sampling: unknown key 'max_tokens'" in text
    assert "did you mean 'max_output_tokens'" in text
    assert "temperature, top_p, max_output_tokens, reasoning_effort, provider_options" in text
    with pytest.raises(ConfigError, match="root_sampling must be a dict"):
        RunConfig(root_sampling=42)  # type: ignore[arg-type]


# ---- roles ---------------------------------------------------------------------------------------


def test_a_role_value_wins_over_the_shorthand_and_options_merge():
    config = RunConfig(
        temperature=0.2,
        max_output_tokens=500,
        top_p=0.9,
        provider_options={"top_k": 10, "user": "me"},
        sub_sampling={
            "temperature": 0.7,
            "max_output_tokens": 2000,
            "provider_options": {"top_k": 3},
        },
        root_sampling=LMSettings(reasoning_effort="low"),
    )
    root, sub = config.root_settings, config.sub_settings
    assert (root.temperature, root.max_output_tokens, root.top_p) == (0.2, 500, 0.9)
    assert root.reasoning_effort == "low" and sub.reasoning_effort is None
    assert (sub.temperature, sub.max_output_tokens, sub.top_p) == (0.7, 2000, 0.9)
    assert dict(root.provider_options) == {"top_k": 10, "user": "me"}
    assert dict(sub.provider_options) == {"top_k": 3, "user": "me"}


def test_the_config_round_trips_and_old_journals_still_load():
    config = RunConfig(
        temperature=0.1,
        reasoning_effort="Medium",
        provider_options={"service_tier": "flex"},
        sub_sampling=Sampling(top_p=0.5, provider_options={"top_k": 2}),
    )
    assert config.reasoning_effort == "medium"
    data = json.loads(json.dumps(config.to_dict()))
    assert data["sub_sampling"] == {"top_p": 0.5, "provider_options": {"top_k": 2}}
    again = RunConfig.from_dict(data)
    assert again == config and again.sub_settings == config.sub_settings
    # A journal written before per-role sampling: temperature and max_output_tokens only.
    old = RunConfig.from_dict({"model": "local", "temperature": 0.3, "max_output_tokens": 99})
    expected = LMSettings(temperature=0.3, max_output_tokens=99)
    assert old.root_settings == expected and old.sub_settings == expected


def test_root_turns_sub_calls_and_children_get_their_roles_settings():
    child_turn = repl("FINAL('child')")
    sub = ScriptedLM(rules=[(r"Question: deep", child_turn)], default="plain", name="sub")
    root = ScriptedLM(
        [repl("a = llm_query('x')\nb = rlm_query('deep', context='abc')"), repl("FINAL(a + b)")],
        name="root",
    )
    rlm = RLM(
        root,
        sub,
        limits=Limits(max_iterations=4, max_depth=1),
        temperature=0.1,
        sub_sampling={"temperature": 0.7, "max_output_tokens": 300},
        journal=False,
    )
    assert rlm.run("q", "ctx").answer == "plainchild"
    assert {s.temperature for s in root.call_settings} == {0.1}
    assert len(sub.call_settings) == 2  # the sub-call and the child's one turn
    assert {(s.temperature, s.max_output_tokens) for s in sub.call_settings} == {(0.7, 300)}


def test_from_config_keeps_every_sampling_setting():
    rlm = RLM(ScriptedLM(["x"]), top_p=0.4, provider_options={"a": 1}, sub_sampling={"top_p": 0.2})
    rebuilt = RLM.from_config(rlm.config, model=ScriptedLM(["y"]))
    assert rebuilt.config.sub_settings == rlm.config.sub_settings
    assert rebuilt.config.root_settings.top_p == 0.4


# ---- what each backend sends ---------------------------------------------------------------------

SETTINGS = LMSettings(
    top_p=0.8, reasoning_effort="low", max_output_tokens=100, provider_options={"top_k": 7}
)


async def test_openai_sends_top_p_effort_and_options():
    with FakeLLMServer(["ok"]) as srv:
        lm = OpenAIChatLM("fake", base_url=srv.base_url, retry=FAST)
        try:
            await lm.complete(HELLO, SETTINGS)
        finally:
            await lm.aclose()
        body = srv.requests[-1].body
    assert body["top_p"] == 0.8 and body["reasoning_effort"] == "low"
    assert body["top_k"] == 7 and body["max_tokens"] == 100
    assert body["messages"][1] == {"role": "user", "content": "Hello?"}


async def test_anthropic_maps_effort_to_a_thinking_budget():
    with FakeLLMServer(["ok"]) as srv:
        lm = AnthropicLM("claude-sonnet-4-5", api_key="k", base_url=srv.url, retry=FAST)
        try:
            await lm.complete(HELLO, SETTINGS)
            await lm.complete(HELLO, LMSettings(top_p=0.5, reasoning_effort="none"))
        finally:
            await lm.aclose()
        thinking, plain = (r.body for r in srv.requests)
    budget = THINKING_BUDGETS["low"]
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert thinking["max_tokens"] == 100 + budget  # the answer's cap on top of the budget
    assert thinking["top_p"] == 0.8 and thinking["top_k"] == 7
    assert "thinking" not in plain and plain["top_p"] == 0.5


@pytest.mark.parametrize(
    ("model", "settings", "message"),
    [
        ("claude-3-5-haiku-latest", LMSettings(reasoning_effort="high"), "no extended thinking"),
        ("claude-opus-4-1", LMSettings(reasoning_effort="high", temperature=0.0), "temperature 1"),
    ],
)
async def test_anthropic_refuses_thinking_where_the_api_would(model, settings, message):
    lm = AnthropicLM(model, api_key="k", base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=message):
        await lm.complete(HELLO, settings)


async def test_litellm_passes_top_p_and_options():
    if importlib.util.find_spec("litellm") is None:  # not imported here: see test_lm_litellm
        pytest.skip("the litellm extra is not installed")
    from recursa.lm.litellm import LiteLLM

    with FakeLLMServer(["ok"]) as srv:
        lm = LiteLLM("openai/fake", api_base=srv.base_url, api_key="k", max_retries=0)
        settings = LMSettings(top_p=0.3, provider_options={"top_k": 4, "service_tier": "flex"})
        await lm.complete(HELLO, settings)
        body = srv.requests[-1].body
        with pytest.raises(ConfigError, match="'timeout' is an argument recursa passes"):
            await lm.complete(HELLO, LMSettings(provider_options={"timeout": 1}))
    assert body["top_p"] == 0.3 and body["top_k"] == 4 and body["service_tier"] == "flex"


async def test_local_takes_top_p_and_llama_cpp_options_and_ignores_effort(fake):  # noqa: F811
    lm, model = fake
    settings = LMSettings(
        top_p=0.6, reasoning_effort="high", provider_options={"top_k": 5, "min_p": 0.1}
    )
    await lm.complete([Message.user("hi")], settings)
    assert model.calls[0][2]["sampling"] == {"top_p": 0.6, "top_k": 5, "min_p": 0.1}
    with pytest.raises(ConfigError, match=r"unknown provider option 'service_tier'.*top_k"):
        await lm.complete([Message.user("hi")], LMSettings(provider_options={"service_tier": 1}))
    with pytest.raises(ConfigError, match="'top_k' must be a whole number"):
        await lm.complete([Message.user("hi")], LMSettings(provider_options={"top_k": 1.5}))


# ---- the command line and the server --------------------------------------------------------------


def _ask(srv: FakeLLMServer, tmp_path: Path, *flags: str) -> int:
    doc = tmp_path / "doc.txt"
    doc.write_text("the launch is on 2031-04-05")
    argv = ["ask", "-c", str(doc), "-m", "openai:fake-root", "--sub-model", "openai:fake-sub"]
    return main([*argv, "--base-url", srv.base_url, "-q", "--no-journal", *flags, "When?"])


def test_cli_flags_reach_each_roles_requests(tmp_path, capsys):
    replies = [repl("print(llm_query('date?'))"), "sub answer", repl("FINAL('done')")]
    with FakeLLMServer(replies) as srv:
        code = _ask(
            srv,
            tmp_path,
            *("--temperature", "0.2", "--top-p", "0.9", "--reasoning-effort", "low"),
            *("--provider-option", "top_k=20", "--provider-option", 'meta={"a": [1]}'),
            *("--provider-option", "tier=flex", "--sub-temperature", "0.7"),
            *("--sub-max-output-tokens", "321", "--sub-provider-option", "top_k=3"),
            *("--sub-top-p", "0.5", "--sub-reasoning-effort", "high"),
        )
        bodies = {r.model: r.body for r in srv.completions()}
    assert code == 0, capsys.readouterr().err
    root, sub = bodies["fake-root"], bodies["fake-sub"]
    assert (root["temperature"], root["top_p"], root["reasoning_effort"]) == (0.2, 0.9, "low")
    assert root["top_k"] == 20 and root["meta"] == {"a": [1]} and root["tier"] == "flex"
    assert (sub["temperature"], sub["top_p"], sub["reasoning_effort"]) == (0.7, 0.5, "high")
    assert sub["max_tokens"] == 321 and sub["top_k"] == 3 and sub["tier"] == "flex"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "2"], "--top-p must be a number from 0 to 1"),
        (["--sub-temperature", "9"], "--sub-temperature must be a number from 0 to 2"),
        (["--reasoning-effort", "max"], "--reasoning-effort must be one of"),
        (["--provider-option", "top_k"], "write KEY=VALUE"),
        (["--sub-provider-option", "messages=[]"], "--sub-provider-option: provider option"),
        (["--provider-option", "max_tokens=5"], "use max_output_tokens"),
        (["--sub-max-output-tokens", "0"], "--sub-max-output-tokens must be"),
    ],
)
def test_cli_bad_sampling_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, message):
    with FakeLLMServer() as srv:
        assert _ask(srv, tmp_path, *flags) == 2
        assert srv.completions() == []
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_server_requests_map_top_p_and_effort():
    body = {"model": "rlm", "messages": [{"role": "user", "content": "q"}]}
    req = parse_chat_request({**body, "top_p": 0.5, "reasoning_effort": "LOW"})
    assert request_sampling(req) == {"top_p": 0.5, "reasoning_effort": "low"}
    assert request_sampling(parse_chat_request(body)) == {}
    for bad, param in (({"top_p": 2}, "top_p"), ({"reasoning_effort": "x"}, "reasoning_effort")):
        with pytest.raises(RequestError) as info:
            parse_chat_request({**body, **bad})
        assert info.value.param == param


async def test_server_runs_are_built_with_the_requests_sampling(tmp_path):
    from recursa.server.config import ServerConfig
    from recursa.server.runs import RunManager

    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": repl("FINAL('x')")}))
    config = ServerConfig(model=f"scripted:{script}", rlm_options={"top_p": 0.9})
    manager = RunManager(config)
    choice = config.choose_model("rlm")
    rlm, _ = manager.build_rlm(choice, config.limits, 0.1, {"reasoning_effort": "low"})
    assert (rlm.config.temperature, rlm.config.top_p) == (0.1, 0.9)
    assert rlm.config.root_settings.reasoning_effort == "low"
    rlm, _ = manager.build_rlm(choice, config.limits, None, {"top_p": 0.2})
    assert rlm.config.top_p == 0.2  # the request's value wins over the server's default
    await manager.aclose()
