"""import_with_env: a setting read while a package loads, without changing the environment."""

from __future__ import annotations

import os
import sys

import pytest

from recursa._imports import import_with_env

VAR = "RECURSA_TEST_IMPORT_SETTING"


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A module that records, while it is imported, what it saw of ``VAR``."""
    name = "recursa_test_reads_env"
    (tmp_path / f"{name}.py").write_text(f"import os\nSEEN = os.environ.get({VAR!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(VAR, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_the_variable_is_set_for_the_import_only(module):
    loaded = import_with_env(module, {VAR: "on"})
    assert loaded.SEEN == "on"
    assert VAR not in os.environ


def test_a_users_own_value_wins_and_stays(module, monkeypatch):
    monkeypatch.setenv(VAR, "mine")
    assert import_with_env(module, {VAR: "on"}).SEEN == "mine"
    assert os.environ[VAR] == "mine"


def test_a_module_imported_before_is_returned_as_it_is(module):
    first = import_with_env(module, {VAR: "on"})
    assert import_with_env(module, {VAR: "other"}) is first
    assert first.SEEN == "on"


def test_a_missing_module_raises_import_error_and_leaves_the_environment(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(ImportError):
        import_with_env("recursa_no_such_module_here", {VAR: "on"})
    assert VAR not in os.environ
