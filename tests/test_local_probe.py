"""The CPU probe: llama.cpp settings that crash are found in a child process, never in ours.

The children here are real processes that really die by a signal (a NULL read gives SIGSEGV, as
the AMX kernels did on machines that advertise AMX without allowing it); only what they run is
a stand-in for the model. The real probe on the real model is in test_local_model_real.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from recursa.embedded import probe
from recursa.embedded.errors import LocalModelUnsafeError
from recursa.embedded.runtime import LoadedModel, LoadSettings
from recursa.errors import ConfigError

# Stands in for `python -m recursa.embedded.probe WEIGHTS --extra-bufts N ...`: it crashes for the
# settings named in its first argument ("1", "0" or both) and otherwise prints what the real
# child prints, evaluating prompts at the speed its second argument gives for that setting.
CHILD = textwrap.dedent(
    """
    import ctypes, json, sys
    extra = sys.argv[sys.argv.index("--extra-bufts") + 1]
    if extra in sys.argv[1].split(","):
        ctypes.string_at(0)  # a real segmentation fault
    speed = dict(pair.split("=") for pair in sys.argv[2].split(","))[extra]
    print(json.dumps({"ok": True, "prompt_tokens": 640, "prompt_tok_per_s": float(speed),
                      "generation_tok_per_s": 12.0, "system_info": "CPU : AVX2 = 1 |"}))
    """
)


def child(crash_on: str, speeds: str = "0=100,1=100") -> list[str]:
    return [sys.executable, "-c", CHILD, crash_on, speeds]


@pytest.fixture(autouse=True)
def _forget(monkeypatch):
    monkeypatch.setattr(probe, "_SEEN", {})


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


def test_a_crash_with_repacked_weights_falls_back_to_plain_kernels_and_is_remembered(
    tmp_path, weights
):
    records = tmp_path / "cache" / "llama-probe.json"
    choice = probe.safe_settings(weights, records, command=child("1", "0=50,1=500"))
    assert choice.extra_bufts is False  # however fast the repacked kernels would have been
    assert choice.source == "probe"
    plain, repacked = choice.attempts
    assert (plain.extra_bufts, plain.ok, plain.prompt_tokens) == (False, True, 640)
    assert (repacked.extra_bufts, repacked.ok, repacked.signal) == (True, False, "SIGSEGV")
    assert choice.system_info == "CPU : AVX2 = 1 |"
    stored = json.loads(records.read_text())
    assert stored[choice.key]["extra_bufts"] is False

    # Another process reads the record and runs no child (this command would fail loudly).
    probe._SEEN.clear()
    never = [sys.executable, "-c", "import sys; sys.exit(42)"]
    again = probe.safe_settings(weights, records, command=never)
    assert (again.extra_bufts, again.source) == (False, "record")
    assert again.attempts == choice.attempts


@pytest.mark.parametrize(
    ("speeds", "repacked"),
    [
        ("0=100,1=200", True),  # repacked kernels twice as fast: worth their memory
        ("0=100,1=105", False),  # within the margin: plain kernels, less memory
        ("0=100,1=60", False),  # slower (as measured on an AVX2 CPU)
    ],
)
def test_when_both_survive_the_faster_one_is_used(tmp_path, weights, speeds, repacked):
    choice = probe.safe_settings(weights, tmp_path / "p.json", command=child("none", speeds))
    assert choice.extra_bufts is repacked
    assert len(choice.attempts) == 2 and not choice.crashed


def test_a_crash_with_plain_kernels_still_tries_the_repacked_ones(tmp_path, weights):
    choice = probe.safe_settings(weights, tmp_path / "p.json", command=child("0"))
    assert choice.extra_bufts is True
    assert [a.signal for a in choice.crashed] == ["SIGSEGV"]


def test_every_setting_crashing_is_a_typed_error_that_names_the_fix(tmp_path, weights):
    records = tmp_path / "p.json"
    with pytest.raises(LocalModelUnsafeError) as caught:
        probe.safe_settings(weights, records, command=child("1,0"))
    err = caught.value
    assert isinstance(err, ConfigError)  # the CLI exits 2 with one line
    assert "GGML_NATIVE=OFF" in str(err) and "--force-reinstall" in str(err)
    assert "--model openai:" in str(err)
    assert [a.signal for a in err.attempts] == ["SIGSEGV", "SIGSEGV"]
    assert not records.exists()  # nothing safe to remember


def test_a_python_failure_in_the_child_is_not_taken_for_a_crash(tmp_path, weights):
    failing = [sys.executable, "-c", "raise SystemExit('cannot read the weights')"]
    records = tmp_path / "p.json"
    choice = probe.safe_settings(weights, records, command=failing)
    assert choice.source == "inconclusive"
    assert choice.extra_bufts is False  # the safe side, for this process only
    assert "cannot read the weights" in choice.attempts[0].detail
    assert not records.exists()


def test_a_new_build_or_another_cpu_or_other_weights_is_probed_again(tmp_path, weights):
    lib = tmp_path / "pkg" / "lib"
    lib.mkdir(parents=True)
    so = lib / "libggml-cpu.so"
    so.write_bytes(b"x" * 10)
    build = probe.build_identity(tmp_path / "pkg")
    assert build["libs"]["libggml-cpu.so"][0] == 10
    cpu = probe.cpu_identity()
    key = probe.probe_key(weights, build, cpu)
    os.utime(so, ns=(1, 1))  # a reinstall replaces the files
    assert probe.probe_key(weights, probe.build_identity(tmp_path / "pkg"), cpu) != key
    assert probe.probe_key(weights, build, {**cpu, "flags": cpu["flags"] + " amx_tile"}) != key
    weights.write_bytes(b"GGUF" + b"\0" * 61)
    assert probe.probe_key(weights, build, cpu) != key


def test_cpu_identity_reads_the_kernels_feature_flags():
    cpu = probe.cpu_identity()
    assert cpu["machine"]
    if os.path.exists("/proc/cpuinfo") and cpu["machine"] in ("x86_64", "AMD64"):
        assert "sse2" in cpu["flags"].split()


def test_a_setting_given_by_the_caller_skips_the_probe(weights):
    model = LoadedModel(LoadSettings(path=weights, extra_bufts=False))
    choice = model._runtime_choice()
    assert (choice.extra_bufts, choice.source, choice.attempts) == (False, "override", ())


def test_the_loaded_model_asks_the_probe_when_no_setting_is_given(tmp_path, weights, monkeypatch):
    calls = []

    def fake(path, records, **kw):
        calls.append((path, records))
        return probe.RuntimeChoice(False, "probe")

    monkeypatch.setattr(probe, "safe_settings", fake)
    records = tmp_path / "p.json"
    model = LoadedModel(LoadSettings(path=weights, probe_records=records))
    assert model._runtime_choice().extra_bufts is False
    assert model._runtime_choice().extra_bufts is False
    assert calls == [(weights, records)]  # asked once per loaded model


def test_the_environment_switch_reaches_the_local_model(weights, monkeypatch):
    import recursa.lm.local as local
    from recursa.lm.base import ProviderOptions

    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: True)
    env = {"RECURSA_CACHE_DIR": str(weights.parent)}
    lm = local.local_from_env(
        str(weights), ProviderOptions(), {**env, "RECURSA_LLAMA_EXTRA_BUFTS": "off"}
    )
    assert lm._loaded().settings.extra_bufts is False
    auto = local.local_from_env(str(weights), ProviderOptions(), env)
    assert auto._loaded().settings.extra_bufts is None
    assert auto._loaded().settings.probe_records == weights.parent / "llama-probe.json"
    with pytest.raises(ConfigError, match="on, off or auto"):
        local.local_from_env(
            str(weights), ProviderOptions(), {**env, "RECURSA_LLAMA_EXTRA_BUFTS": "maybe"}
        )


def test_the_probe_child_refuses_bad_arguments_without_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "recursa.embedded.probe", "--extra-bufts", "7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_the_fix_named_depends_on_the_cpu():
    modern = {"machine": "x86_64", "model": "x", "flags": "sse2 avx avx2 fma"}
    old = {"machine": "x86_64", "model": "x", "flags": "sse2 sse4_2 avx"}
    arm = {"machine": "aarch64", "model": "x", "flags": "fp asimd"}
    assert "-DGGML_NATIVE=OFF" in probe.rebuild_hint(modern)
    assert "-DGGML_NATIVE=ON" in probe.rebuild_hint(old)  # portable kernels need AVX2
    assert "lacks AVX2" in probe.rebuild_hint(old)
    assert "-DGGML_NATIVE=OFF" in probe.rebuild_hint(arm)


def test_a_native_crash_while_stderr_is_silenced_is_still_reported():
    """llama-cpp-python points fd 2 at /dev/null while weights load, which is where a bad CPU
    kernel crashes: the CLI's crash report must reach the real stderr anyway."""
    code = textwrap.dedent(
        """
        import ctypes, os
        from recursa.cli import _enable_faulthandler
        _enable_faulthandler()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # as suppress_stdout_stderr does
        ctypes.string_at(0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode < 0
    assert "Segmentation fault" in proc.stderr


def test_doctor_reports_the_cpu_and_the_stored_verdict(tmp_path, monkeypatch, capsys):
    import recursa.cli.doctor as doctor
    from recursa.cli import main

    monkeypatch.setattr(doctor, "collect", lambda tiers: {"tiers": {}, "live": {}, "warnings": []})
    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["local_model"]
    assert info["cpu"]
    if probe.cpu_identity()["machine"] == "x86_64" and "avx2" in probe.cpu_identity()["flags"]:
        assert "avx2" in info["cpu_features"]
    # No weights in this test's cache: the doctor says what is missing instead of probing.
    assert "detail" in info
