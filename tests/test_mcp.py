"""``recursa mcp`` driven by the MCP SDK's own client: over stdio (the server is spawned as
``python -m recursa mcp ...``) and once over streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")
import anyio  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

from .waiting import wait_until, wait_until_async  # noqa: E402

FILES = "```repl\nFINAL(repr(sorted(context)) if isinstance(context, dict) else repr(context))\n```"
SECRET = "```repl\nimport re\nFINAL(re.search(r'code word is (\\w+)', str(context)).group(1))\n```"


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("The code word is walnut.\n" + "filler\n" * 500)
    (root / "src.py").write_text("print('hi')\n")
    outside = tmp_path / "private.txt"
    outside.write_text("The code word is leaked.")
    (root / "docs" / "sneaky.txt").symlink_to(outside)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "more.txt").write_text("The code word is leaked.")
    (root / "docs" / "away").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    script = tmp_path / "script.json"
    rules = [{"match": "files", "reply": FILES}, {"match": "code word", "reply": SECRET}]
    script.write_text(json.dumps({"rules": rules}))
    return {"root": root, "outside": outside, "script": script}


def _env() -> dict[str, str]:
    # The SDK starts the server with a minimal environment: pass on where data goes.
    return {
        k: os.environ[k]
        for k in ("RECURSA_DATA_DIR", "RECURSA_CACHE_DIR", "TMPDIR")
        if k in os.environ
    }


def stdio_server(ws: dict[str, Path], *extra: str) -> Client:
    args = [
        "-m",
        "recursa",
        "mcp",
        "--root",
        str(ws["root"]),
        "--model",
        f"scripted:{ws['script']}",
    ]
    params = StdioServerParameters(command=sys.executable, args=[*args, *extra], env=_env())
    return Client(params, read_timeout_seconds=120)


async def test_ask_over_a_folder_reports_progress_and_leaves_out_escaping_links(workspace):
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with stdio_server(workspace) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"ask", "ask_trace"}
        assert set(tools["ask"].input_schema["properties"]) == {"question", "paths", "text"}
        result = await client.call_tool(
            "ask",
            {"question": "Which files are there?", "paths": ["."]},
            progress_callback=on_progress,
        )
        assert not result.is_error
        data = result.structured_content
        assert data["answer"] == repr(["docs/notes.txt", "src.py"])
        assert data["stop_reason"] == "final" and data["partial"] is False
        assert any("sneaky.txt" in w for w in data["warnings"])
        assert any("docs/away" in w and "folders" in w for w in data["warnings"])
        secret = await client.call_tool(
            "ask", {"question": "What is the code word?", "paths": ["docs/notes.txt"]}
        )
        assert secret.structured_content["answer"] == "walnut"
    steps = [p for p, _, _ in updates]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) >= 2
    messages = [m for _, _, m in updates]
    assert messages[0].startswith("iteration 1") and any("code cell 1" in m for m in messages)


async def test_paths_outside_the_roots_are_refused(workspace):
    outside = workspace["outside"]
    async with stdio_server(workspace) as client:
        for paths in (["../private.txt"], [str(outside)], ["docs/sneaky.txt"], ["docs/../.."]):
            result = await client.call_tool("ask", {"question": "code word?", "paths": paths})
            assert result.is_error
            text = result.content[0].text
            assert "outside the folders this server may read" in text and "leaked" not in text
        for args in ({}, {"paths": ["."], "text": "x"}):
            result = await client.call_tool("ask", {"question": "q", **args})
            assert result.is_error and "exactly one of paths" in result.content[0].text
        missing = await client.call_tool("ask", {"question": "q", "paths": ["nope.txt"]})
        assert missing.is_error and "no such file" in missing.content[0].text


async def test_ask_text_then_ask_trace_summarises_the_run(workspace):
    async with stdio_server(workspace, "--root", str(workspace["outside"].parent)) as client:
        answer = await client.call_tool(
            "ask", {"question": "What is the code word?", "text": "the code word is pecan"}
        )
        run_id = answer.structured_content["run_id"]
        assert answer.structured_content["answer"] == "pecan"
        # A second root lets the private file in.
        wider = await client.call_tool(
            "ask", {"question": "code word?", "paths": [str(workspace["outside"])]}
        )
        assert wider.structured_content["answer"] == "leaked"
        trace = await client.call_tool("ask_trace", {"run_id": run_id})
        assert not trace.is_error
        summary = trace.structured_content
        assert summary["status"] == "final" and summary["source"] == "mcp"
        assert summary["result"]["answer"] == "pecan"
        assert summary["question"] == "What is the code word?"
        assert summary["trace"]["spans"]["iteration"] == 1
        assert "pecan" in summary["trace"]["tree"]
        # What a chat client shows: readable lines and the tree as drawn, not a JSON string.
        shown = trace.content[0].text
        assert not shown.lstrip().startswith("{") and "\\n" not in shown
        assert "answer: pecan" in shown and "question: What is the code word?" in shown
        assert summary["trace"]["tree"].rstrip() in shown
        for bad in ("20000101-000000-ffffff", "../../etc"):
            missing = await client.call_tool("ask_trace", {"run_id": bad})
            assert missing.is_error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_streamable_http_transport(workspace):
    port = _free_port()
    cmd = [sys.executable, "-m", "recursa", "mcp", "--http", "--port", str(port)]
    cmd += ["--root", str(workspace["root"]), "--model", f"scripted:{workspace['script']}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            return False
        return True

    try:
        wait_until(listening, "the MCP HTTP server to listen", timeout=60, poll_s=0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            result = await client.call_tool(
                "ask", {"question": "What is the code word?", "paths": ["docs"]}
            )
            assert result.structured_content["answer"] == "walnut"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_cancelling_a_call_cancels_the_run_and_kills_its_sandbox(workspace, tmp_path):
    pid_cell = "```repl\nimport os\nprint('PID', os.getpid())\n```"
    sleep_cell = "```repl\nimport time\ntime.sleep(300)\n```"
    script = tmp_path / "sleepy.json"
    script.write_text(json.dumps({"replies": [pid_cell, sleep_cell]}))
    workspace = {**workspace, "script": script}
    reached = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("iteration 2"):  # cell 1 printed the worker's pid
            reached.set()

    async with stdio_server(workspace) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool(
                    "ask", {"question": "q", "text": "abc"}, progress_callback=on_progress
                )

            tg.start_soon(call)
            with anyio.fail_after(60):
                await reached.wait()
            tg.cancel_scope.cancel()
        runs = Path(os.environ["RECURSA_DATA_DIR"]) / "server-runs"
        (run,) = runs.iterdir()
        spans = [json.loads(x) for x in (run / "trace.jsonl").read_text().splitlines()[1:]]
        # The sleeping cell may have started (and ended, cancelled, without output) too.
        outs = [s["attrs"].get("stdout") or "" for s in spans if s["kind"] == "cell"]
        (out,) = [o for o in outs if o.startswith("PID")]
        pid = int(out.split()[1])
        await wait_until_async(
            lambda: (run / "summary.json").exists() and not _alive(pid),
            "the run's summary and the end of its sandbox worker",
            timeout=60,
            poll_s=0.05,
        )
        assert json.loads((run / "summary.json").read_text())["status"] == "cancelled"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
