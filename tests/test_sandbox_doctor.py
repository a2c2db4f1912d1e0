"""``recursa doctor``: what is protected here, as a table or JSON, always exit 0."""

from __future__ import annotations

import json
import sys

from recursa.cli import main
from recursa.sandbox import harden


def test_doctor_json_reports_the_live_process_tier(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["tiers"]) == {"process", "wasm", "docker"}
    assert report["tiers"]["process"]["available"] is True
    live = report["live"]["process"]
    host = harden.probe()
    assert live["seccomp"] is host["seccomp"]
    assert live["landlock_abi"] == host["landlock_abi"]
    assert "core" in live["rlimits"]
    if not report["tiers"]["docker"]["available"]:
        assert any("docker" in w for w in report["warnings"])


def test_doctor_table_names_each_protection(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for row in ("seccomp filter", "Landlock ABI", "network blocked", "host non-dumpable"):
        assert row in out
    if sys.platform.startswith("linux") and harden.probe()["seccomp"]:
        assert "seccomp" in out.split("process tier in force:")[1]


def test_doctor_refuses_an_unknown_install_target(capsys):
    assert main(["doctor", "--install", "qemu"]) == 2
    assert "only 'wasm'" in capsys.readouterr().err
