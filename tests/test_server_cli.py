"""``recursa serve`` as a user starts it: a real process on 127.0.0.1, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from recursa.cli import main  # noqa: E402


def test_serve_starts_answers_and_stops_on_ctrl_c(tmp_path: Path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "```repl\nFINAL(context[::-1])\n```"}))
    cmd = [sys.executable, "-m", "recursa", "serve", "--port", "0", "--model", f"scripted:{script}"]
    cmd += ["--alias", f"same=scripted:{script}", "--log-level", "info"]
    env = {**os.environ, "RECURSA_SERVER_API_KEY": "k-123"}
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    try:
        seen = []
        for line in proc.stderr:  # ends at EOF if the server dies, so this cannot hang forever
            seen.append(line)
            if m := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
                break
        else:
            pytest.fail("the server did not start:\n" + "".join(seen))
        assert any("default model (rlm): scripted:" in line for line in seen)
        # Keep reading its log so a full pipe never blocks the server.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k-123")
        assert [m.id for m in client.models.list().data] == ["rlm", "same"]
        done = client.chat.completions.create(
            model="same", messages=[{"role": "user", "content": "stressed"}]
        )
        assert done.choices[0].message.content == "desserts"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
            ).models.list()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuchprovider:x"], "cannot be used"),
        (["--model", "openai:gpt-5", "--alias", "oops"], "NAME=PROVIDER:MODEL"),
        (["--model", "openai:gpt-5", "--alias", "rlm=openai:gpt-5"], "bad alias"),
        (["--max-concurrent-runs", "0", "--model", "openai:gpt-5"], "max_concurrent_runs"),
    ],
)
def test_serve_refuses_bad_configuration_before_listening(args, message, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # keys are checked, not used
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_mcp_refuses_a_root_that_is_not_a_folder(tmp_path, capsys):
    assert main(["mcp", "--root", str(tmp_path / "missing"), "--model", "openai:x"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_serve_without_model_or_local_extra_fails_at_start(capsys, monkeypatch):
    import recursa.lm.local
    import recursa.server.openai_api

    started = []
    monkeypatch.delenv("RECURSA_MODEL", raising=False)
    monkeypatch.setattr(recursa.lm.local, "_llama_cpp_installed", lambda: False)
    monkeypatch.setattr(recursa.server.openai_api, "serve", lambda *a, **k: started.append(a))
    assert main(["serve", "--port", "0"]) == 2
    assert not started
    err = capsys.readouterr().err
    assert "pip install 'recursa[local]'" in err
    assert len(err.strip().splitlines()) == 1
