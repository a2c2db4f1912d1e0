"""One frozen run configuration: what an RLM is built from and what a journal stores."""

from __future__ import annotations

import dataclasses
import json

import pytest

from recursa import RLM, Limits, RunConfig, ScriptedLM
from tests.conftest import repl


def test_a_config_survives_json_and_older_journals_still_load() -> None:
    config = RunConfig(
        model="openai:gpt-x",
        sub_model="local",
        models=("anthropic:claude-x",),
        temperature=0.0,
        limits=Limits(max_depth=2, max_llm_calls=9),
        max_retries=1,
    )
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model = "other"  # type: ignore[misc]
    # A journal written before RunConfig: the same keys, fewer of them, one unknown.
    old = {"model": "local", "sandbox": None, "limits": {"max_iterations": 4}, "gone": 1}
    loaded = RunConfig.from_dict(old)
    assert loaded.model == "local" and loaded.sandbox is None
    assert loaded.limits.max_iterations == 4 and loaded.models == ()
    assert config.root_settings.temperature == 0.0


def test_an_rlm_is_built_from_its_config_and_journals_it(tmp_path) -> None:
    lm = ScriptedLM([repl("FINAL('ok')")])
    rlm = RLM(lm, limits=Limits(max_iterations=3), temperature=0.0, runs_root=tmp_path)
    assert rlm.config.model == lm.name and rlm.config.limits.max_iterations == 3
    result = rlm.run("q", "ctx")
    from recursa.journal import Journal

    journal = Journal.open(result.run_id, root=tmp_path)
    try:
        stored = RunConfig.from_dict(journal.meta("config"))
    finally:
        journal.close()
    assert stored == rlm.config
    rebuilt = RLM.from_config(stored, model=ScriptedLM([repl("FINAL('x')")]), journal=False)
    assert rebuilt.config.limits == stored.limits and rebuilt.config.temperature == 0.0
    assert rebuilt.config.journal is False
