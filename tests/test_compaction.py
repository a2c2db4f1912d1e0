"""Compaction of long root conversations: the pure choices, then whole runs that compact."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from recursa import RLM, Limits, ScriptedLM, StopReason
from recursa.cli import main
from recursa.compaction import (
    TRANSCRIPT_VAR,
    Compactor,
    Measured,
    alternates,
    compacted_messages,
    estimate_tokens,
    next_trigger,
    plan_compaction,
    should_compact,
    summary_request,
)
from recursa.config import RunConfig
from recursa.errors import ConfigError
from recursa.limits import UsageMeter
from recursa.lm.base import Capabilities
from recursa.trace.jsonl import read_trace
from recursa.trace.show import render_tree
from recursa.types import LMSettings, Message, Usage

from .conftest import repl

S, U, A = Message.system, Message.user, Message.assistant
SUMMARY = "SUMMARY: steps 0-2 printed filler; nothing found; next read step 3."
COMPACTION_RULE = (r"\[Compaction\]", SUMMARY)


def conversation(turns: int, size: int = 100) -> list[Message]:
    msgs = [S("system prompt"), U("Question: q")]
    for i in range(turns):
        msgs += [A(f"code {i} " + "c" * size), U(f"output {i} " + "o" * size)]
    return msgs


# ---- pure functions ---------------------------------------------------------------------------


def test_estimate_uses_the_reported_usage_for_its_prefix_and_chars_for_the_rest():
    msgs = conversation(2, size=700)
    by_chars = estimate_tokens(msgs)
    assert by_chars == sum(-(-len(m.content) // 3.5) + 4 for m in msgs)
    measured = Measured(messages=len(msgs) - 1, tokens=10_000)  # all but the last output
    assert estimate_tokens(msgs, measured) == 10_000 + estimate_tokens(msgs[-1:])
    # A measurement of a longer conversation than this one (it was compacted since) is ignored.
    assert estimate_tokens(msgs[:3], measured) == estimate_tokens(msgs[:3])


def test_threshold_decision():
    assert should_compact(850, 1000, 0.85)
    assert not should_compact(849, 1000, 0.85)
    assert should_compact(500, 1000, 0.5)
    assert not should_compact(10**9, None, 0.85)  # no window known: never


def test_after_a_compaction_that_stays_over_the_threshold_the_next_waits_for_room():
    assert next_trigger(3000, 3400, 4000) is None  # under the threshold: back to it
    assert next_trigger(3600, 3400, 4000) == 3800  # over: halfway from what is left to the window


def test_the_plan_keeps_the_head_and_the_last_turns():
    msgs = conversation(5)
    plan = plan_compaction(msgs, keep_turns=2)
    assert plan is not None
    assert (plan.head, plan.tail, plan.removed, plan.turns_removed) == (2, 4, 6, 3)
    new = compacted_messages(msgs, plan, "Question: q", "NOTE")
    assert [m.content for m in new[:2]] == ["system prompt", "Question: q\n\nNOTE"]
    assert new[2:] == msgs[-4:]  # the last two turns, verbatim
    assert alternates(new)


def test_the_plan_keeps_one_turn_and_removes_one_at_least():
    assert plan_compaction(conversation(0)) is None
    assert plan_compaction(conversation(1)) is None  # one turn: nothing to remove
    plan = plan_compaction(conversation(2), keep_turns=5)
    assert plan is not None and plan.tail == 2 and plan.turns_removed == 1
    # Kept turns too large for the budget are summarized too, down to the last one.
    msgs = conversation(4, size=3500)
    small = plan_compaction(msgs, keep_turns=3, tail_tokens=1500)
    assert small is not None and small.tail == 2
    assert plan_compaction(msgs, keep_turns=3, tail_tokens=10**6).tail == 6  # type: ignore[union-attr]


def test_a_conversation_that_does_not_alternate_is_left_alone():
    odd = [*conversation(3), A("two assistant messages in a row")]
    assert not alternates(odd)
    assert plan_compaction(odd) is None
    assert not alternates([U("q"), S("system in the middle"), U("x")])
    assert alternates(conversation(3))


def test_the_summary_request_follows_the_conversation_when_there_is_room():
    msgs = conversation(4, size=1000)
    plan = plan_compaction(msgs)
    assert plan is not None
    request, cap, form = summary_request(msgs, plan, window=10_000, tokens=estimate_tokens(msgs))
    assert form == "prefix"
    assert request[:-1] == msgs[:-1]  # a cached prefix stays a prefix
    assert request[-1].content.startswith(msgs[-1].content)
    assert "[Compaction]" in request[-1].content and "Do not write code" in request[-1].content
    assert 0 < cap <= 10_000 // 8
    assert alternates(request)


def test_the_summary_request_stands_alone_and_fits_when_the_window_is_full():
    msgs = conversation(30, size=3000)  # about 52,000 tokens
    plan = plan_compaction(msgs)
    assert plan is not None
    window = 8000
    request, cap, form = summary_request(msgs, plan, window=window, tokens=estimate_tokens(msgs))
    assert form == "standalone"
    assert [m.role for m in request] == ["system", "user"]
    assert "Question: q" in request[1].content and "[Compaction]" in request[1].content
    assert "output 0" in request[1].content and "output 29" in request[1].content
    assert estimate_tokens(request) + cap <= window


def test_bad_compaction_settings_are_config_errors():
    for threshold in (0, 1.5, -0.1, True, "high"):
        with pytest.raises(ConfigError, match="compaction_threshold"):
            RunConfig(compaction_threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="root_window"):
        RunConfig(root_window=100)
    with pytest.raises(ConfigError, match="root_window"):
        RunConfig(root_window=4000.5)  # type: ignore[arg-type]
    config = RunConfig(compaction=True, compaction_threshold=0.6, root_window=32_000)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert (again.compaction, again.compaction_threshold, again.root_window) == (True, 0.6, 32_000)
    rlm = RLM.from_config(again, model=ScriptedLM([]))
    assert rlm.config.root_window == 32_000 and rlm.config.compaction is True


# ---- runs that compact ------------------------------------------------------------------------


def step(i: int, chars: int = 2500) -> str:
    return repl(f"print('MARK{i} ' + '{chr(97 + i)}' * {chars})")


SEARCH = repl(
    f"print(len({TRANSCRIPT_VAR}))\n"
    f"print([i for i, m in enumerate({TRANSCRIPT_VAR}) if 'MARK1 ' in m['content']])"
)


def windowed(replies, window: int | None = 5000, **kw) -> ScriptedLM:
    lm = ScriptedLM(replies, rules=[COMPACTION_RULE], name="root", **kw)
    lm.capabilities = Capabilities(greedy_by_default=True, context_window=window)
    return lm


def long_run(window: int | None = 5000, *, steps: int = 5, **kw):
    lm = windowed([*(step(i) for i in range(steps)), SEARCH, repl("FINAL('done')")], window)
    kw.setdefault("journal", False)
    kw.setdefault("limits", Limits(max_iterations=steps + 3))
    rlm = RLM(lm, **kw)
    return lm, rlm.run("What is there?", "some context " * 100)


def spans_of(result, kind):
    return [s for s in result.spans if s.kind == kind]


def test_a_long_run_compacts_and_keeps_the_transcript_in_the_repl():
    lm, r = long_run()
    assert r.answer == "done" and r.stop_reason is StopReason.FINAL
    [comp] = spans_of(r, "compaction")
    a = comp.attrs
    assert a["turns_removed"] >= 1 and a["tokens_after"] < a["tokens_before"]
    assert a["tokens_before"] >= a["threshold_tokens"] == int(0.85 * 5000)
    assert a["summary_chars"] == len(SUMMARY)
    # The summary request went to the root model through the gate, under the span.
    [call] = [s for s in r.spans if s.kind == "lm_call" and s.parent_id == comp.id]
    assert call.attrs["role"] == "compaction" and call.attrs["response"] == SUMMARY
    assert a["usage"]["calls"] == 1
    summary_call = next(i for i, p in enumerate(lm.prompts) if "[Compaction]" in p)
    root_turns = [i for i in range(len(lm.calls)) if i != summary_call]
    assert r.usage.calls == len(lm.calls) == len(root_turns) + 1  # charged like any call
    # The next root prompt holds the summary and the note, not the removed turns.
    after = lm.calls[summary_call + 1]
    text = "\n".join(m.content for m in after)
    assert SUMMARY in text and TRANSCRIPT_VAR in text
    assert "MARK0 " not in text and "MARK1 " not in text
    assert "Question: What is there?" in after[1].content  # the first turn stays
    assert alternates(after)
    # The model's code found the removed turns in the REPL variable: the reply that printed
    # MARK1 and its output, every message but the system prompt.
    search_output = lm.prompts[-1]
    assert f"\n{a['transcript_messages']}\n[3, 4]" in "\n" + search_output
    assert a["transcript_messages"] == a["messages_before"] - 1


def test_two_compactions_append_to_the_transcript_without_duplicates():
    steps = 9
    lm = windowed(
        [
            *(step(i) for i in range(steps)),
            repl(
                "import collections\n"
                f"c = collections.Counter(m['content'][:5] for m in {TRANSCRIPT_VAR} "
                "if m['content'].startswith('MARK'))\nprint(sorted(set(c.values())), len(c))"
            ),
            repl("FINAL('done')"),
        ]
    )
    r = RLM(lm, limits=Limits(max_iterations=steps + 3), journal=False).run("q", "ctx")
    comps = spans_of(r, "compaction")
    assert len(comps) >= 2
    assert comps[-1].attrs["transcript_messages"] > comps[0].attrs["transcript_messages"]
    # Every output so far is in the transcript (they start with MARKn), and none twice.
    outputs = (comps[-1].attrs["transcript_messages"] - 1) // 2
    assert f"[1] {outputs}\n" in lm.prompts[-1]
    # Only one compaction note: the second replaced the first.
    last = "\n".join(m.content for m in lm.calls[-1])
    assert last.count("[Earlier turns compacted]") == 1
    assert "compaction 2 of this run" in last


def test_compaction_off_or_no_window_never_compacts():
    lm, r = long_run(compaction=False)
    assert not spans_of(r, "compaction") and not any("[Compaction]" in p for p in lm.prompts)
    assert r.warnings == ()
    lm, r = long_run(window=None)  # default: on only when the window is known, silently
    assert not spans_of(r, "compaction") and r.warnings == ()
    lm, r = long_run(window=None, compaction=True)  # asked for: said once
    assert not spans_of(r, "compaction")
    assert len(r.warnings) == 1 and "--root-window" in r.warnings[0]


def test_a_window_too_small_for_the_first_turn_and_last_output_is_said_once():
    _, r = long_run(window=2600)
    comps = spans_of(r, "compaction")
    assert r.answer == "done" and len(comps) >= 2
    assert all(s.attrs["tokens_after"] >= s.attrs["threshold_tokens"] for s in comps)
    for before, after in itertools.pairwise(comps):
        assert after.attrs["tokens_before"] >= (before.attrs["tokens_after"] + 2600) // 2
    [warning] = r.warnings
    assert "could not bring" in warning and "--max-output-chars" in warning


def test_root_window_compacts_a_model_that_declares_none():
    _, r = long_run(window=None, root_window=5000, compaction_threshold=0.7)
    [comp, *_] = spans_of(r, "compaction")
    assert comp.attrs["window"] == 5000 and comp.attrs["threshold_tokens"] == 3500


def test_a_budget_that_cannot_pay_the_summary_stops_the_run_cleanly():
    lm, _ = long_run()
    calls_before_summary = next(i for i, p in enumerate(lm.prompts) if "[Compaction]" in p)
    lm, r = long_run(limits=Limits(max_iterations=8, max_llm_calls=calls_before_summary))
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert not any("[Compaction]" in p for p in lm.prompts)
    assert r.usage.calls == calls_before_summary


def test_a_resumed_run_replays_its_compaction_from_the_journal(tmp_path):
    _, r = long_run(journal=True, runs_root=tmp_path)
    assert spans_of(r, "compaction")
    replayer = windowed([])  # any call it gets fails: every answer must come from the journal
    again = RLM(replayer, runs_root=tmp_path, limits=Limits(max_iterations=8)).resume(r.run_id)
    assert again.answer == "done"
    assert replayer.calls == []
    assert again.replayed_calls == r.usage.calls
    assert [s.attrs["tokens_after"] for s in spans_of(again, "compaction")] == [
        s.attrs["tokens_after"] for s in spans_of(r, "compaction")
    ]


# ---- the command line -------------------------------------------------------------------------


def test_cli_root_window_compacts_and_trace_show_reads_it(tmp_path: Path, capsys):
    script = tmp_path / "script.json"
    replies = [*(step(i) for i in range(5)), repl("FINAL('done')")]
    rules = [{"match": COMPACTION_RULE[0], "reply": SUMMARY}]
    script.write_text(json.dumps({"replies": replies, "rules": rules}))
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("some context\n" * 50)
    trace = tmp_path / "t.jsonl"
    argv = ["ask", "-c", str(ctx), "-m", f"scripted:{script}", "--root-window", "5000"]
    code = main([*argv, "--trace", str(trace), "-q", "--no-journal", "What is there?"])
    assert code == 0, capsys.readouterr().err
    spans = read_trace(trace).spans
    [comp] = [s for s in spans if s.kind == "compaction"]
    assert comp.attrs["window"] == 5000
    capsys.readouterr()
    assert main(["trace", "show", str(trace)]) == 0
    shown = capsys.readouterr().out
    assert "compaction 1 ·" in shown and "turns → summary" in shown and "lm compaction" in shown
    tree = render_tree(read_trace(trace), full=True)
    assert tree is not None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compaction-threshold", "1.5"], "--compaction-threshold"),
        (["--root-window", "10"], "--root-window"),
    ],
)
def test_cli_bad_compaction_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("x")
    code = main(["ask", "-c", str(ctx), "-m", "scripted:x.json", *flags, "q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_no_compaction_flag_reaches_the_config(tmp_path, capsys):
    script = tmp_path / "script.json"
    replies = [*(step(i) for i in range(5)), repl("FINAL('done')")]
    script.write_text(json.dumps({"replies": replies}))  # no rule: a summary call would fail
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("x")
    argv = ["ask", "-c", str(ctx), "-m", f"scripted:{script}", "--root-window", "5000"]
    assert main([*argv, "--no-compaction", "-q", "--no-journal", "q"]) == 0


def test_a_usage_of_zero_falls_back_to_the_estimate():
    # A server that reports no usage must not make the conversation look empty.
    c = Compactor(None, ScriptedLM([]), 0, UsageMeter(), None, LMSettings(), 1000, 0.85)  # type: ignore[arg-type]
    c.observe(3, Usage(input_tokens=0, output_tokens=0))
    assert c._measured is None
    c.observe(3, Usage(input_tokens=900, output_tokens=100))
    assert c._measured == Measured(3, 1000)


def test_a_compacted_run_exports_each_root_turn_with_the_prompt_it_was_sent(tmp_path):
    from recursa.trace.jsonl import read_trace
    from recursa.trace.sft import examples_from_spans

    path = tmp_path / "t.jsonl"
    lm = windowed([*(step(i) for i in range(5)), SEARCH, repl("FINAL('done')")])
    rlm = RLM(lm, journal=False, limits=Limits(max_iterations=8))
    assert rlm.run("What is there?", "some context " * 100, trace=path).answer == "done"
    examples = examples_from_spans(read_trace(path).spans)
    root_calls = [c for c, p in zip(lm.calls, lm.prompts, strict=True) if "[Compaction]" not in p]
    replies = [
        r for r, p in zip(lm.replies_given, lm.prompts, strict=True) if "[Compaction]" not in p
    ]
    assert len(examples) == len(root_calls) == 7
    for example, call, reply in zip(examples, root_calls, replies, strict=True):
        assert list(example.messages) == [
            *(m.to_dict() for m in call),
            {"role": "assistant", "content": reply},
        ]
