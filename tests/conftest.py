"""Shared fixtures. Tests run offline; anything networked targets 127.0.0.1 only."""

from __future__ import annotations

from pathlib import Path

import pytest

from recursa import RLM, Limits, ScriptedLM


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Keep the developer's own keys, model choice and cache out of every test."""
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "RECURSA_MODEL",
        "RECURSA_STRATEGY",
        "RECURSA_PRICES",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("recursa-home")
    monkeypatch.setenv("RECURSA_DATA_DIR", str(home / "data"))
    if "RECURSA_CACHE_DIR" not in __import__("os").environ:
        monkeypatch.setenv("RECURSA_CACHE_DIR", str(home / "cache"))


def make_rlm(root, sub=None, **kwargs) -> RLM:
    """An RLM over scripted models; ``root``/``sub`` may be lists of replies or ScriptedLMs."""
    root_lm = root if isinstance(root, ScriptedLM) else ScriptedLM(root, name="root")
    sub_lm = sub if isinstance(sub, ScriptedLM) or sub is None else ScriptedLM(sub, name="sub")
    kwargs.setdefault("limits", Limits(max_iterations=6))
    return RLM(root_lm, sub_lm, **kwargs)


def repl(code: str) -> str:
    """A root reply that runs ``code``."""
    return f"```repl\n{code}\n```"


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    """A text file with one fact (a launch date) in the middle."""
    f = tmp_path / "doc.txt"
    f.write_text("line\n" * 1000 + "The launch date is 2031-04-05.\n" + "line\n" * 1000)
    return f
