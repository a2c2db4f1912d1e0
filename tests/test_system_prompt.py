"""A system prompt of the user's own and a prologue: what the root model is sent, how they meet
prompt profiles and child RLMs, how they are journaled, and their errors (library and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recursa import RLM, ConfigError, Limits, ScriptedLM
from recursa.cli import main
from recursa.config import RunConfig
from recursa.prompts import STRICT, SYSTEM_PLACEHOLDERS, check_system_prompt

from .conftest import make_rlm, repl

CTX = "The vault code is 2718.\n" + "filler\n" * 500
MINE = "You are VaultBot. Context: ${context_hint}. Price: $5, shell: $HOME.\n${subcall_doc}"


def system_sent(lm: ScriptedLM, call: int = 0) -> str:
    messages = lm.calls[call]
    assert messages[0].role == "system"
    return messages[0].content


# ---- the system prompt -------------------------------------------------------------------------


def test_a_custom_system_prompt_is_sent_with_its_placeholders_filled():
    rlm = make_rlm([repl("FINAL('2718')")], system_prompt=MINE)
    assert rlm.run("What is the code?", CTX).answer == "2718"
    sent = system_sent(rlm.root_lm)
    assert sent.startswith(f"You are VaultBot. Context: a str of {len(CTX):,} characters.")
    assert "Price: $5, shell: $HOME." in sent  # a bare $ is kept
    assert "`llm_query(prompt)`" in sent  # ${subcall_doc}
    assert "How to work:" not in sent  # nothing of the profile's own system text
    first_user = rlm.root_lm.calls[0][1].content
    assert "Question: What is the code?" in first_user  # the profile's first turn stays


def test_placeholders_follow_the_run_settings():
    text = "hint=${context_hint}|doc=${subcall_doc}|method=${subcall_method}|ex=${subcall_example}"
    rlm = make_rlm([repl("FINAL('x')")], system_prompt=text, sub_calls=False)
    rlm.run("q", ["a", "bb"])
    sent = system_sent(rlm.root_lm)
    assert sent.startswith("hint=a list of 3 characters|doc=|method=")
    assert "solve it with code alone" in sent
    assert sent.endswith("|ex=")


def test_a_system_prompt_from_a_file(tmp_path: Path):
    f = tmp_path / "system.md"
    f.write_text("From a file. ${context_hint}\n", encoding="utf-8")
    rlm = make_rlm([repl("FINAL('x')")], system_prompt=f)
    rlm.run("q", CTX)
    assert system_sent(rlm.root_lm).startswith("From a file. a str of")
    assert rlm.config.system_prompt == "From a file. ${context_hint}\n"  # the text, not the path


def test_escaped_placeholders_are_literal():
    rlm = make_rlm([repl("FINAL('x')")], system_prompt="Write $${answer} like this.")
    rlm.run("q", CTX)
    assert system_sent(rlm.root_lm) == "Write ${answer} like this."


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("Hi ${context_hnt}", r"uses \$\{context_hnt\}, which recursa does not fill"),
        ("Hi ${}", r"uses \$\{\}, which"),
        ("   \n", "the system prompt is empty"),
    ],
)
def test_bad_system_prompts_are_config_errors(prompt, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_rlm([], system_prompt=prompt)
    if "fill" in message:
        assert all(f"${{{name}}}" in str(info.value) for name in SYSTEM_PLACEHOLDERS)


def test_unreadable_prompt_files_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="system prompt file not found"):
        make_rlm([], system_prompt=tmp_path / "missing.md")
    with pytest.raises(ConfigError, match="is a folder"):
        make_rlm([], system_prompt=tmp_path)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9")
    with pytest.raises(ConfigError, match="not UTF-8"):
        make_rlm([], prologue=latin)
    big = tmp_path / "big.txt"
    big.write_text("x" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="put large material in the context"):
        make_rlm([], system_prompt=big)
    with pytest.raises(ConfigError, match="prologue must be text"):
        RunConfig(prologue=3)  # type: ignore[arg-type]


def test_the_profile_keeps_its_rules_under_a_custom_system_prompt():
    rlm = make_rlm(
        ["FINAL(99)", repl("print(context[:24])"), "FINAL(2718)"],
        prompt_profile="strict",
        system_prompt="Custom. ${subcall_method}",
    )
    assert rlm.run("q", CTX).answer == "2718"
    assert system_sent(rlm.root_lm).startswith("Custom. 3. Let sub-calls")
    assert STRICT.final_before_code in rlm.root_lm.calls[1][-1].content


# ---- the prologue ------------------------------------------------------------------------------


def test_the_prologue_comes_before_the_question_in_the_first_turn():
    rlm = make_rlm([repl("print(1)"), repl("FINAL('x')")], prologue="Answer in French.")
    rlm.run("What is the code?", CTX)
    first = rlm.root_lm.calls[0]
    assert [m.role for m in first] == ["system", "user"]  # no user turn of its own
    assert first[1].content.startswith("Answer in French.\n\n")
    assert first[1].content.index("Answer in French.") < first[1].content.index("Question:")
    later = rlm.root_lm.calls[1]
    assert sum("Answer in French." in m.content for m in later) == 1  # said once


def test_a_prologue_from_a_file_and_an_empty_one(tmp_path: Path):
    f = tmp_path / "tips.md"
    f.write_text("Tip: the code follows 'vault code is'.", encoding="utf-8")
    rlm = make_rlm([repl("FINAL('x')")], prologue=f)
    rlm.run("q", CTX)
    assert rlm.root_lm.calls[0][1].content.startswith("Tip: the code follows")
    assert make_rlm([], prologue="  ").config.prologue is None


def test_children_get_the_system_prompt_but_not_the_prologue():
    child = ScriptedLM(rules=[(r"Question: count", repl("FINAL('3')"))], name="child")
    rlm = make_rlm(
        [repl("n = rlm_query('count the x', context='x x x')\nprint(n)"), repl("FINAL(n)")],
        child,
        limits=Limits(max_depth=1),
        system_prompt="Mine: ${context_hint}",
        prologue="ROOT ONLY",
    )
    assert rlm.run("q", CTX).answer == "3"
    assert system_sent(child) == "Mine: a str of 5 characters"
    assert "ROOT ONLY" not in child.calls[0][1].content
    assert "ROOT ONLY" in rlm.root_lm.calls[0][1].content


# ---- recorded as data --------------------------------------------------------------------------


def test_run_config_round_trip_and_from_config():
    config = RunConfig(system_prompt="S ${context_hint}", prologue="P")
    data = json.loads(json.dumps(config.to_dict()))
    assert data["system_prompt"] == "S ${context_hint}" and data["prologue"] == "P"
    back = RunConfig.from_dict(data)
    assert (back.system_prompt, back.prologue) == ("S ${context_hint}", "P")
    rlm = RLM.from_config(back, model=ScriptedLM([]))
    assert (rlm.config.system_prompt, rlm.config.prologue) == ("S ${context_hint}", "P")
    with pytest.raises(ConfigError, match="does not fill"):
        RunConfig.from_dict({"system_prompt": "${nope}"})


def test_the_journal_keeps_the_prompts_for_a_resumed_run(tmp_path: Path):
    rlm = make_rlm([repl("FINAL('x')")], system_prompt="J ${context_hint}", prologue="PRO")
    run_id = rlm.run("q", CTX).run_id
    again = RLM.from_journal(run_id, model=ScriptedLM([repl("FINAL('y')")]))
    assert again.config.system_prompt == "J ${context_hint}"
    assert again.config.prologue == "PRO"


def test_check_system_prompt_returns_the_text():
    assert check_system_prompt("ok ${subcall_doc}") == "ok ${subcall_doc}"


# ---- the command line --------------------------------------------------------------------------


def _script(tmp_path: Path, replies: list[str]) -> str:
    f = tmp_path / "script.json"
    f.write_text(json.dumps({"replies": replies}))
    return f"scripted:{f}"


def _first_root_messages(trace: Path) -> list[dict]:
    spans = [json.loads(line) for line in trace.read_text().splitlines()]
    calls = [s for s in spans if "new_messages" in s.get("attrs", {})]
    return min(calls, key=lambda s: s["start"])["attrs"]["new_messages"]


def test_cli_system_prompt_and_prologue(tmp_path: Path, doc: Path, capsys):
    system = tmp_path / "system.md"
    system.write_text("CLI system. ${context_hint}")
    tips = tmp_path / "tips.md"
    tips.write_text("Tips from a file.")
    trace = tmp_path / "t.jsonl"
    for prologue, expected in (("Be brief.", "Be brief."), (f"@{tips}", "Tips from a file.")):
        code = main(
            [
                "ask",
                "-c",
                str(doc),
                "-m",
                _script(tmp_path, [repl("FINAL('2031-04-05')")]),
                "--system-prompt",
                str(system),
                "--prologue",
                prologue,
                "--trace",
                str(trace),
                "-q",
                "When is the launch?",
            ]
        )
        assert code == 0, capsys.readouterr().err
        assert capsys.readouterr().out == "2031-04-05\n"
        messages = _first_root_messages(trace)
        assert messages[0]["role"] == "system"
        assert messages[0]["content"].startswith("CLI system. a str of")
        assert messages[1]["content"].startswith(expected + "\n\n")


def test_cli_literal_at_prologue(tmp_path: Path, doc: Path, capsys):
    trace = tmp_path / "t.jsonl"
    argv = ["ask", "-c", str(doc), "-m", _script(tmp_path, [repl("FINAL('x')")])]
    assert main([*argv, "--prologue", "@@home", "--trace", str(trace), "-q", "q"]) == 0
    assert _first_root_messages(trace)[1]["content"].startswith("@home\n\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--system-prompt", "/nonexistent/system.md"], "--system-prompt file not found"),
        (["--prologue", "@/nonexistent/tips.md"], "--prologue file not found"),
        (["--prologue", "@"], "--prologue @FILE: name the file"),
        (["--system-prompt", "{bad}"], "which recursa does not fill"),
    ],
)
def test_cli_prompt_errors_are_one_line_and_exit_2(tmp_path, doc, capsys, args, message):
    bad = tmp_path / "bad.md"
    bad.write_text("${oops}")
    args = [a.replace("{bad}", str(bad)) for a in args]
    code = main(["ask", "-c", str(doc), "-m", _script(tmp_path, []), *args, "q"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
