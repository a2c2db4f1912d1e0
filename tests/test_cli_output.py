"""What the CLI prints: user text verbatim, no hard wrapping in pipes, one JSON object under
--json even when the run fails, and messages that say what to do next."""

from __future__ import annotations

import json
import re

import pytest

import recursa
from recursa.cli import main
from recursa.errors import ConfigError
from recursa.limits import Limits
from recursa.lm import registry

from .test_cli import DONE, FIND, script

CLOSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def flat(text: str) -> str:
    """Help text without its box drawing and line breaks, for phrase checks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ---- 1: no emoji substitution of user text ---------------------------------------------------


def test_error_paths_are_not_emoji_substituted(tmp_path, capsys):
    path = tmp_path / "a:smile:b.txt"
    assert main(["ask", "-c", str(path), "-m", "scripted:x.json", "q"]) == 2
    err = capsys.readouterr().err
    assert f"no such file or folder: {path}" in err
    assert "😄" not in err


def test_model_ids_in_errors_are_not_emoji_substituted(doc, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    argv = ["ask", "-q", "--no-journal", "-c", str(doc), "-m", "openai:x", "--base-url", CLOSED]
    assert main([*argv, "q"]) == 1
    err = capsys.readouterr().err
    assert "openai:x: cannot reach" in err
    assert "❌" not in err


# ---- 10: no hard wrapping when stderr is not a terminal --------------------------------------


def test_trace_line_is_not_wrapped_in_a_pipe(tmp_path, doc, capsys):
    folder = tmp_path / ("a-rather-long-folder-name-for-traces-" * 3)
    folder.mkdir()
    trace = folder / "trace.jsonl"
    model = script(tmp_path, [FIND, DONE])
    assert main(["ask", "-c", str(doc), "-m", model, "--trace", str(trace), "When?"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.endswith(f"· trace: {trace}") for line in lines), lines


# ---- 12: --json always prints one JSON object ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind", "code"),
    [
        (["-c", "/nonexistent/file.txt", "-m", "scripted:x.json"], "ContextError", 2),
        (["-c", "{doc}", "-m", "nosuch:model"], "UnknownProviderError", 2),
        (["-c", "{doc}", "-m", "openai:gpt-5-mini"], "MissingAPIKeyError", 2),
        (["-c", "{doc}", "--max-calls", "0", "-m", "scripted:x.json"], "ConfigError", 2),
        (["-c", "{doc}", "-m", "openai:x", "--base-url", CLOSED], "LMConnectionError", 1),
        (["-c", "{doc}", "--bogus"], "NoSuchOption", 2),  # a usage error, before ask runs
    ],
)
def test_json_failure_prints_an_error_object(argv, kind, code, doc, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    argv = [a.replace("{doc}", str(doc)) for a in argv]
    assert main(["ask", "--json", "-q", "--no-journal", *argv, "q"]) == code
    out, err = capsys.readouterr()
    data = json.loads(out)  # exactly one object: json.loads fails on anything more
    assert set(data) == {"error"}
    assert data["error"]["type"] == kind
    assert data["error"]["exit_code"] == code
    assert data["error"]["message"] and data["error"]["message"] in err


# ---- 14: help and messages -------------------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"recursa {recursa.__version__}\n"


def test_ask_help_lists_every_exit_status(capsys):
    assert main(["ask", "--help"]) == 0
    out = flat(capsys.readouterr().out)
    for status in ("0 when", "3 when", "2 for", "1 when", "130 when interrupted"):
        assert status in out


def test_limit_errors_name_the_cli_flag(doc, capsys):
    assert main(["ask", "-c", str(doc), "--max-calls", "0", "-m", "scripted:x.json", "q"]) == 2
    err = capsys.readouterr().err
    assert "--max-calls must be positive" in err
    assert "Limits." not in err and "max_llm_calls" not in err
    # The library keeps naming its own field.
    with pytest.raises(ConfigError, match=r"Limits\.max_llm_calls must be positive"):
        Limits(max_llm_calls=0)


@pytest.mark.parametrize("installed", [False, True])
def test_missing_key_hint_offers_local_only_when_installed(installed, doc, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(registry, "_local_installed", lambda: installed)
    assert main(["ask", "-c", str(doc), "-m", "openai:gpt-5-mini", "q"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err
    assert ("pass --model local" in err) is installed
    if not installed:
        assert "recursa[local]" in err


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("bedrock:claude", "litellm:bedrock/claude"),
        ("vertex_ai:gemini-pro", "litellm:vertex_ai/gemini-pro"),
        # Served natively (OpenAI-compatible endpoints): their own variables are named.
        ("gemini:gemini-2.5-flash", "GEMINI_API_KEY"),
        ("azure:gpt-4o", "AZURE_OPENAI_ENDPOINT"),
    ],
)
def test_litellm_providers_are_pointed_at_litellm(model, hint, doc, capsys, monkeypatch):
    for var in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    assert main(["ask", "-c", str(doc), "-m", model, "q"]) == 2
    err = capsys.readouterr().err
    assert hint in err
    assert "unknown provider" not in err


def test_unreachable_ollama_mentions_ollama_host(doc, monkeypatch, capsys):
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    assert main(["ask", "-q", "--no-journal", "-c", str(doc), "-m", "ollama:qwen", "q"]) == 1
    assert "OLLAMA_HOST" in capsys.readouterr().err


def test_mcp_help_describes_mcp_not_serve(capsys):
    assert main(["serve", "--help"]) == 0
    serve = flat(capsys.readouterr().out)
    assert main(["mcp", "--help"]) == 0
    mcp = flat(capsys.readouterr().out)
    for serve_only in ("HTTP 429", "clients get as 'rlm'", "requests may lower it"):
        assert serve_only in serve
        assert serve_only not in mcp
    assert "ask_trace" in mcp and "busy" in mcp


def test_an_unreachable_server_prints_no_resume_hint(doc, monkeypatch, capsys):
    """Nothing was paid, so there is nothing to resume: no `resume with:` line."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    argv = ["ask", "-c", str(doc), "-m", "openai:x", "--base-url", CLOSED, "q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err
    assert "resume with" not in err


def test_a_run_that_paid_for_calls_before_failing_offers_resume(doc, tmp_path, capsys):
    """The first turn is answered, the second call fails: that run is worth resuming."""
    from recursa.testing import FakeLLMServer, Fault

    first = "```repl\nprint(len(context))\n```"
    with FakeLLMServer([first, Fault.http(400, "bad request")]) as srv:
        argv = ["ask", "-c", str(doc), "-m", "openai:x", "--base-url", srv.base_url, "q"]
        assert main(argv) == 1
    assert "resume with: recursa ask --resume" in capsys.readouterr().err


def test_help_shows_the_data_folder_not_an_eaten_placeholder(capsys):
    assert main(["serve", "--help"]) == 0
    assert "server-runs/ under the data folder" in flat(capsys.readouterr().out)


def test_a_missing_docker_engine_is_one_line_and_exit_2(doc, tmp_path, monkeypatch, capsys):
    import recursa.sandbox.docker as docker

    monkeypatch.setattr(docker, "_ENGINE_SEEN", False)
    monkeypatch.setattr(
        docker, "docker_status", lambda: {"available": False, "detail": "no engine: not running"}
    )
    argv = ["ask", "-q", "--no-journal", "--sandbox", "docker", "-c", str(doc)]
    assert main([*argv, "-m", script(tmp_path, [DONE]), "q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sandbox='docker' needs a running Docker engine")
    assert "--sandbox process" in err and len(err.splitlines()) <= 2
