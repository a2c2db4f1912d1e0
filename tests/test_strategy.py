"""The strategy choice: rlm (the REPL loop), direct (one plain call) and auto (by size)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

import recursa.strategy as strategy_mod
from recursa import RLM, Limits, ScriptedLM, StopReason
from recursa.bench.methods import METHODS, build_env, parse_methods, run_method
from recursa.bench.scoring import score
from recursa.bench.tasks import make_tasks
from recursa.cli import main
from recursa.config import RunConfig
from recursa.context import load_context
from recursa.errors import ConfigError, LimitExceeded, ScriptMismatch
from recursa.lm.base import Capabilities
from recursa.store import request_key
from recursa.strategy import (
    AUTO_DIRECT_FRACTION,
    STRATEGIES,
    answer_room,
    choose_strategy,
    direct_system_prompt,
    fit_middle,
    max_context_chars,
    render_context,
    rendered_chars,
)
from recursa.trace.jsonl import read_trace
from recursa.types import Completion, LMSettings, Message

from .conftest import repl

# Imported with the module, before the autouse fixture points RECURSA_CACHE_DIR at a temporary
# folder: the weights live in the real cache (see tests/localmodel.py).
from .localmodel import WEIGHTS_ENV, require_local_model

FACT = "The launch date is 2031-04-05."
DOC = "filler line.\n" * 200 + FACT + "\n" + "more filler.\n" * 200  # ~5,400 characters
QUESTION = "When is the launch?"


class RecordingLM(ScriptedLM):
    """A scripted model that also records the settings of each call."""

    def __init__(self, *args, window: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = Capabilities(greedy_by_default=True, context_window=window)
        self.settings: list[LMSettings | None] = []

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        self.settings.append(settings)
        return await super().complete(messages, settings)


def overhead() -> int:
    return len(direct_system_prompt()) + len("\n\nQuestion: ")


# ---- the pure chooser ----------------------------------------------------------------------------


def test_explicit_choices_are_taken_as_asked_whatever_the_sizes():
    assert choose_strategy("rlm", 10, 10, 100_000, 1024) == ("rlm", "asked for rlm")
    assert choose_strategy("direct", 10**9, 10, 8192, 1024) == ("direct", "asked for direct")
    assert choose_strategy("direct", 10, 10, None, 1024)[0] == "direct"
    assert choose_strategy(" RLM ", 10, 10, None, 1024)[0] == "rlm"
    assert STRATEGIES == ("auto", "rlm", "direct")


def test_auto_answers_directly_when_the_prompt_fits_half_the_window():
    name, reason = choose_strategy("auto", 20_000, 30, 128_000, 1024)
    assert name == "direct"
    assert reason.startswith("auto chose direct")
    assert "128,000-token window" in reason


def test_auto_runs_the_rlm_when_the_context_is_too_long():
    name, reason = choose_strategy("auto", 400_000, 30, 128_000, 1024)
    assert name == "rlm"
    assert reason.startswith("auto chose rlm") and "too long" in reason


def test_auto_runs_the_rlm_when_the_model_declares_no_window():
    for window in (None, 0):
        name, reason = choose_strategy("auto", 100, 10, window, 1024)
        assert name == "rlm"
        assert "declares no context window" in reason


def test_the_auto_rule_at_its_boundary():
    """ceil((context + question + system prompt) / 3) + answer <= fraction * window."""
    window, answer, question = 10_000, 1024, 40
    limit = int(AUTO_DIRECT_FRACTION * window)
    # The longest context estimated at exactly the limit, and one token more.
    longest = (limit - answer) * 3 - question - overhead()
    assert math.ceil((longest + question + overhead()) / 3) + answer == limit
    assert choose_strategy("auto", longest, question, window, answer)[0] == "direct"
    assert choose_strategy("auto", longest + 1, question, window, answer)[0] == "rlm"
    # The answer's room counts: a larger output cap tips the same context over.
    assert choose_strategy("auto", longest, question, window, answer + 1)[0] == "rlm"


def test_the_threshold_is_one_constant(monkeypatch):
    assert AUTO_DIRECT_FRACTION == 0.75
    args = ("auto", 60_000, 30, 100_000, 1024)  # ~21,000 tokens of 100,000
    assert choose_strategy(*args)[0] == "direct"
    monkeypatch.setattr(strategy_mod, "AUTO_DIRECT_FRACTION", 0.2)
    assert choose_strategy(*args)[0] == "rlm"


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="choose one of auto, rlm, direct"):
        choose_strategy("fast", 1, 1, 1000, 10)


def test_answer_room_is_the_output_cap_or_1024():
    assert answer_room(None) == 1024
    assert answer_room(300) == 300


# ---- the context as text ---------------------------------------------------------------------


def test_contexts_render_as_text_with_named_parts(tmp_path):
    assert render_context(load_context("plain text")) == "plain text"
    ctx = load_context({"a.py": "print(1)", "b.md": "# B"})
    assert render_context(ctx) == "=== a.py ===\nprint(1)\n\n=== b.md ===\n# B"
    (tmp_path / "notes.txt").write_text("hello")
    multi = load_context(tmp_path / "notes.txt", "inline", {"x": "y"})
    text = render_context(multi)
    assert f"=== {tmp_path / 'notes.txt'} ===\nhello" in text
    assert "=== text ===\ninline" in text and "=== dict/x ===\ny" in text
    for c in (ctx, multi, load_context(["one", "two"])):
        assert rendered_chars(c) == len(render_context(c))


def test_fit_middle_is_shared_with_the_bench():
    from recursa.bench import baselines

    assert baselines.fit_middle is fit_middle
    body, cut = fit_middle("a" * 500 + "b" * 500, 300)
    assert cut and body.startswith("a") and body.endswith("b") and len(body) <= 300


# ---- RLM(strategy="direct") --------------------------------------------------------------------


def test_direct_makes_one_plain_call_with_the_context_then_the_question(tmp_path):
    lm = RecordingLM(["  2031-04-05 \n"], name="root")
    trace = tmp_path / "t.jsonl"
    rlm = RLM(lm, strategy="direct", temperature=0.0)
    r = rlm.run(QUESTION, DOC, trace=trace)
    assert r.answer == "2031-04-05"
    assert r.stop_reason is StopReason.FINAL and not r.partial
    assert r.iterations == 0
    assert r.strategy == "direct" and r.strategy_reason == "asked for direct"
    assert r.to_dict()["strategy"] == "direct"
    assert r.usage.calls == 1
    # One call: the system prompt, then the whole context followed by the question.
    [messages] = lm.calls
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == direct_system_prompt()
    user = messages[1].content
    assert DOC in user and user.endswith(f"Question: {QUESTION}")
    assert user.index(FACT) < user.index(QUESTION)
    # Not a code turn: the backend is told so; the rest are the run's settings.
    assert lm.settings == [LMSettings(temperature=0.0, expect_code=False)]
    # The trace: a root run span like an RLM's, with the strategy, and its one LM call.
    spans = read_trace(trace).spans
    run = next(s for s in spans if s.kind == "run")
    assert run.parent_id is None
    a = run.attrs
    assert a["strategy"] == "direct" and a["strategy_reason"] == "asked for direct"
    assert a["question"] == QUESTION and a["depth"] == 0 and a["model"] == "scripted:root"
    assert a["context"] == {"kind": "text", "chars": len(DOC), "parts": 1}
    assert a["answer"] == "2031-04-05" and a["stop_reason"] == "final"
    assert a["iterations"] == 0 and a["usage"]["calls"] == 1
    [call] = [s for s in spans if s.kind == "lm_call"]
    assert call.parent_id == run.id and call.attrs["role"] == "root"
    assert not [s for s in spans if s.kind in ("iteration", "cell")]


def test_direct_cuts_a_context_too_long_for_the_window_in_the_middle():
    lm = RecordingLM(["ok"], name="root", window=2048)
    text = "HEAD " + "x" * 50_000 + " TAIL"
    r = RLM(lm, strategy="direct").run(QUESTION, text)
    assert r.answer == "ok" and r.stop_reason is StopReason.FINAL
    user = lm.calls[0][1].content
    assert user.startswith("HEAD ") and "TAIL" in user and "characters cut here" in user
    assert len(user) <= max_context_chars(2048, len(QUESTION), 1024) + len(QUESTION) + 20
    [warning] = [w for w in r.warnings if w.startswith("direct:")]
    assert "2,048-token window" in warning and "cut from its middle" in warning
    run = next(s for s in r.spans if s.kind == "run")
    assert warning in run.attrs["warnings"]


def test_direct_renders_a_folder_with_file_names(tmp_path):
    (tmp_path / "a.txt").write_text("alpha says 1")
    (tmp_path / "b.txt").write_text("beta says 2")
    lm = RecordingLM(["2"], name="root")
    RLM(lm, strategy="direct").run("What does beta say?", tmp_path)
    user = lm.calls[0][1].content
    assert "=== a.txt ===\nalpha says 1" in user and "=== b.txt ===\nbeta says 2" in user


def test_direct_stops_with_the_limit_when_the_budget_cannot_pay():
    lm = RecordingLM(["never"], name="root")
    r = RLM(lm, strategy="direct", limits=Limits(max_tokens=500)).run(QUESTION, DOC)
    assert r.stop_reason is StopReason.MAX_TOKENS and r.partial
    assert r.answer == "" and r.iterations == 0 and r.strategy == "direct"
    assert r.detail.startswith("max_tokens=500: a prompt of")
    assert "no answer: the direct call was not made" in r.detail
    assert lm.calls == []  # refused before it was sent
    run = next(s for s in r.spans if s.kind == "run")
    assert run.attrs["stop_reason"] == "max_tokens"


def test_direct_raises_on_limit_with_the_partial_result():
    lm = RecordingLM(["never"], name="root")
    rlm = RLM(lm, strategy="direct", limits=Limits(max_tokens=500, raise_on_limit=True))
    with pytest.raises(LimitExceeded) as info:
        rlm.run(QUESTION, DOC)
    assert info.value.result is not None
    assert info.value.result.strategy == "direct"
    assert info.value.result.stop_reason is StopReason.MAX_TOKENS


def test_a_failed_direct_call_keeps_its_result():
    lm = RecordingLM([], name="root")  # no reply: ScriptMismatch
    with pytest.raises(ScriptMismatch) as info:
        RLM(lm, strategy="direct").run(QUESTION, DOC)
    result = info.value.result
    assert result is not None and result.strategy == "direct"
    assert result.stop_reason is StopReason.ERROR


# ---- auto --------------------------------------------------------------------------------------


def test_auto_answers_a_short_context_directly():
    lm = RecordingLM(["2031-04-05"], name="root", window=32_768)
    r = RLM(lm, strategy="auto").run(QUESTION, DOC)
    assert r.strategy == "direct" and r.strategy_reason.startswith("auto chose direct")
    assert r.iterations == 0 and r.answer == "2031-04-05"
    assert len(lm.calls) == 1 and DOC in lm.calls[0][1].content


def test_auto_runs_the_rlm_on_a_long_context():
    lm = RecordingLM([repl("FINAL('2031-04-05')")], name="root", window=4096)
    r = RLM(lm, strategy="auto", limits=Limits(max_iterations=3)).run(QUESTION, DOC * 5)
    assert r.strategy == "rlm" and r.strategy_reason.startswith("auto chose rlm")
    assert r.iterations == 1 and r.answer == "2031-04-05"
    assert FACT not in lm.calls[0][1].content  # the RLM's prompt: metadata, not the context
    assert lm.settings[0] is not None and lm.settings[0].expect_code is None
    run = next(s for s in r.spans if s.kind == "run")
    assert run.attrs["strategy"] == "rlm"
    assert run.attrs["strategy_reason"] == r.strategy_reason


def test_auto_runs_the_rlm_for_a_model_without_a_window():
    lm = RecordingLM([repl("FINAL('x')")], name="root")
    r = RLM(lm, strategy="auto").run(QUESTION, "short")
    assert r.strategy == "rlm" and "declares no context window" in r.strategy_reason


def test_auto_uses_the_root_window_the_user_gives():
    lm = RecordingLM(["2031-04-05"], name="root")
    r = RLM(lm, strategy="auto", root_window=32_768).run(QUESTION, DOC)
    assert r.strategy == "direct" and r.answer == "2031-04-05"
    lm = RecordingLM([repl("FINAL('x')")], name="root", window=100_000)
    r = RLM(lm, strategy="auto", root_window=1024).run(QUESTION, DOC * 5)
    assert r.strategy == "rlm"


def test_the_default_is_the_rlm():
    lm = RecordingLM([repl("FINAL('x')")], name="root", window=100_000)
    r = RLM(lm).run(QUESTION, "short")
    assert r.strategy == "rlm" and r.strategy_reason == "asked for rlm" and r.iterations == 1


# ---- configuration -----------------------------------------------------------------------------


def test_the_strategy_is_part_of_the_run_config():
    config = RunConfig(strategy="direct")
    data = json.loads(json.dumps(config.to_dict()))
    assert data["strategy"] == "direct"
    assert RunConfig.from_dict(data) == config
    old = {k: v for k, v in RunConfig().to_dict().items() if k != "strategy"}
    assert RunConfig.from_dict(old).strategy == "rlm"
    assert RunConfig(strategy="AUTO").strategy == "auto"
    with pytest.raises(ConfigError, match="choose one of auto, rlm, direct"):
        RunConfig(strategy="fastest")
    with pytest.raises(ConfigError, match="choose one of auto, rlm, direct"):
        RLM(ScriptedLM(["x"]), strategy="fastest")


def test_a_journaled_direct_run_rebuilds_with_its_strategy():
    lm = RecordingLM(["2031-04-05"], name="root")
    r = RLM(lm, strategy="direct").run(QUESTION, DOC, run_id="strategy-run")
    assert r.strategy == "direct"
    rebuilt = RLM.from_journal("strategy-run", model=ScriptedLM(["x"]))
    assert rebuilt.config.strategy == "direct"
    # The journal holds the direct call: resuming replays it without asking the model.
    silent = ScriptedLM([], name="root")
    again = RLM.resume("strategy-run", model=silent)
    assert again.answer == "2031-04-05" and again.strategy == "direct"
    assert again.replayed_calls == 1 and silent.calls == []
    assert RLM.from_config(RunConfig(strategy="auto"), model=ScriptedLM(["x"])).config.strategy == (
        "auto"
    )


def test_settings_and_cache_keys_are_unchanged_without_expect_code():
    assert RunConfig(temperature=0.0).root_settings == LMSettings(temperature=0.0)
    assert LMSettings(temperature=0.0, max_output_tokens=5).to_dict() == {
        "temperature": 0.0,
        "max_output_tokens": 5,
        "stop": None,
        "seed": None,
    }
    assert LMSettings(expect_code=False).to_dict()["expect_code"] is False
    msgs = [Message.user("q")]
    assert request_key("m", msgs, LMSettings()) == request_key("m", msgs, None)
    assert request_key("m", msgs, LMSettings()) != request_key(
        "m", msgs, LMSettings(expect_code=False)
    )


# ---- the command line --------------------------------------------------------------------------


def script(tmp_path: Path, **data) -> str:
    f = tmp_path / "script.json"
    f.write_text(json.dumps(data))
    return f"scripted:{f}"


@pytest.fixture
def no_env_strategy(monkeypatch):
    monkeypatch.delenv("RECURSA_STRATEGY", raising=False)


def test_cli_direct_puts_the_context_in_the_prompt(tmp_path, doc, capsys, no_env_strategy):
    # The rule matches only a prompt holding the context's fact and then the question.
    model = script(
        tmp_path,
        rules=[{"match": r"launch date is 2031-04-05[\s\S]*Question: When\?$", "reply": "2031"}],
    )
    code = main(["ask", "-c", str(doc), "-m", model, "--strategy", "direct", "--json", "When?"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["answer"] == "2031" and data["iterations"] == 0
    assert data["strategy"] == "direct" and data["stop_reason"] == "final"


def test_cli_auto_without_a_window_runs_the_rlm(tmp_path, doc, capsys, no_env_strategy):
    model = script(tmp_path, replies=[repl("FINAL('2031-04-05')")])
    code = main(["ask", "-c", str(doc), "-m", model, "--strategy", "auto", "When?"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "2031-04-05\n"
    assert "strategy: auto chose rlm" in err
    assert "final after 1 iteration(s)" in err


def test_cli_strategy_from_the_environment(tmp_path, doc, capsys, monkeypatch):
    monkeypatch.setenv("RECURSA_STRATEGY", "direct")
    code = main(["ask", "-c", str(doc), "-m", script(tmp_path, default="42"), "-q", "--json", "q"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["strategy"] == "direct"


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_bad_strategy_is_a_clean_error(tmp_path, doc, capsys, no_env_strategy, as_json):
    argv = ["ask", "-c", str(doc), "-m", script(tmp_path, default="x"), "--strategy", "fast", "q"]
    code = main(argv + (["--json"] if as_json else []))
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err + out
    message = json.loads(out)["error"]["message"] if as_json else err
    assert "--strategy" in message and "choose one of auto, rlm, direct" in message


def test_serve_passes_the_strategy_to_every_rlm(tmp_path, no_env_strategy):
    from recursa.cli.options import LimitOptions
    from recursa.cli.serve import server_config

    limits = LimitOptions(
        max_iterations=3,
        max_depth=1,
        max_cost=None,
        max_calls=None,
        max_tokens=None,
        timeout=60,
        cell_timeout=30,
    )
    common = {
        "model": script(tmp_path, default="x"),
        "sub_model": None,
        "base_url": [],
        "sandbox": "process",
        "limits": limits,
        "max_runs": 1,
        "no_store": True,
        "keep_runs": 1,
    }
    pytest.importorskip("starlette")
    config = server_config(**common, strategy="auto")
    assert config.rlm_options["strategy"] == "auto"
    assert server_config(**common).rlm_options["strategy"] == "rlm"
    with pytest.raises(ConfigError, match="--strategy"):
        server_config(**common, strategy="fast")


# ---- the bench -----------------------------------------------------------------------------------


def test_the_bench_has_an_auto_method():
    assert "auto" in METHODS
    assert parse_methods("rlm,auto") == ["rlm", "auto"]


@pytest.mark.parametrize(("window", "chosen"), [(32_768, "direct"), (2048, "rlm")])
async def test_bench_auto_records_its_choice(tmp_path, window, chosen):
    task = make_tasks("niah", [2048], 1, seed=0)[0]
    code = (
        "import re\n"
        "m = re.findall(r'special magic numbers for [\\w-]+ is: (\\d{7})', context)\n"
        "FINAL(m[0])"
    )
    # A direct prompt is the context, then the question; an RLM's first turn starts with it.
    direct = r"[\s\S]{1000,}\n\nQuestion: "
    root = ScriptedLM(rules=[(direct, task.gold)], default=repl(code), name="root")
    env = build_env(root, window=window, limits=Limits(max_iterations=3))
    env.trace_dir = tmp_path / "traces"
    out = await run_method("auto", task, env, lambda a: score(task.scoring, a, task.gold))
    assert out.answer == task.gold and out.stop_reason == "final"
    assert out.notes["strategy"] == chosen
    assert out.notes["strategy_reason"].startswith(f"auto chose {chosen}")
    assert out.iterations == (0 if chosen == "direct" else 1)
    assert out.trace_path is not None and out.trace_path.name == f"{task.task_id}.auto.jsonl"
    run = next(s for s in read_trace(out.trace_path).spans if s.kind == "run")
    assert run.attrs["score"] == 1.0 and run.attrs["strategy"] == chosen


# ---- the embedded local backend --------------------------------------------------------------------


@pytest.fixture
def fake_local(monkeypatch, tmp_path):
    """A LocalLM whose llama.cpp model is a recorder (no weights loaded)."""
    from concurrent.futures import ThreadPoolExecutor

    import recursa.lm.local as local
    from recursa.embedded.runtime import CallResult

    class Fake:
        def __init__(self) -> None:
            self.executor = ThreadPoolExecutor(1)
            self.calls: list[dict] = []

        def run(self, slot, messages, **kw) -> CallResult:
            self.calls.append({"slot": slot, **kw})
            return CallResult("42", 50, 0, 2, "stop")

    fake = Fake()
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: True)
    monkeypatch.setattr(local.LocalLM, "_loaded", lambda self: fake)
    yield local, gguf, fake
    fake.executor.shutdown()


async def test_the_local_backend_does_not_start_a_direct_answer_as_code(fake_local):
    local, gguf, fake = fake_local
    lm = local.LocalLM(str(gguf))
    chat = [Message.system("s"), Message.user("u")]
    await lm.complete(chat, LMSettings(expect_code=False))
    await lm.complete(chat, LMSettings())
    await lm.complete(chat, LMSettings(expect_code=True))
    assert [c["code_turn"] for c in fake.calls] == [False, True, True]
    assert {c["slot"] for c in fake.calls} == {"conversation"}


def test_the_local_backend_declares_its_window(fake_local):
    local, gguf, _ = fake_local
    assert local.LocalLM(str(gguf)).capabilities.context_window == local.DEFAULT_N_CTX
    assert local.LocalLM(str(gguf), n_ctx=4096).capabilities.context_window == 4096
    from recursa.lm.base import ProviderOptions

    lm = local.local_from_env(str(gguf), ProviderOptions(), {"RECURSA_LOCAL_CTX": "8192"})
    assert lm.capabilities.context_window == 8192


def test_a_direct_run_on_the_local_backend_is_not_a_code_turn(fake_local):
    local, gguf, fake = fake_local
    r = RLM(local.LocalLM(str(gguf)), strategy="auto", journal=False).run(QUESTION, DOC)
    assert r.strategy == "direct" and r.answer == "42"
    assert [c["code_turn"] for c in fake.calls] == [False]


@pytest.mark.slow
def test_the_real_local_model_answers_directly():
    from recursa.examples.haystack import haystack
    from recursa.lm.local import LocalLM

    require_local_model()
    lm = LocalLM(env=WEIGHTS_ENV)
    fact = "The shipping manifest for crate 58 lists 316 copper valves."
    text = haystack(1_500, seed=11, needle=fact, at=0.45)
    question = (
        "How many copper valves does the manifest for crate 58 list? Reply with the number only."
    )
    r = RLM(lm, strategy="auto", journal=False, max_output_tokens=16).run(question, text)
    assert r.strategy == "direct" and r.stop_reason is StopReason.FINAL
    assert not r.answer.startswith("```")  # not started as a code block
    assert "316" in r.answer
