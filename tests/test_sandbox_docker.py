"""The container tier: the ``docker run`` command it builds, and (only where a Docker engine
answers) a real container."""

from __future__ import annotations

from pathlib import Path

import pytest

from recursa.sandbox import SandboxConfig
from recursa.sandbox.docker import SANDBOX_DIR, DockerSandbox, docker_command, docker_status

HAS_DOCKER = docker_status(timeout_s=10)["available"]


def flag_value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_the_container_is_locked_down():
    cfg = SandboxConfig(
        memory_limit_mb=512,
        file_size_limit_mb=32,
        max_pids=16,
        docker_image="python:3.12-slim",
        env={"EXTRA": "1"},
    )
    argv = docker_command(cfg, name="recursa-t", inputs=Path("/run/x/inputs"), docker="docker")
    assert argv[:2] == ["docker", "run"]
    assert {"--rm", "--interactive", "--read-only"} <= set(argv)
    assert "--tty" not in argv and "-t" not in argv  # a TTY would mangle binary frames
    assert flag_value(argv, "--network") == ["none"]
    assert flag_value(argv, "--cap-drop") == ["ALL"]
    assert flag_value(argv, "--security-opt") == ["no-new-privileges"]
    assert flag_value(argv, "--user") == ["65534:65534"]
    assert flag_value(argv, "--pids-limit") == ["16"]
    assert flag_value(argv, "--memory") == ["512m"] == flag_value(argv, "--memory-swap")
    assert flag_value(argv, "--ipc") == ["none"]
    tmpfs = flag_value(argv, "--tmpfs")
    assert any(t.startswith("/scratch:") and "size=32m" in t and "noexec" in t for t in tmpfs)
    assert flag_value(argv, "--volume") == [
        f"{SANDBOX_DIR}:/recursa:ro",
        "/run/x/inputs:/inputs:ro",
    ]
    assert sorted(flag_value(argv, "--env")) == [
        "EXTRA=1",
        "HOME=/scratch",
        "LANG=C.UTF-8",
        "TMPDIR=/scratch",
    ]
    assert argv[-4:] == ["python:3.12-slim", "python3", "-I", "/recursa/worker.py"]


def test_the_host_side_hands_the_client_no_secrets_and_maps_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/docker.sock")
    box = DockerSandbox()
    box._root = tmp_path
    (tmp_path / "scratch").mkdir()
    env = box._worker_env()
    assert env.get("DOCKER_HOST") == "unix:///run/docker.sock" and "OPENAI_API_KEY" not in env
    assert "sk-never-in-docker" not in " ".join(box._command())
    assert box._init_message()["scratch"] == "/scratch"
    hard = box._hardening_options()
    assert hard["module"] == "/recursa/harden.py"
    assert hard["read"] == ["/inputs"] and hard["write"] == ["/scratch"]
    from recursa.sandbox._support import Loaded

    item = Loaded("context", tmp_path / "inputs" / "context.0.data", "text", False)
    assert box._load_message(item)["path"] == "/inputs/context.0.data"


def test_status_says_why_docker_is_unavailable(tmp_path):
    missing = docker_status(docker=str(tmp_path / "no-such-docker"))
    assert missing["available"] is False and "docker info" in missing["detail"]


@pytest.mark.skipif(not HAS_DOCKER, reason="no Docker engine answers on this machine")
async def test_a_real_container_runs_cells_and_has_no_network():
    box = DockerSandbox(SandboxConfig(memory_limit_mb=512, start_timeout_s=120))
    await box.start()
    try:
        await box.load_context("in a box")
        r = await box.execute("import os, socket\nprint(context, os.getuid())")
        assert r.stdout == "in a box 65534\n"
        r = await box.execute("socket.create_connection(('1.1.1.1', 53), timeout=2)")
        assert r.error and "Error" in r.error
        assert box.isolation()["network_blocked"] is True
    finally:
        await box.shutdown()
