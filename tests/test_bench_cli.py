"""``recursa bench list | run | report`` with a scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recursa.bench.harness import ROWS_FILE, read_rows
from recursa.cli import main
from tests.conftest import repl

GREP = (
    "import re\n"
    "m = re.findall(r'special magic numbers for [\\w-]+ is: (\\d{7})', context)\n"
    "FINAL(m[0])"
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    # Every call gets the same reply: the RLM runs it as code; the baselines return it as text.
    path.write_text(json.dumps({"default": repl(GREP)}))
    return path


def test_bench_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("niah", "oolong", "oolong-pairs", "multihop", "longbench-codeqa"):
        assert name in out
    assert "rlm-depth2" in out


def test_bench_run_resume_and_report(tmp_path: Path, script: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    args = [
        "bench", "run", "-b", "niah", "--lengths", "2k", "--methods", "direct,rlm",
        "--model", f"scripted:{script}", "--n", "2", "--out", str(out), "--window", "4096",
        "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    rows = read_rows(out / ROWS_FILE)
    assert len(rows) == 4
    by_method = {r["method"]: r for r in rows}
    assert by_method["rlm"]["score"] == 1.0 and by_method["direct"]["score"] == 0.0
    assert (out / "report.md").exists() and (out / "plots" / "niah-score-vs-length.png").exists()
    # The same command again finds everything done.
    assert main(args) == 0
    assert len(read_rows(out / ROWS_FILE)) == 4
    (out / "report.md").unlink()
    assert main(["bench", "report", str(out), "--no-plots"]) == 0
    assert "| rlm | 2k | 2 | 1.000 |" in (out / "report.md").read_text()


def test_bench_run_with_progress(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "run"
    args = [
        "bench", "run", "-b", "niah-filler", "--lengths", "1k", "--methods", "rlm",
        "--model", f"scripted:{script}", "--n", "1", "--out", str(out), "--no-report",
    ]  # fmt: skip
    assert main(args) == 0
    assert len(read_rows(out / ROWS_FILE)) == 1


def test_bench_errors_are_one_line(
    tmp_path: Path, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["bench", "run", "--model", f"scripted:{script}", "--out", str(tmp_path / "r")]
    assert main([*base, "-b", "niah", "--methods", "nope"]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main([*base, "-b", "oolong", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main([*base, "-b", "nope", "--methods", "rlm"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_a_failed_run_leaves_no_empty_out_folder(tmp_path: Path, script: Path) -> None:
    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    args = [
        "bench", "run", "-b", "oolong", "--data-dir", str(tmp_path / "data"),
        "--model", f"scripted:{script}", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(args) == 2  # the data is missing: found only once the run has started
    assert not out.exists()
    out.mkdir()  # a folder the user made stays
    assert main(args) == 2
    assert out.is_dir()


def test_bench_log_lines_have_no_source_path(capsys: pytest.CaptureFixture[str]) -> None:
    from recursa.cli.bench import _console, _Progress

    progress = _Progress(_console())
    progress.task = progress.bar.add_task("bench", total=1, score="–", cost="$0")
    row = {"task_id": "niah-1", "method": "rlm", "score": 1.0, "wall_time_s": 1.0}
    progress.event("row", {"row": row})
    err = capsys.readouterr().err
    assert "niah-1 · rlm · score 1.00" in err
    assert ".py:" not in err


def test_cost_plot_labels_on_the_same_spot_do_not_overlap() -> None:
    from recursa.bench.report import label_offsets

    taken: dict = {}
    first = label_offsets([0.010, 0.0101, 0.5], [1.0, 1.0, 1.0], taken)  # 8k and 32k: one spot
    assert first[0] != first[1] and first[2] == first[0]
    later = label_offsets([0.0100], [1.0], taken)  # another method's point on the same spot
    assert later[0] not in first[:2]
