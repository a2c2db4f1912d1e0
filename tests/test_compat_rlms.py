"""recursa.compat.rlms: scripts written for rlms 0.1.3, run on recursa over real HTTP.

Each test is shaped like an rlms user's script (``RLM(backend=..., backend_kwargs=...)``,
``rlm.completion(context)``, ``out.response``) and runs against the fake OpenAI-compatible server
on loopback, scripted with rules: the root's first turn (the message that starts with
``Question:``) gets a ```repl block, the turn after the REPL's output gets the answer.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import pytest

from recursa.compat.rlms import (
    RLM,
    BudgetExceededError,
    CancellationError,
    ErrorThresholdExceededError,
    RLMChatCompletion,
    RLMLogger,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from recursa.errors import ConfigError, LimitExceeded, MissingAPIKeyError, RecursaError
from recursa.testing import FakeLLMServer
from recursa.testing.fake_server import count_tokens

CODE = "XYZZY-42"
CONTEXT = "filler line\n" * 300 + f"The secret code is {CODE}.\n" + "filler line\n" * 300
QUESTION = "What is the secret code?"

# rlms' own answer protocol: the `answer` dict (recursa's REPL has it too).
FIND = (
    "```repl\n"
    "import re\n"
    "code = re.search(r'secret code is (\\S+)\\.', context).group(1)\n"
    "print('found', code)\n"
    "```"
)
SUBMIT = '```repl\nanswer["content"] = code\nanswer["ready"] = True\n```'


def rlms_server(**kwargs) -> FakeLLMServer:
    return FakeLLMServer(rules=[(r"^found ", SUBMIT), (r"^Question:", FIND)], **kwargs)


def openai_kwargs(srv: FakeLLMServer, model: str = "gpt-5-mini", key: str = "sk-root") -> dict:
    return {"model_name": model, "base_url": srv.base_url, "api_key": key}


def roots(srv: FakeLLMServer) -> list:
    return [r for r in srv.completions() if r.messages and r.messages[0]["role"] == "system"]


# ---- the constructor is rlms' ------------------------------------------------------------------

# rlms 0.1.3's RLM.__init__, name and default, in order: the compatibility contract.
RLMS_013_PARAMETERS = [
    ("backend", "openai"),
    ("backend_kwargs", None),
    ("environment", "local"),
    ("environment_kwargs", None),
    ("depth", 0),
    ("max_depth", 1),
    ("max_iterations", 30),
    ("max_budget", None),
    ("max_timeout", None),
    ("max_tokens", None),
    ("max_errors", None),
    ("custom_system_prompt", None),
    ("other_backends", None),
    ("other_backend_kwargs", None),
    ("logger", None),
    ("verbose", False),
    ("persistent", False),
    ("custom_tools", None),
    ("custom_sub_tools", None),
    ("compaction", False),
    ("compaction_threshold_pct", 0.85),
    ("max_concurrent_subcalls", 4),
    ("on_subcall_start", None),
    ("on_subcall_complete", None),
    ("on_iteration_start", None),
    ("on_iteration_complete", None),
    ("sampling_args", None),
    ("sub_sampling_args", None),
    ("orchestrator", True),
    ("user_prologue", None),
]


def test_constructor_has_rlms_parameters_in_order_with_their_defaults():
    params = list(inspect.signature(RLM.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in params] == RLMS_013_PARAMETERS
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    completion = inspect.signature(RLM.completion).parameters
    assert list(completion) == ["self", "prompt", "root_prompt"]
    assert completion["root_prompt"].default is None


def test_readme_script_answers_with_rlms_result_fields():
    with rlms_server() as srv:
        rlm = RLM(backend="openai", backend_kwargs=openai_kwargs(srv))
        out = rlm.completion(CONTEXT, root_prompt=QUESTION)
        seen = srv.completions()
    assert isinstance(out, RLMChatCompletion)
    assert out.response == CODE
    assert out.root_model == "gpt-5-mini"
    assert out.prompt == CONTEXT
    assert out.execution_time > 0
    assert out.metadata is None and out.error is None
    assert out.result is not None and out.result.stop_reason.value == "final"
    assert out.result.trace_path is not None and out.result.trace_path.exists()  # journaled
    # Usage per model, under the name the user gave, with the server's token counts.
    usage = out.usage_summary.model_usage_summaries
    assert set(usage) == {"gpt-5-mini"}
    assert usage["gpt-5-mini"].total_calls == len(seen) == 2
    sent = sum(count_tokens("".join(m["content"] for m in r.messages)) for r in seen)
    assert usage["gpt-5-mini"].total_input_tokens == sent
    assert out.usage_summary.total_output_tokens == sum(count_tokens(r.reply) for r in seen)
    assert out.usage_summary.total_cost is not None and out.usage_summary.total_cost > 0
    assert set(out.to_dict()) == {
        "root_model",
        "prompt",
        "response",
        "usage_summary",
        "execution_time",
    }
    assert all(r.headers.get("authorization") == "Bearer sk-root" for r in seen)


def test_without_root_prompt_the_task_is_the_context():
    with rlms_server() as srv:
        out = RLM(backend_kwargs=openai_kwargs(srv)).completion(CONTEXT)
        first = srv.completions()[0]
    assert out.response == CODE
    assert "the task is in `context`" in first.messages[1]["content"].lower()


def test_other_backend_serves_sub_calls_with_its_own_url_and_key():
    sub_turn = '```repl\nprint("found", llm_query("Say the code: " + context[-2000:]))\n```'
    with (
        FakeLLMServer(rules=[(r"^found ", SUBMIT.replace("code", "'sub said'"))]) as root,
        FakeLLMServer(responder="OK") as sub,
    ):
        root.add_rule(r"^Question:", sub_turn)
        rlm = RLM(
            backend="openai",
            backend_kwargs=openai_kwargs(root),
            other_backends=["vllm"],
            other_backend_kwargs=[openai_kwargs(sub, "qwen-small", "sk-sub")],
        )
        out = rlm.completion(CONTEXT, QUESTION)
        sub_seen, root_seen = sub.completions(), root.completions()
    assert out.response == "sub said"
    assert [r.model for r in sub_seen] == ["qwen-small"]
    assert sub_seen[0].headers["authorization"] == "Bearer sk-sub"
    assert {r.headers["authorization"] for r in root_seen} == {"Bearer sk-root"}
    usage = out.usage_summary.model_usage_summaries
    assert usage["qwen-small"].total_calls == 1 and usage["gpt-5-mini"].total_calls == 2


# ---- max_depth: rlms counts levels, recursa counts children ------------------------------------

CHILD_TURN = '```repl\nprint("found", rlm_query("Say the code."))\n```'


def depth_server() -> FakeLLMServer:
    # The child RLM's first turn starts with "Question: Say the code."; it answers at once.
    return FakeLLMServer(
        rules=[
            (r"^Question: Say the code", '```repl\nanswer.update(content="kid", ready=True)\n```'),
            (r"^found ", '```repl\nFINAL("done")\n```'),
            (r"^Question:", CHILD_TURN),
            (r"^Say the code", "plain"),
        ]
    )


def test_max_depth_1_makes_rlm_query_a_plain_call():
    events: list = []
    with depth_server() as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            max_depth=1,
            on_subcall_start=lambda *a: events.append(a),
        )
        out = rlm.completion(CONTEXT, QUESTION)
        seen = srv.completions()
    assert out.response == "done"
    plain = [r for r in seen if r.last_user == "Say the code."]
    assert len(plain) == 1 and plain[0].messages[0]["role"] == "user"  # no system: no REPL
    assert events == []  # no child RLM started


def test_max_depth_2_starts_a_child_rlm_and_fires_subcall_callbacks():
    started: list = []
    finished: list = []
    with depth_server() as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            max_depth=2,
            on_subcall_start=lambda *a: started.append(a),
            on_subcall_complete=lambda *a: finished.append(a),
        )
        out = rlm.completion(CONTEXT, QUESTION)
        child = [r for r in roots(srv) if r.last_user.startswith("Question: Say the code")]
    assert out.response == "done"
    assert len(child) == 1  # the child ran its own REPL loop
    assert started == [(1, "gpt-5-mini", "Say the code.")]
    assert len(finished) == 1
    depth, model, duration, error = finished[0]
    assert (depth, model, error) == (1, "gpt-5-mini", None) and duration > 0


def test_max_depth_0_is_one_plain_call_with_the_context():
    with FakeLLMServer(responder="direct answer") as srv:
        out = RLM(backend_kwargs=openai_kwargs(srv), max_depth=0).completion(CONTEXT, QUESTION)
        seen = srv.completions()
    assert out.response == "direct answer"
    assert len(seen) == 1
    assert CODE in "".join(m["content"] for m in seen[0].messages)


# ---- limits raise rlms' errors; running out of iterations returns ------------------------------


def test_max_tokens_raises_token_limit_error_with_the_partial_result():
    with rlms_server() as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv), max_tokens=1500)
        with pytest.raises(TokenLimitExceededError) as info:
            rlm.completion(CONTEXT, QUESTION)
    err = info.value
    assert isinstance(err, LimitExceeded) and isinstance(err, RecursaError)
    assert err.token_limit == 1500
    assert err.result is not None and err.result.stop_reason.value == "max_tokens"
    assert err.tokens_used == err.result.usage.total_tokens


def test_max_budget_raises_budget_error():
    with rlms_server() as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv), max_budget=0.0004)
        with pytest.raises(BudgetExceededError) as info:
            rlm.completion(CONTEXT * 3, QUESTION)
    assert info.value.budget == 0.0004
    assert info.value.spent <= 0.0004 + 1e-9  # recursa refuses the call that would pass it


def test_max_timeout_raises_timeout_error():
    with rlms_server(latency_s=0.6) as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv), max_timeout=0.9)
        with pytest.raises(TimeoutExceededError) as info:
            rlm.completion(CONTEXT, QUESTION)
    assert info.value.timeout == 0.9 and info.value.elapsed >= 0.9


def test_max_errors_raises_with_the_last_error():
    with FakeLLMServer(responder="```repl\nprint(1 / 0)\n```") as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv), max_errors=2)
        with pytest.raises(ErrorThresholdExceededError) as info:
            rlm.completion(CONTEXT, QUESTION)
    assert info.value.threshold == 2
    assert "ZeroDivisionError" in (info.value.last_error or "")


def test_max_iterations_returns_the_answer_now_turn_instead_of_raising():
    with FakeLLMServer(rules=[(r"no turns left", "FINAL(best guess)")]) as srv:
        srv.add_rule(r".", "```repl\nprint('still looking')\n```")
        out = RLM(backend_kwargs=openai_kwargs(srv), max_iterations=2).completion(CONTEXT)
    assert out.result is not None and out.result.stop_reason.value == "max_iterations"
    assert out.response == "best guess"


def test_ctrl_c_becomes_cancellation_error(monkeypatch):
    with rlms_server() as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv))

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(rlm._rlm, "run", interrupted)
        with pytest.raises(CancellationError):
            rlm.completion(CONTEXT)


# ---- callbacks, logger, sampling ---------------------------------------------------------------


def test_iteration_callbacks_and_logger_trajectory(tmp_path):
    started: list = []
    done: list = []
    logger = RLMLogger(log_dir=str(tmp_path))
    with rlms_server() as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            logger=logger,
            on_iteration_start=lambda *a: started.append(a),
            on_iteration_complete=lambda *a: done.append(a),
        )
        out = rlm.completion(CONTEXT, QUESTION)
    assert started == [(0, 1), (0, 2)]
    assert [(d, i) for d, i, _ in done] == [(0, 1), (0, 2)]
    traj = out.metadata
    assert traj is not None and traj["run_metadata"]["root_model"] == "gpt-5-mini"
    assert "api_key" not in traj["run_metadata"]["backend_kwargs"]
    its = traj["iterations"]
    assert [it["iteration"] for it in its] == [1, 2]
    assert its[0]["code_blocks"][0]["result"]["stdout"].strip() == f"found {CODE}"
    assert its[1]["final_answer"] == CODE
    log = Path(logger.log_file_path or "").read_text(encoding="utf-8")
    lines = [json.loads(x) for x in log.splitlines()]
    assert [x["type"] for x in lines] == ["metadata", "iteration", "iteration"]


def test_a_failing_callback_does_not_stop_the_run():
    def boom(*args):
        raise RuntimeError("callback bug")

    with rlms_server() as srv:
        out = RLM(backend_kwargs=openai_kwargs(srv), on_iteration_start=boom).completion(CONTEXT)
    assert out.response == CODE


def test_sampling_args_reach_the_request_body():
    with rlms_server() as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            sampling_args={"temperature": 0.3, "top_p": 0.9, "max_tokens": 900, "seed": 7},
        )
        rlm.completion(CONTEXT, QUESTION)
        body = srv.completions()[0].body
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["seed"] == 7
    assert 900 in (body.get("max_tokens"), body.get("max_completion_tokens"))


# ---- what recursa does not offer says what to do -----------------------------------------------


@pytest.mark.parametrize("env", ["modal", "e2b", "daytona", "prime"])
def test_hosted_environments_name_recursas_tiers(env):
    with pytest.raises(ConfigError, match=r"'local'.*'docker'"):
        RLM(backend_kwargs={"model_name": "m", "base_url": "http://127.0.0.1:9"}, environment=env)


def test_portkey_names_the_alternative():
    with pytest.raises(ConfigError, match="base_url"):
        RLM(backend="portkey", backend_kwargs={"model_name": "m"})


def test_unknown_backend_kwargs_are_named():
    with pytest.raises(ConfigError, match=re.escape("['organization']")):
        RLM(backend_kwargs={"model_name": "m", "organization": "x"})


def test_openrouter_needs_its_own_key_not_openais(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY"):
        RLM(backend="openrouter", backend_kwargs={"model_name": "openai/gpt-5-mini"})


def test_vllm_needs_a_base_url():
    with pytest.raises(ConfigError, match="base_url"):
        RLM(backend="vllm", backend_kwargs={"model_name": "qwen"})


def test_reserved_tool_names_are_refused():
    with pytest.raises(ConfigError, match="context"):
        RLM(backend_kwargs={"model_name": "m", "base_url": "http://x"}, custom_tools={"context": 1})


# ---- persistent=True: one REPL across completion() calls ---------------------------------------


def test_persistent_keeps_the_repl_and_adds_each_prompt_as_a_context():
    first = "```repl\nkept = 41\nanswer.update(content='one', ready=True)\n```"
    second = (
        "```repl\nanswer.update(content=f'{kept + 1} {context_1[:5]} {len(history)}',"
        " ready=True)\n```"
    )
    with FakeLLMServer(rules=[(r"^Question: first", first), (r"^Question: second", second)]) as srv:
        turns: list = []
        with RLM(
            backend_kwargs=openai_kwargs(srv),
            persistent=True,
            on_iteration_start=lambda *a: turns.append(a),
        ) as rlm:
            assert rlm.completion("alpha context", root_prompt="first").response == "one"
            out = rlm.completion("bravo context", root_prompt="second")
            session = rlm._session
        assert rlm._session is None  # closed on leaving the with block
    assert out.response == "42 bravo 1"
    assert session is not None
    assert turns == [(0, 1), (0, 1)]  # callbacks see each question's run


def test_without_persistent_each_completion_has_a_fresh_repl():
    probe = "```repl\nanswer.update(content=str('kept' in globals()), ready=True)\n```"
    first = "```repl\nkept = 41\nanswer.update(content='one', ready=True)\n```"
    with FakeLLMServer(rules=[(r"^Question: first", first), (r"^Question: probe", probe)]) as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv))
        rlm.completion("alpha", root_prompt="first")
        assert rlm.completion("bravo", root_prompt="probe").response == "False"


# ---- tools, prompts, compaction, more backends -------------------------------------------------


def lookup(name: str) -> str:
    """The code stored under ``name``."""
    return {"vault": CODE}.get(name, "none")


def test_custom_tools_are_callable_from_the_repl_and_listed_in_the_prompt():
    turn = '```repl\nanswer.update(content=lookup("vault"), ready=True)\n```'
    template = "You run code.{custom_tools_section}\nA literal {{brace}}."
    with FakeLLMServer(rules=[(r"^Question:", turn)]) as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            custom_tools={"lookup": {"tool": lookup, "description": "Find a code by name."}},
            custom_system_prompt=template,
        )
        out = rlm.completion(CONTEXT, QUESTION)
        system = srv.completions()[0].messages[0]["content"]
    assert out.response == CODE
    assert system.startswith("You run code.") and "A literal {brace}." in system
    assert "lookup(name: str)" in system and "Find a code by name." in system


def test_data_tools_say_how_to_pass_the_data():
    with pytest.raises(ConfigError, match=r"get_limit"):
        RLM(backend_kwargs={"model_name": "m", "base_url": "http://x"}, custom_tools={"limit": 5})


def test_user_prologue_comes_before_the_question():
    with rlms_server() as srv:
        rlm = RLM(backend_kwargs=openai_kwargs(srv), user_prologue="Tip: codes are uppercase.")
        rlm.completion(CONTEXT, QUESTION)
        first = srv.completions()[0].messages
    text = "\n".join(m["content"] for m in first if m["role"] == "user")
    assert "Tip: codes are uppercase." in text
    assert text.index("Tip: codes") < text.index(QUESTION)


def test_compaction_is_off_unless_asked_as_in_rlms():
    kwargs = {"model_name": "m", "base_url": "http://127.0.0.1:9"}
    assert RLM(backend_kwargs=kwargs)._rlm.config.compaction is False
    on = RLM(backend_kwargs=kwargs, compaction=True, compaction_threshold_pct=0.5)._rlm.config
    assert on.compaction is True and on.compaction_threshold == 0.5


def test_azure_openai_uses_its_endpoint_version_and_key_header():
    with rlms_server() as srv:
        rlm = RLM(
            backend="azure_openai",
            backend_kwargs={
                "model_name": "gpt-4o",
                "azure_deployment": "my-gpt",
                "azure_endpoint": srv.url,
                "api_version": "2024-10-21",
                "api_key": "az-key",
            },
        )
        out = rlm.completion(CONTEXT, QUESTION)
        seen = srv.requests
    assert out.response == CODE
    assert out.root_model == "gpt-4o"
    assert all(r.headers.get("api-key") == "az-key" for r in seen)
    # The deployments route is the one an api-version selects (without one: /openai/v1).
    assert all("/openai/deployments/my-gpt" in r.path for r in seen)


def test_gemini_gets_rlms_default_model():
    rlm = RLM(backend="gemini", backend_kwargs={"api_key": "g-key"})
    assert rlm._root.lm.name == "gemini:gemini-2.5-flash"


def test_sub_sampling_args_apply_to_sub_calls_over_a_copy_of_the_roots():
    turn = '```repl\nprint("found", llm_query("Say the code."))\n```'
    rules = [(r"^found ", '```repl\nFINAL("ok")\n```'), (r"^Question:", turn)]
    with FakeLLMServer(rules=rules, responder="X") as srv:
        rlm = RLM(
            backend_kwargs=openai_kwargs(srv),
            sampling_args={"temperature": 0.2, "top_p": 0.5},
            sub_sampling_args={"temperature": 0.9},
        )
        assert rlm.completion(CONTEXT, QUESTION).response == "ok"
        seen = srv.completions()
    sub = [r.body for r in seen if r.last_user == "Say the code."]
    root = [r.body for r in seen if r.last_user != "Say the code."]
    assert [(b["temperature"], b["top_p"]) for b in sub] == [(0.9, 0.5)]
    assert {(b["temperature"], b["top_p"]) for b in root} == {(0.2, 0.5)}


def test_trusted_local_runs_model_code_in_this_process_and_default_does_not():
    turn = "```repl\nimport os\nanswer.update(content=str(os.getpid()), ready=True)\n```"
    with FakeLLMServer(rules=[(r"^Question:", turn)]) as srv:
        isolated = RLM(backend_kwargs=openai_kwargs(srv)).completion("ctx", QUESTION)
        trusted = RLM(
            backend_kwargs=openai_kwargs(srv), environment_kwargs={"trusted": True}
        ).completion("ctx", QUESTION)
    assert trusted.response == str(os.getpid())
    assert isolated.response.isdigit() and isolated.response != str(os.getpid())


def test_docker_environment_maps_to_the_docker_tier_with_its_image():
    kwargs = {"model_name": "m", "base_url": "http://127.0.0.1:9"}
    rlm = RLM(backend_kwargs=kwargs, environment="docker", environment_kwargs={"image": "py:3"})
    assert rlm._rlm.config.sandbox == "docker"
    assert rlm._rlm.sandbox_config.docker_image == "py:3"
    with pytest.raises(ConfigError, match="docker"):
        RLM(backend_kwargs=kwargs, environment_kwargs={"image": "py:3"})


def test_verbose_draws_the_run_on_stderr(capsys):
    with rlms_server() as srv:
        out = RLM(backend_kwargs=openai_kwargs(srv), verbose=True).completion(CONTEXT, QUESTION)
    assert out.response == CODE
    assert "run:" in capsys.readouterr().err
