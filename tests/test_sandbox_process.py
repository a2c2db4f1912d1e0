"""The process sandbox: cells, state, sub-call bridging, and hostile code that must not hurt
the host. Every hostile cell is followed by a check that the host is fine and the next cell
works."""

from __future__ import annotations

import asyncio
import os

import pytest

from recursa.errors import SandboxCrashed
from recursa.sandbox import CallRefused, ProcessSandbox, SandboxConfig

from .waiting import wait_until_async


async def echo_calls(fn: str, args: dict):
    if fn == "llm_query":
        return f"echo:{args['prompt']}"
    if fn == "llm_query_batched":
        return [f"echo:{p}" for p in args["prompts"]]
    raise CallRefused(f"{fn} not scripted")


@pytest.fixture
async def sb():
    box = ProcessSandbox(SandboxConfig(memory_limit_mb=1024), echo_calls)
    await box.start()
    await box.load_context("the context " * 100)
    yield box
    await box.shutdown()


async def test_cells_share_state_and_a_trailing_expression_is_printed(sb):
    r = await sb.execute("x = 40\nprint('hi')")
    assert r.ok
    assert r.stdout == "hi\n"
    r = await sb.execute("x + 2")
    assert r.stdout == "42\n"
    r = await sb.execute("len(context)")
    assert r.stdout == "1200\n"


async def test_errors_show_the_model_its_own_traceback_only(sb):
    r = await sb.execute("def f():\n    return 1 / 0\nf()")
    assert not r.fatal
    assert "ZeroDivisionError" in r.error
    assert 'File "<repl>", line 2, in f' in r.error
    assert "worker.py" not in r.error
    r = await sb.execute("def (:")
    assert "SyntaxError" in r.error
    r = await sb.execute("import sys; sys.exit(4)")
    assert "SystemExit" in r.error and not r.fatal
    assert (await sb.execute("print('still here')")).stdout == "still here\n"


async def test_final_final_var_and_answer_dict(sb):
    assert (await sb.execute("FINAL(42)")).final == "42"
    assert (await sb.execute("res = ['a', 'b']\nFINAL_VAR('res')")).final == '["a", "b"]'
    assert (await sb.execute("answer = {'content': 'done', 'ready': True}")).final == "done"
    r = await sb.execute("answer = {'content': 'x', 'ready': False}")
    assert r.final is None
    r = await sb.execute("FINAL_VAR('missing')")
    assert "NameError" in r.error


async def test_injected_names_are_restored_after_the_model_overwrites_them(sb):
    await sb.execute("llm_query = None\nFINAL = 3")
    r = await sb.execute("print(llm_query('q'))\nFINAL('ok')")
    assert r.stdout == "echo:q\n"
    assert r.final == "ok"


async def test_sub_calls_reach_the_host_and_refusals_become_exceptions(sb):
    r = await sb.execute("print(llm_query('a'), llm_query_batched(['b', 'c']))")
    assert r.stdout == "echo:a ['echo:b', 'echo:c']\n"
    r = await sb.execute("rlm_query('x')")
    assert "LLMQueryError" in r.error and "not scripted" in r.error


async def test_contexts_round_trip_and_parts_get_names(tmp_path):
    box = ProcessSandbox(SandboxConfig())
    await box.start()
    try:
        odd = "caf\u00e9 \ud800 lone surrogate"
        await box.load_context(odd, name="odd")
        await box.load_context(["first", {"k": "v"}], alias_parts=True)
        r = await box.execute("print(odd == " + repr(odd) + ", context_0, context_1['k'])")
        assert r.stdout == "True first v\n"
        assert await box.get_var("context_0") == "first"
        assert await box.get_var("nope") is None
    finally:
        await box.shutdown()


async def test_worker_sees_no_host_secrets_and_lives_in_its_scratch_folder(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-secret")
    box = ProcessSandbox()
    await box.start()
    try:
        r = await box.execute(
            "import os\nprint(sorted(k for k in os.environ if 'KEY' in k))\n"
            "print(os.getcwd() == os.environ['HOME'])"
        )
        assert r.stdout == "[]\nTrue\n"
        assert str(box.scratch) in (await box.execute("import os; os.getcwd()")).stdout
        assert "sk-planted-secret" not in r.stdout
    finally:
        await box.shutdown()


async def test_infinite_loop_is_killed_and_a_fresh_worker_has_the_context(sb):
    await sb.execute("mine = 1")
    r = await sb.execute("while True: pass", timeout_s=0.5)
    assert r.fatal and r.fatal_reason == "cell_timeout"
    assert not sb.alive
    with pytest.raises(SandboxCrashed):
        await sb.execute("1")
    await sb.restart()
    r = await sb.execute("print(len(context), 'mine' in globals())")
    assert r.stdout == "1200 False\n"


async def test_waiting_on_sub_calls_does_not_count_as_compute_time():
    async def slow(fn, args):
        await asyncio.sleep(0.4)
        return "slow"

    box = ProcessSandbox(on_call=slow)
    await box.start()
    try:
        r = await box.execute("print([llm_query('q') for _ in range(3)])", timeout_s=0.3)
        assert r.ok, r.error
        assert r.stdout.count("slow") == 3
    finally:
        await box.shutdown()


async def test_os_exit_and_segfault_are_reported_as_crashes(sb):
    r = await sb.execute("import os; os._exit(3)")
    assert r.fatal and r.fatal_reason == "crash"
    assert "status 3" in r.error
    await sb.restart()
    r = await sb.execute("import ctypes; ctypes.string_at(0)")
    assert r.fatal and "SIGSEGV" in r.error
    await sb.restart()
    assert (await sb.execute("1 + 1")).stdout == "2\n"


async def test_huge_print_is_cut_and_counted(sb):
    r = await sb.execute("print('x' * 50_000_000)")
    assert r.ok
    assert len(r.stdout) == SandboxConfig().max_captured_chars
    assert r.output_cut_chars == 50_000_001 - len(r.stdout)
    assert (await sb.execute("print('next')")).stdout == "next\n"


async def test_memory_bomb_raises_memory_error_inside_the_worker(sb):
    r = await sb.execute("x = bytearray(8 * 1024**3)")
    assert not r.fatal
    assert "MemoryError" in r.error
    r = await sb.execute("grow = []\nwhile True: grow.append('y' * 10_000_000)")
    assert "MemoryError" in r.error or r.fatal
    if r.fatal:
        await sb.restart()
    assert (await sb.execute("print('alive')")).stdout == "alive\n"


async def test_file_writes_stop_at_the_size_limit(tmp_path):
    box = ProcessSandbox(SandboxConfig(file_size_limit_mb=8))
    await box.start()
    try:
        r = await box.execute(
            "with open('big.bin', 'wb') as f:\n    f.write(b'0' * (64 * 1024 * 1024))"
        )
        assert "File too large" in r.error
        assert os.path.getsize(box.scratch / "big.bin") <= 8 * 1024 * 1024
        assert (await box.execute("print('ok')")).stdout == "ok\n"
    finally:
        await box.shutdown()


async def test_deep_recursion_is_an_ordinary_error(sb):
    r = await sb.execute("def f(n):\n    return f(n + 1)\nf(0)")
    assert "RecursionError" in r.error
    assert not r.fatal


FORGE = (
    "import gc, os, struct\n"
    "ch = [o for o in gc.get_objects() if type(o).__name__ == 'FrameChannel'][0]\n"
)


async def test_a_forged_oversized_frame_kills_the_worker_not_the_host(sb):
    r = await sb.execute(
        FORGE + "os.write(ch.fd_out, struct.pack('>I', 2**31))\nimport time; time.sleep(5)"
    )
    assert r.fatal and r.fatal_reason == "protocol"
    await sb.restart()
    assert (await sb.execute("print('fresh')")).stdout == "fresh\n"


async def test_a_garbage_frame_kills_the_worker(sb):
    r = await sb.execute(
        FORGE + "os.write(ch.fd_out, struct.pack('>I', 5) + b'{{{{{')\nimport time; time.sleep(5)"
    )
    assert r.fatal and r.fatal_reason == "protocol"


async def test_a_thread_calling_after_its_cell_returned_gets_the_worker_killed(sb):
    r = await sb.execute(
        "import threading, time\n"
        "def late():\n    time.sleep(0.2)\n    llm_query('after the cell')\n"
        "threading.Thread(target=late, daemon=True).start()"
    )
    assert r.ok
    await wait_until_async(lambda: not sb.alive, "the late call to kill the worker", timeout=2.5)
    await sb.restart()
    assert (await sb.execute("print('ok')")).stdout == "ok\n"


async def test_a_refusal_with_kill_stops_the_worker():
    async def refuse(fn, args):
        raise CallRefused("budget exhausted", kind="budget", kill=True)

    box = ProcessSandbox(on_call=refuse)
    await box.start()
    try:
        r = await box.execute("llm_query('x')\nimport time; time.sleep(5)")
        assert r.fatal and r.fatal_reason == "budget"
    finally:
        await box.shutdown()


async def test_budget_refusal_is_a_catchable_exception_and_later_calls_stay_local():
    calls = []

    async def refuse(fn, args):
        calls.append(fn)
        raise CallRefused("budget exhausted: max_llm_calls=0", kind="budget")

    box = ProcessSandbox(on_call=refuse)
    await box.start()
    try:
        r = await box.execute(
            "n = 0\nfor _ in range(10_000):\n    try:\n        llm_query('x')\n"
            "    except Exception as e:\n        n += 1\n        kind = type(e).__name__\n"
            "print(n, kind)"
        )
        assert r.stdout == "10000 BudgetExhaustedError\n"
        assert calls == ["llm_query"]  # refused once by the host; the rest never left the worker
    finally:
        await box.shutdown()


async def test_shutdown_removes_the_run_folder():
    box = ProcessSandbox()
    await box.start()
    root = box.scratch.parent
    await box.execute("open('f.txt', 'w').write('x')")
    await box.shutdown()
    assert not root.exists()
