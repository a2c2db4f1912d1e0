"""The steps of one iteration, each alone: parse, run, judge, render (recursa.iteration)."""

from __future__ import annotations

from recursa.iteration import (
    Cell,
    History,
    format_cell,
    judge,
    parse,
    render,
    run_cells,
    truncate,
)
from recursa.prompts import STANDARD, STRICT
from recursa.types import CellResult


def cell(stdout: str = "", *, error: str | None = None, final: str | None = None) -> Cell:
    res = CellResult(stdout=stdout, error=error, final=final)
    return Cell("print(1)", res, format_cell(res, 1, 1))


def test_parse_reads_blocks_and_a_final_outside_them() -> None:
    reply = parse('look\n```repl\nprint(1)\n```\nFINAL("x")')
    assert reply.blocks == ("print(1)",)
    assert reply.bare is not None and reply.bare.text() == "x"


async def test_run_cells_stops_at_a_final_and_restarts_a_dead_worker() -> None:
    ran: list[str] = []
    restarted: list[bool] = []

    async def execute(code: str, i: int) -> CellResult:
        ran.append(code)
        return CellResult(final="done" if code == "b" else None, fatal=code == "x", error="boom")

    async def restart() -> None:
        restarted.append(True)

    cells = await run_cells(["a", "b", "c"], execute, restart)
    assert ran == ["a", "b"] and len(cells) == 2 and not restarted
    assert cells[0].shown.startswith("[output of block 1 of 3]")
    ran.clear()
    await run_cells(["x", "y"], execute, restart)
    assert ran == ["x"] and restarted == [True]


def test_judge_accepts_a_cell_final_under_the_standard_profile() -> None:
    reply = parse("```repl\nFINAL('42')\n```")
    verdict, history = judge(STANDARD, History(), reply, [cell(final="42")])
    assert verdict.final == "42"
    assert history.code_ran


def test_judge_strict_refuses_an_answer_before_any_code_and_keeps_it_as_candidate() -> None:
    verdict, history = judge(STRICT, History(), parse('FINAL("Paris")'), [])
    assert verdict.final is None and verdict.message == STRICT.final_before_code
    assert history.candidate == "Paris" and history.consecutive_errors == 1
    # The standard profile takes the same reply as the answer.
    assert judge(STANDARD, History(), parse('FINAL("Paris")'), [])[0].final == "Paris"


def test_judge_strict_pushes_back_once_on_an_answer_no_output_showed() -> None:
    seen = History(code_ran=True, shown=" the capital is lyon")
    verdict, history = judge(STRICT, seen, parse('FINAL("Paris")'), [])
    assert verdict.message is not None and "Paris" in verdict.message
    assert history.pushed_back and history.candidate == "Paris"
    again, _ = judge(STRICT, history, parse('FINAL("Paris")'), [])
    assert again.final == "Paris"  # only once
    shown, _ = judge(STRICT, seen, parse('FINAL("Lyon")'), [])
    assert shown.final == "Lyon"  # it appeared in an output


def test_judge_marks_repeated_code_and_counts_errors() -> None:
    reply = parse("```repl\nprint(1)\n```")
    first, history = judge(STANDARD, History(), reply, [cell(error="NameError")])
    assert not first.repeated and history.consecutive_errors == 1
    second, history = judge(STANDARD, history, reply, [cell(error="NameError")])
    assert second.repeated and history.consecutive_errors == 2
    _, history = judge(STANDARD, history, reply, [cell("ok")])
    assert history.consecutive_errors == 0


def test_an_answer_now_turn_takes_the_final_as_it_is() -> None:
    verdict, _ = judge(STRICT, History(), parse('FINAL("guess")'), [], last_turn=True)
    assert verdict.final == "guess"
    verdict, _ = judge(STRICT, History(), parse("no answer"), [], last_turn=True)
    assert verdict.final is None


def test_render_frames_output_truncates_and_nudges() -> None:
    reply = parse("```repl\nprint(1)\n```")
    verdict, _ = judge(STANDARD, History(), reply, [cell("x" * 500)])
    text = render(STANDARD, [cell("x" * 500)], verdict, 100)
    assert "characters of output cut" in text
    assert text.endswith(STANDARD.after_output)
    assert truncate("short", 100) == "short"
    assert render(STANDARD, [], judge(STANDARD, History(), parse("hi"), [])[0], 100) == (
        STANDARD.no_code
    )


def test_a_profiles_nudge_may_restate_the_question() -> None:

    verdict = judge(STRICT, History(), parse("```repl\nprint(1)\n```"), [cell("1")])[0]
    text = render(STRICT, [cell("1")], verdict, 1000, "How many   plums\nare there?")
    assert "The question is: How many plums are there?" in text
    assert "${question}" not in render(STANDARD, [cell("1")], verdict, 1000, "q")
