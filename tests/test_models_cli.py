"""`recursa models list | pull | path | licence`."""

from __future__ import annotations

import hashlib
import json

import pytest

from recursa.cli import main
from recursa.embedded.catalogue import CATALOGUE, ModelSpec, get_spec


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch, tmp_path):
    """An empty weights cache, even where CI points RECURSA_CACHE_DIR at a real one."""
    monkeypatch.setenv("RECURSA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def hub_model(monkeypatch):
    """A tiny catalogue model with no part packages, pulled from a fake hub."""
    data = b"GGUF-test-weights" * 64
    real = get_spec(None)
    spec = ModelSpec(
        name="cli-test",
        filename="cli-test.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        description="test",
        extra="local",
        parts=tuple(
            p.__class__(1, "no-such-dist", "no_such_module_xyz", "0", 1, "")
            for p in [real.parts[0]]
        ),
        hub_repo="example/cli-test",
        licence="Apache-2.0",
        notice=real.notice,
        n_ctx_train=1024,
    )
    monkeypatch.setitem(CATALOGUE, spec.name, spec)

    def fake_download(**kw):
        out = kw["local_dir"] / kw["filename"]
        out.write_bytes(data)
        return str(out)

    monkeypatch.setattr("recursa.embedded.hub._downloader", lambda _spec: fake_download)
    return spec


def test_list_shows_every_known_model(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[:2] == ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
    first = rows[0]
    assert first["default"] is True
    assert first["size_bytes"] == 1_117_320_768
    assert first["ready"] is False  # the test cache is empty
    assert first["path"].endswith("models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert first["licence"] == "Apache-2.0"


def test_list_as_a_table(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-1.5b (default)" in out
    assert "1.12 GB" in out
    assert "local:/path/to/model.gguf" in out


def test_pull_then_path(hub_model, capsys):
    assert main(["models", "path", hub_model.name]) == 2
    assert f"recursa models pull {hub_model.name}" in capsys.readouterr().err
    assert main(["models", "pull", hub_model.name, "--from", "hub"]) == 0
    pulled = capsys.readouterr().out.strip()
    assert pulled.endswith(hub_model.filename)
    assert main(["models", "path", hub_model.name]) == 0
    assert capsys.readouterr().out.strip() == pulled
    assert main(["models", "list", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == hub_model.name)
    assert row["ready"] is True


def test_pull_from_parts_without_them_names_the_extra(hub_model, capsys):
    assert main(["models", "pull", hub_model.name, "--from", "parts"]) == 2
    assert "pip install 'recursa[local]'" in capsys.readouterr().err


def test_pull_rejects_an_unknown_source(capsys):
    assert main(["models", "pull", "--from", "ftp"]) == 2
    assert "--from must be" in capsys.readouterr().err


def test_unknown_model_is_a_config_error(capsys):
    assert main(["models", "path", "gpt-5"]) == 2
    assert "unknown local model" in capsys.readouterr().err


def test_licence_notice_is_shipped(capsys):
    assert main(["models", "licence"]) == 0
    out = capsys.readouterr().out
    assert "Qwen2.5-Coder" in out
    assert "Apache License" in out and "Version 2.0" in out
    assert "Alibaba Cloud" in out
