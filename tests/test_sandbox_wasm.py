"""The WebAssembly tier: its Deno command line, its install step, and cells running in Pyodide.
(The attacks against it are in ``test_adversarial.py``.)"""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path

import pytest

from recursa.errors import MissingDependencyError, SandboxStartError
from recursa.sandbox import CallRefused, SandboxConfig, pyodide
from recursa.sandbox.wasm import WasmSandbox, deno_command

from .test_adversarial import PYODIDE, wasm_ready


def test_deno_gets_read_access_to_pyodide_and_nothing_else():
    argv = deno_command("/bin/deno", Path("/cache/pyodide"), SandboxConfig(memory_limit_mb=1024))
    allows = [a for a in argv if a.startswith("--allow")]
    assert allows == ["--allow-read=/cache/pyodide"]
    assert "--no-prompt" in argv
    for denied in ("net", "env", "run", "ffi", "sys", "write"):
        assert f"--deny-{denied}" in argv
    v8 = next(a for a in argv if a.startswith("--v8-flags="))
    assert "--wasm-max-mem-pages=16384" in v8  # 1 GiB in 64 KiB pages
    assert argv[-2:] == [str(pyodide.RUNNER_PATH), "/cache/pyodide"]


def test_a_tarball_failing_its_integrity_check_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("RECURSA_PYODIDE_DIR", str(tmp_path / "pyo"))

    def fake_fetch(dest: Path) -> Path:
        bogus = dest / "pyodide.tgz"
        with tarfile.open(bogus, "w:gz"):
            pass
        return bogus

    monkeypatch.setattr(pyodide, "_fetch_tarball", fake_fetch)
    with pytest.raises(SandboxStartError, match="integrity"):
        pyodide.ensure_pyodide()
    assert not pyodide.wasm_status()["pyodide_installed"]


async def test_without_deno_the_tier_names_the_extra(monkeypatch):
    monkeypatch.setattr(pyodide, "find_deno", lambda: None)
    assert "pip install" in pyodide.wasm_status()["detail"]
    with pytest.raises(MissingDependencyError, match=r"recursa\[wasm\]"):
        await WasmSandbox().start()


@pytest.fixture
async def wbox(monkeypatch):
    if why := wasm_ready():
        pytest.skip(why)
    monkeypatch.setenv("RECURSA_PYODIDE_DIR", str(PYODIDE))

    async def on_call(fn, args):
        if fn == "llm_query":
            await asyncio.sleep(0.01)
            return f"echo:{args['prompt']}"
        if fn == "llm_query_batched":
            return [f"echo:{p}" for p in args["prompts"]]
        raise CallRefused(f"{fn} not scripted")

    box = WasmSandbox(SandboxConfig(memory_limit_mb=1024), on_call)
    await box.start()
    yield box
    await box.shutdown()


async def test_cells_run_in_pyodide_with_state_contexts_and_sub_calls(wbox):
    odd = "caf\u00e9 \ud800 lone surrogate"
    await wbox.load_context(odd, name="odd")
    await wbox.load_context(["first", {"k": "v"}], alias_parts=True)
    r = await wbox.execute("import sys\nx = 41\nprint(sys.platform, odd == " + repr(odd) + ")")
    assert r.stdout == "emscripten True\n"
    r = await wbox.execute("print(x + 1, context_0, context_1['k'])")
    assert r.stdout == "42 first v\n"
    r = await wbox.execute("print(llm_query('a'), llm_query_batched(['b', 'c']))")
    assert r.stdout == "echo:a ['echo:b', 'echo:c']\n"
    r = await wbox.execute("rlm_query('x')")
    assert "LLMQueryError" in r.error and "not scripted" in r.error
    assert (await wbox.execute("FINAL_VAR('x')")).final == "41"
    assert await wbox.get_var("context_0") == "first"


async def test_javascript_escape_hatches_hit_denos_permission_wall(wbox):
    code = """
import js
for name, fn in [
    ('read', lambda: js.Deno.readTextFileSync('/etc/hostname')),
    ('env', lambda: js.Deno.env.toObject()),
    ('run', lambda: js.Deno.Command.new('id').outputSync()),
    ('write', lambda: js.Deno.writeTextFileSync('/tmp/recursa-wasm-escape', 'x')),
]:
    try:
        fn(); print(name, 'ALLOWED')
    except Exception as e:
        print(name, 'NotCapable' in str(e) or 'PermissionDenied' in str(e))
"""
    r = await wbox.execute(code)
    assert r.stdout.splitlines() == ["read True", "env True", "run True", "write True"], r.error
    assert not Path("/tmp/recursa-wasm-escape").exists()


async def test_a_timeout_restarts_pyodide_with_the_context(wbox):
    await wbox.load_context("hello")
    r = await wbox.execute("while True: pass", timeout_s=0.5)
    assert r.fatal and r.fatal_reason == "cell_timeout"
    await wbox.restart()
    assert (await wbox.execute("print(context)")).stdout == "hello\n"
    iso = wbox.isolation()
    assert iso["tier"] == "wasm" and "deno-permissions" in iso["protections"]
