"""The caller's tools: functions run on the host, called from model code through the frame
protocol, with JSON arguments and results, typed errors, a timeout, a budget, a span per call,
journal replay, and their own table per engine (``sub_tools`` for children)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from recursa import RLM, ConfigError, Limits, ScriptedLM, StopReason
from recursa.cli import main
from recursa.errors import ProtocolError, RecursaError
from recursa.journal import Journal
from recursa.prompts import STANDARD, STRICT
from recursa.sandbox.functions import DEFAULT_FUNCTIONS
from recursa.sandbox.protocol import validate_worker_message
from recursa.sandbox.worker import Repl
from recursa.tools import Tool, ToolSet, load_tools, tools_prompt

from .conftest import make_rlm, repl


class Counter:
    """A tool that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def search(self, query: str, limit: int = 2) -> list[str]:
        """Search the catalogue for `query`; at most `limit` hits."""
        self.calls.append((query, limit))
        return [f"{query}-{i}" for i in range(limit)]


def output_of(rlm: RLM, turn: int) -> str:
    """What the model was shown after turn ``turn`` (0-based) of the root."""
    return rlm.root_lm.calls[turn + 1][-1].content  # type: ignore[attr-defined]


def tool_spans(result) -> list:
    return [s for s in result.spans if s.kind == "tool"]


# ---- calls from model code -------------------------------------------------------------------


def test_a_tool_called_from_model_code_returns_its_json_result():
    c = Counter()

    def shape() -> dict:
        return {"pair": (1, 2), 3: "three", "none": None}

    rlm = make_rlm(
        [
            repl("hits = search('cat')\nprint(hits, search('dog', limit=3))\nprint(shape())"),
            repl("FINAL(hits[1])"),
        ],
        tools={"search": c.search, "shape": shape},
        journal=False,
    )
    r = rlm.run("q", "ctx")
    assert r.answer == "cat-1"
    # The host's default applies when the model leaves an optional argument out.
    assert c.calls == [("cat", 2), ("dog", 3)]
    shown = output_of(rlm, 0)
    assert "['cat-0', 'cat-1'] ['dog-0', 'dog-1', 'dog-2']" in shown
    assert "{'pair': [1, 2], '3': 'three', 'none': None}" in shown  # as JSON sees it


def test_an_async_tool_runs_on_the_loop():
    async def fetch(url: str) -> dict:
        await asyncio.sleep(0.01)
        return {"url": url, "status": 200}

    rlm = make_rlm(
        [repl("print(fetch('http://x'))"), repl("FINAL('ok')")], tools=[fetch], journal=False
    )
    assert rlm.run("q", "ctx").answer == "ok"
    assert "{'url': 'http://x', 'status': 200}" in output_of(rlm, 0)


def test_a_tool_exception_reaches_the_model_as_a_tool_error_and_the_run_goes_on():
    def lookup(key: str) -> str:
        raise KeyError(f"no entry {key}")

    code = "try:\n    lookup('a')\nexcept ToolError as e:\n    print('caught:', e)\nlookup('b')"
    rlm = make_rlm([repl(code), repl("FINAL('went on')")], tools={"lookup": lookup})
    r = rlm.run("q", "ctx")
    assert r.answer == "went on" and r.stop_reason is StopReason.FINAL
    shown = output_of(rlm, 0)
    assert "caught: lookup() raised KeyError: 'no entry a'" in shown
    assert "ToolError: lookup() raised KeyError: 'no entry b'" in shown
    # The model sees the tool's error, not the host's traceback.
    assert "toolcalls.py" not in shown and "raise KeyError" not in shown


def test_arguments_are_checked_against_the_signature_before_the_tool_runs():
    c = Counter()
    code = (
        "for call in (lambda: search(5), lambda: search('a', limit='x'), lambda: search()):\n"
        "    try:\n        call()\n    except (ToolError, TypeError) as e:\n"
        "        print(type(e).__name__, e)"
    )
    rlm = make_rlm(
        [repl(code), repl("FINAL('x')")],
        tools={"search": c.search},
        limits=Limits(max_tool_calls=1, max_iterations=4),
    )
    r = rlm.run("q", "ctx")
    shown = output_of(rlm, 0)
    assert "ToolError search() argument 'query' must be str, not int" in shown
    assert "ToolError search() argument 'limit' must be int, not str" in shown
    assert "TypeError" in shown and "missing 1 required positional argument" in shown
    # Refused arguments are not calls: the tool never ran, and no budget was spent.
    assert c.calls == [] and r.stop_reason is StopReason.FINAL


def test_non_json_arguments_and_results_are_errors_the_model_sees():
    c = Counter()

    def weird() -> object:
        return {"when": object()}

    code = (
        "try:\n    search({1, 2})\nexcept TypeError as e:\n    print('args:', e)\n"
        "try:\n    weird()\nexcept ToolError as e:\n    print('result:', e)"
    )
    rlm = make_rlm([repl(code), repl("FINAL('x')")], tools={"search": c.search, "weird": weird})
    rlm.run("q", "ctx")
    shown = output_of(rlm, 0)
    assert "args: search() argument 'query' must be a JSON value" in shown
    assert "(got set)" in shown
    assert "result: weird() returned a value that is not JSON" in shown
    assert c.calls == []


def test_a_slow_tool_times_out_and_the_run_continues():
    def slow(n: int) -> int:
        time.sleep(3)
        return n

    async def slow_async(n: int) -> int:
        await asyncio.sleep(3)
        return n

    code = (
        "for f in (slow, slow_async):\n    try:\n        f(1)\n"
        "    except ToolError as e:\n        print(e)"
    )
    rlm = make_rlm(
        [repl(code), repl("FINAL('after')")],
        tools=[slow, slow_async],
        limits=Limits(tool_timeout_s=0.3, max_iterations=4),
        journal=False,
    )
    started = time.monotonic()
    r = rlm.run("q", "ctx")
    assert r.answer == "after"
    assert time.monotonic() - started < 2.5  # neither waited for its tool
    shown = output_of(rlm, 0)
    assert "slow() took longer than 0.3s" in shown
    assert "slow_async() took longer than 0.3s" in shown
    assert [s.error is not None for s in tool_spans(r)] == [True, True]


def test_max_tool_calls_stops_the_run_like_max_llm_calls():
    c = Counter()
    code = (
        "for q in ['a', 'b', 'c']:\n    try:\n        print(search(q))\n"
        "    except Exception as e:\n        print('refused:', type(e).__name__, e)\n"
        "answer['content'] = 'partial'"
    )
    rlm = make_rlm(
        [repl(code), repl("FINAL('never')")],
        tools={"search": c.search},
        limits=Limits(max_tool_calls=2, max_iterations=4),
    )
    r = rlm.run("q", "ctx")
    assert [q for q, _ in c.calls] == ["a", "b"]
    assert r.stop_reason is StopReason.MAX_TOOL_CALLS and r.partial
    assert r.answer == "partial"
    assert "max_tool_calls=2 reached" in r.detail
    assert len(rlm.root_lm.calls) == 1  # the run stopped: no second turn
    cell = next(s for s in r.spans if s.kind == "cell")
    assert (
        "refused: BudgetExhaustedError budget exhausted: max_tool_calls=2" in cell.attrs["stdout"]
    )


def test_tools_work_with_sub_calls_off_and_in_the_in_process_sandbox():
    def boom() -> int:
        raise ValueError("nope")

    c = Counter()
    code = "print(search('x'))\ntry:\n    boom()\nexcept ToolError as e:\n    print(e)"
    rlm = make_rlm(
        [repl(code), repl("FINAL('x')")],
        tools={"search": c.search, "boom": boom},
        sub_calls=False,
        trusted=True,
        journal=False,
    )
    rlm.run("q", "ctx")
    assert "['x-0', 'x-1']" in output_of(rlm, 0)
    assert "boom() raised ValueError: nope" in output_of(rlm, 0)


# ---- children, prompts, traces ---------------------------------------------------------------


def test_sub_tools_are_visible_only_in_a_child():
    def root_tool() -> str:
        """Only the root has me."""
        return "root"

    def child_tool() -> str:
        """Only children have me."""
        return "child"

    child_code = "try:\n    root_tool()\nexcept NameError:\n    FINAL(child_tool() + ' only')\n"
    child = ScriptedLM(rules=[(r"Question: delegate", repl(child_code))], name="child")
    root_code = (
        "print(root_tool())\ntry:\n    child_tool()\nexcept NameError as e:\n    print('root:', e)\n"
        "print(rlm_query('delegate', context='c'))"
    )
    rlm = make_rlm(
        [repl(root_code), repl("FINAL('x')")],
        child,
        tools={"root_tool": root_tool},
        sub_tools={"child_tool": child_tool},
        limits=Limits(max_depth=1, max_iterations=4),
    )
    rlm.run("q", "ctx")
    shown = output_of(rlm, 0)
    assert "root\nroot: name 'child_tool' is not defined" in shown
    assert "child only" in shown
    root_system, child_system = rlm.root_lm.calls[0][0].content, child.calls[0][0].content
    assert "Only the root has me." in root_system and "child_tool" not in root_system
    assert "Only children have me." in child_system and "root_tool" not in child_system


def test_children_get_the_root_tools_unless_sub_tools_are_given():
    c = Counter()
    child = ScriptedLM(rules=[(r"Question: go", repl("FINAL(search('k')[0])"))], name="child")
    rlm = make_rlm(
        [repl("print(rlm_query('go', context='c'))"), repl("FINAL('x')")],
        child,
        tools={"search": c.search},
        limits=Limits(max_depth=1, max_iterations=4),
    )
    rlm.run("q", "ctx")
    assert "k-0" in output_of(rlm, 0) and c.calls == [("k", 2)]
    none = make_rlm(["FINAL('x')"], tools={"search": c.search}, sub_tools={})
    assert none.sub_tools == {} and none.config.sub_tools == ()


@pytest.mark.parametrize("profile", [STANDARD, STRICT])
def test_each_tools_signature_and_docstring_are_in_the_system_prompt(profile):
    c = Counter()

    def rank(items: list[str], *, by: Literal["size", "name"] = "name") -> list[str]:
        """Order `items`.

        Stable: equal items keep their order."""
        return sorted(items)

    always = repl("FINAL('x')")  # every turn: the strict profile asks again at first
    rlm = make_rlm(
        ScriptedLM(always), tools={"search": c.search, "rank": rank}, prompt_profile=profile
    )
    rlm.run("q", "ctx")
    system = rlm.root_lm.calls[0][0].content
    assert "`search(query: str, limit: int = 2) -> list[str]`: Search the catalogue" in system
    assert "`rank(items: list[str], *, by: Literal['size', 'name'] = 'name') -> list[str]`" in (
        system
    )
    assert "    Stable: equal items keep their order." in system
    assert "ToolError" in system
    # Without tools the prompt says nothing about them.
    plain = make_rlm(ScriptedLM(always), prompt_profile=profile)
    plain.run("q", "ctx")
    assert "ToolError" not in plain.root_lm.calls[0][0].content


def test_a_user_system_prompt_gets_the_tools_even_without_the_placeholder():
    c = Counter()
    rlm = make_rlm(
        ["FINAL('x')"], tools={"search": c.search}, system_prompt="Be brief. ${context_hint}"
    )
    rlm.run("q", "ctx")
    system = rlm.root_lm.calls[0][0].content
    assert system.startswith("Be brief.") and "`search(query: str" in system


def test_every_call_has_a_tool_span_under_its_cell():
    c = Counter()

    def fails(x: int) -> int:
        raise RuntimeError("down")

    code = "search('a')\ntry:\n    fails(1)\nexcept ToolError:\n    pass"
    r = make_rlm([repl(code), repl("FINAL('x')")], tools={"search": c.search, "fails": fails}).run(
        "q", "ctx"
    )
    ok, bad = tool_spans(r)
    cell = next(s for s in r.spans if s.kind == "cell")
    assert ok.parent_id == cell.id and bad.parent_id == cell.id
    assert ok.name == "search" and json.loads(ok.attrs["args"]) == {"query": "a"}
    assert json.loads(ok.attrs["result"]) == ["a-0", "a-1"] and ok.error is None
    assert ok.attrs["source"] == "tool" and ok.attrs["elapsed_s"] >= 0
    assert bad.error == "fails() raised RuntimeError: down" and bad.attrs["result"] is None


# ---- journal ---------------------------------------------------------------------------------


def test_a_resumed_run_replays_tool_results_instead_of_calling_again(tmp_path):
    c = Counter()
    first = RLM(
        ScriptedLM([repl("hits = search('cat')\nprint(hits)")], name="root"),
        tools={"search": c.search},
        runs_root=tmp_path,
        limits=Limits(max_iterations=4),
    )
    with pytest.raises(RecursaError):  # the script ends after one turn: the run fails
        first.run("q", "ctx", run_id="run-t")
    assert c.calls == [("cat", 2)]

    again = ScriptedLM([repl("FINAL(hits[0])")], name="root")
    r = RLM(again, tools={"search": c.search}, runs_root=tmp_path).resume("run-t")
    assert r.answer == "cat-0"
    assert c.calls == [("cat", 2)]  # the journal answered the second time
    [span] = tool_spans(r)
    assert span.attrs["source"] == "journal"
    # Resuming without the tools would change the prompts: a ConfigError says what to pass.
    with pytest.raises(ConfigError, match="the run used the tools search"):
        RLM.from_journal("run-t", runs_root=tmp_path)
    j = Journal.open("run-t", root=tmp_path)
    assert j.meta("config")["tools"] == ["search"]
    j.close()


# ---- definitions -----------------------------------------------------------------------------


def test_tools_are_checked_when_the_rlm_is_built():
    def f(x: int) -> int:
        return x

    def star(*args: int) -> int:
        return 0

    for bad, match in [
        ({"llm_query": f}, "taken in the REPL"),
        ({"print": f}, "taken in the REPL"),
        ({"context_0": f}, "taken in the REPL"),
        ({"answer": f}, "taken in the REPL"),
        ({"_hidden": f}, "starts with '_'"),
        ({"not valid": f}, "not a Python identifier"),
        ({"data": [1, 2]}, "not a function"),
        ({"star": star}, r"takes \*args"),
        ([lambda x: x], "not a Python identifier"),
        ("search", "a dict of name -> function"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make_rlm(["FINAL('x')"], tools=bad)


def test_the_rlms_form_and_tool_objects_are_accepted():
    def f(x: int) -> int:
        return x

    tools = ToolSet.of(
        {"g": {"tool": f, "description": "Doubles nothing."}, "h": Tool.from_function(f)}
    )
    assert list(tools) == ["g", "h"]
    assert tools["g"].doc == "Doubles nothing." and tools["h"].name == "h"
    assert tools["g"].schema()["parameters"]["required"] == ["x"]
    assert tools_prompt(ToolSet()) == ""


def test_the_worker_builds_tool_functions_with_their_defaults_on_the_host():
    def search(query: str, limit: int = 5, *, exact: bool = False) -> list[str]:
        return []

    table = ToolSet.of([search]).table()
    sent: list[tuple[str, dict]] = []
    repl_ = Repl(lambda fn, args: sent.append((fn, args)), functions=table.wire())
    fn = repl_.namespace["search"]
    assert str(inspect.signature(fn)) == "(query, limit=<default>, *, exact=<default>)"
    assert fn.__doc__.startswith("search(query: str, limit: int = 5, *, exact: bool = False)")
    fn("a")
    fn(("t", "u"), exact=None)
    assert sent == [("search", {"query": "a"}), ("search", {"query": ["t", "u"], "exact": None})]
    with pytest.raises(TypeError):
        fn("a", 1, True)  # exact is keyword-only, as in the tool
    # The protocol checks presence of required arguments only; the host checks their types.
    validate_worker_message(
        {"type": "call", "id": 1, "fn": "search", "args": {"query": None}}, table
    )
    with pytest.raises(ProtocolError):
        validate_worker_message({"type": "call", "id": 1, "fn": "search", "args": {}}, table)
    with pytest.raises(ProtocolError):  # a sandbox without the tool refuses its frames
        validate_worker_message({"type": "call", "id": 1, "fn": "search", "args": {"query": 1}})
    assert DEFAULT_FUNCTIONS.extended([]) is DEFAULT_FUNCTIONS


# ---- load_tools and the CLI ------------------------------------------------------------------

TOOLS_MODULE = '''
def shout(text: str) -> str:
    """Upper-case `text`."""
    return text.upper()

TOOLS = {"shout": shout}
NOT_TOOLS = {"shout": 3}
'''


@pytest.fixture
def tools_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "my_tools_mod.py").write_text(TOOLS_MODULE)
    (folder / "broken_tools_mod.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(folder))
    return "my_tools_mod"


def test_load_tools_reads_module_attr_and_says_what_is_wrong(tools_module):
    assert list(load_tools(f"{tools_module}:TOOLS")) == ["shout"]
    assert list(load_tools(f"{tools_module}:shout")) == ["shout"]  # one function
    for spec, match in [
        (tools_module, "write module:attribute"),
        ("no_such_tools_mod:TOOLS", "no module named 'no_such_tools_mod'"),
        (f"{tools_module}:MISSING", "has no 'MISSING'"),
        (f"{tools_module}:NOT_TOOLS", "is a int, not a function"),
        ("broken_tools_mod:TOOLS", "importing broken_tools_mod failed: RuntimeError: no config"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_tools(spec)


def test_cli_tools_option(tmp_path, tools_module, capsys):
    replies = [repl("print(shout('hi'))"), repl("FINAL(shout('done'))")]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": replies}))
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("text")
    argv = ["ask", "-c", str(ctx), "-m", f"scripted:{script}", "--no-journal"]
    code = main([*argv, "--tools", f"{tools_module}:TOOLS", "--max-tool-calls", "5", "q"])
    out, err = capsys.readouterr()
    assert code == 0 and out == "DONE\n"
    code = main([*argv, "--tools", "nope_mod:TOOLS", "q"])
    out, err = capsys.readouterr()
    assert code == 2 and "no module named 'nope_mod'" in err and "Traceback" not in err


def test_type_hints_become_json_types_and_checks():
    from dataclasses import dataclass as record

    @record
    class Point:
        x: int

    def f(
        a: float,
        b: Optional[int],  # noqa: UP045 - the typing spelling, on purpose
        c: dict[str, int] | list[int],
        d: Literal["x", "y"] | None = None,
        e: Point | None = None,  # local to this test: unresolvable, so any JSON value
        g: Any = 1,
        /,
    ) -> None:
        """Doc."""

    tool = Tool.from_function(f, name="renamed")
    props = tool.schema()["parameters"]["properties"]
    assert props["a"] == {"type": "number"} and props["b"] == {"type": ["integer", "null"]}
    assert props["c"] == {"type": ["array", "object"]}
    assert props["d"] == {"type": ["null", "string"], "enum": ["x", "y", None]}
    assert props["e"] == {} and props["g"] == {}
    assert tool.bind({"a": 1, "b": None, "c": [1], "g": {"any": "thing"}}) == (
        [1, None, [1], None, None, {"any": "thing"}],  # positional-only: defaults fill the gaps
        {},
    )
    for args, match in [
        ({"a": "1", "b": 1, "c": []}, "'a' must be float, not str"),
        ({"a": 1.5, "b": 1.5, "c": []}, "'b' must be None or int, not float"),
        ({"a": 1, "b": 1, "c": "s"}, "'c' must be dict or list, not str"),
        ({"a": 1, "b": 1, "c": [], "d": "z"}, "'d' must be one of 'x', 'y', None, not 'z'"),
    ]:
        with pytest.raises(TypeError, match=match):
            tool.bind(args)
    renamed = ToolSet.of({"other": tool})["other"]
    assert renamed.name == "other" and renamed.doc == "Doc."


COUNTING_MODULE = '''
import os

def stamp(label: str) -> str:
    """Record a call in $STAMP_FILE."""
    with open(os.environ["STAMP_FILE"], "a") as f:
        f.write(label + "\\n")
    return label + "!"

TOOLS = {"stamp": stamp}
'''


def test_cli_resume_needs_the_tools_again_and_does_not_rerun_them(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "stamp_tools_mod.py").write_text(COUNTING_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    stamps = tmp_path / "stamps.txt"
    monkeypatch.setenv("STAMP_FILE", str(stamps))
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [repl("got = stamp('once')\nprint(got)")]}))
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("text")
    base = ["ask", "-c", str(ctx), "-m", f"scripted:{script}", "--json", "-q"]
    code = main([*base, "--tools", "stamp_tools_mod:TOOLS", "q"])
    out, _ = capsys.readouterr()
    assert code == 1  # the script ran out after one turn
    assert stamps.read_text() == "once\n"
    [run_id] = [p.name for p in (Path(os.environ["RECURSA_DATA_DIR"]) / "runs").iterdir()]

    script.write_text(json.dumps({"replies": [repl("FINAL(got)")]}))  # the second turn
    code = main(["ask", "--resume", run_id, "-q"])
    out, err = capsys.readouterr()
    assert code == 2 and "the run used the tools stamp" in err and "--tools" in err
    code = main(["ask", "--resume", run_id, "-q", "--tools", "stamp_tools_mod:TOOLS"])
    out, err = capsys.readouterr()
    assert code == 0 and out == "once!\n"
    assert stamps.read_text() == "once\n"  # replayed from the journal, not called again
