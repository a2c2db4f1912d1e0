"""The bench generators: deterministic, sized by tokens, gold answers right by construction."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path

import pytest

from recursa.bench.codeqa import load_longbench, strip_docstrings
from recursa.bench.data import find_data_dir, prose_paragraphs
from recursa.bench.oolong import Record, load_questions, oolong_window
from recursa.bench.pairs import PAIR_TASKS, gold_pairs
from recursa.bench.tasks import length_label, make_tasks, parse_lengths
from recursa.errors import ConfigError
from recursa.limits import approx_tokens

LABEL_CODES = ("ABBR:exp", "ENTY:animal", "DESC:def", "HUM:ind", "LOC:city", "NUM:count")


def write_trec(folder: Path, per_label: int = 12) -> Path:
    """A tiny TREC file (same format as train_5500.label) under ``folder/trec``."""
    (folder / "trec").mkdir(parents=True, exist_ok=True)
    lines = [
        f"{code} What is question number {i} about {code.split(':')[1]} ?"
        for code in LABEL_CODES
        for i in range(per_label)
    ]
    (folder / "trec" / "train_5500.label").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_trec(tmp_path / "data")


def test_parse_lengths() -> None:
    assert parse_lengths("8k, 32k,1m") == [8192, 32768, 1048576]
    assert parse_lengths("2048") == [2048]
    assert length_label(131072) == "128k" and length_label(1048576) == "1m"
    with pytest.raises(ConfigError, match="--lengths"):
        parse_lengths("8 kilo")
    with pytest.raises(ConfigError, match="below 1k"):
        parse_lengths("100")


def test_tasks_are_deterministic_and_hashed() -> None:
    a = make_tasks("niah", [4096], 3, seed=7)
    b = make_tasks("niah", [4096], 3, seed=7)
    c = make_tasks("niah", [4096], 3, seed=8)
    assert [t.sha256 for t in a] == [t.sha256 for t in b]
    assert len({t.sha256 for t in a}) == 3
    assert a[0].sha256 != c[0].sha256
    assert all(re.fullmatch(r"[0-9a-f]{64}", t.sha256) for t in a)


@pytest.mark.parametrize("name", ["niah", "niah-filler", "niah-uuid", "niah-synonyms"])
def test_niah_sizes_and_needles(name: str) -> None:
    tasks = make_tasks(name, [4096], 4, seed=0)
    assert len(tasks) == 4
    depths = [t.meta["depth"] for t in tasks]
    assert depths == sorted(depths, reverse=True)  # deepest first: prefixes shared
    for t in tasks:
        assert abs(approx_tokens(t.context_chars) - 4096) < 0.06 * 4096
        needle = f"for {t.meta['key']} is: {t.gold}."
        assert t.context.count(needle) == 1
        assert t.context.count("special magic") == t.meta["needles"]


def test_niah_synonyms_needs_meaning() -> None:
    for t in make_tasks("niah-synonyms", [4096], 3, seed=1):
        assert t.meta["key"] != t.meta["asked"]
        assert t.meta["asked"] in t.question and t.meta["key"] not in t.question
        assert 21 <= t.meta["needles"] <= 51
        # The asked word is never itself a needle key: grep on it finds no needle.
        assert f"for {t.meta['asked']} is:" not in t.context


def test_niah_prose_is_the_shipped_public_domain_text() -> None:
    paras = prose_paragraphs()
    assert len(paras) > 1000 and paras[0].startswith("PREFACE")
    task = make_tasks("niah", [2048], 1, seed=0)[0]
    assert paras[1][:200] in task.context


def test_oolong_needs_its_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data-dir"):
        make_tasks("oolong", [2048], 1, seed=0, data_dir=None)
    with pytest.raises(ConfigError, match=r"trec/train_5500\.label"):
        make_tasks("oolong", [2048], 1, seed=0, data_dir=tmp_path)


def test_find_data_dir(tmp_path: Path) -> None:
    assert find_data_dir(tmp_path, env={}) == tmp_path
    assert find_data_dir(None, env={"RECURSA_BENCH_DATA": str(tmp_path)}) == tmp_path
    with pytest.raises(ConfigError, match="--data-dir"):
        find_data_dir(tmp_path / "missing", env={})


def _recount(text: str, records: tuple[Record, ...]) -> None:
    lines = [ln for ln in text.splitlines() if ln.startswith("Date: ")]
    assert lines == [r.line() for r in records]


def test_oolong_window_and_gold(data_dir: Path) -> None:
    tasks = make_tasks("oolong", [4096], 12, seed=0, data_dir=data_dir)
    assert len(tasks) == 12
    assert len({t.window for t in tasks}) == 2  # 10 questions per window
    win = oolong_window(4096, 0, 0, load_questions(data_dir, "oolong"))
    _recount(win.text, win.records)
    assert abs(approx_tokens(len(win.text)) - 4096) < 100
    assert re.match(
        r"Date: \w{3} \d\d, \d{4} \|\| User: \d{5} \|\| Instance: ", win.text.splitlines()[2]
    )
    counts = Counter(r.label for r in win.records)
    for t in tasks[:10]:
        assert t.context == win.text
        family = t.meta["family"]
        if family == "count":
            label = re.search(r"labelled '([^']+)'", t.question).group(1)
            assert t.gold == counts[label]
        elif family == "most_common":
            assert counts[t.gold] == max(counts.values())
        elif family == "user_count":
            user = int(re.search(r"user (\d+)", t.question).group(1))
            label = re.search(r"labelled '([^']+)'", t.question).group(1)
            assert t.gold == sum(1 for r in win.records if r.user == user and r.label == label)
    assert {t.meta["family"] for t in tasks[:10]} >= {"count", "compare", "user_count"}
    # The labels are never in the text.
    assert "ABBR" not in win.text and "human being ||" not in win.text


def test_pairs_gold_on_known_records() -> None:
    d = dt.date(2023, 1, 1)
    late = dt.date(2023, 6, 1)
    recs = (
        Record(d, 1, "q", "numeric value"),
        Record(d, 2, "q", "location"),
        Record(d, 3, "q", "entity"),
        Record(late, 4, "q", "human being"),
        Record(d, 5, "q", "human being"),
        Record(d, 4, "q", "location"),
    )
    task1 = PAIR_TASKS[0]  # both users: numeric value or location
    assert gold_pairs(task1, recs) == [(1, 2), (1, 4), (2, 4)]
    task4 = PAIR_TASKS[3]  # human being or location, every human being after Jan 6, 2023
    assert gold_pairs(task4, recs) == [(2, 4)]
    task11 = PAIR_TASKS[10]  # one: entity and abbreviation; other: exactly one entity
    assert gold_pairs(task11, recs) == []
    assert len(PAIR_TASKS) == 20 and [t.number for t in PAIR_TASKS] == list(range(1, 21))


def test_pairs_tasks_share_the_oolong_windows(data_dir: Path) -> None:
    pairs = make_tasks("oolong-pairs", [4096], 20, seed=0, data_dir=data_dir)
    oolong = make_tasks("oolong", [4096], 1, seed=0, data_dir=data_dir)
    assert len(pairs) == 20 and pairs[0].context == oolong[0].context
    assert all(t.scoring == "pairs_f1" for t in pairs)
    assert "lower ID first" in pairs[0].question


def test_multihop_answers_are_unique_and_supported() -> None:
    tasks = make_tasks("multihop", [65536], 3, seed=0)
    assert [t.meta["hops"] for t in tasks] == [2, 3, 4]
    for t in tasks:
        assert isinstance(t.context, dict) and len(t.context) >= t.meta["hops"]
        text = "\n".join(t.context.values())
        assert t.gold[0] in text  # the answer is stated somewhere in the collection
        organiser = re.search(r"organised by (.+?) in the", t.question).group(1)
        assert f"was organised by {organiser}." in text


def test_docstrings_are_stripped() -> None:
    source = (
        'def f(x):\n    """Add one to x, carefully."""\n    return x + 1\n\n'
        'class C:\n    """A class."""\n\n    def m(self):\n        """Say hi.\n\n        Twice.\n'
        '        """\n        return "hi"\n'
    )
    code, docs = strip_docstrings(source)
    assert '"""' not in code
    assert docs == {"f": "Add one to x, carefully.", "C.m": "Say hi.\n\nTwice."}
    compile(code, "<stripped>", "exec")


def test_docstring_tasks() -> None:
    tasks = make_tasks("codeqa-docstring", [8192], 3, seed=0)
    assert len(tasks) == 3
    for t in tasks:
        assert '"""' not in "".join(t.context.values())
        assert t.meta["python"]
        assert t.gold[0].endswith(t.gold[-1])


def test_longbench_items(tmp_path: Path) -> None:
    folder = tmp_path / "longbench2-codeqa"
    folder.mkdir()
    (folder / "sample_001_easy_short.md").write_text(
        "# Metadata\n\n- ID: x1\n- Difficulty: easy\n- Length: short\n\n# Question\n\nWhat?\n\n"
        "# Choices\n\n- A: one\n- B: two\n- C: three\n- D: four\n\n# Answer\n\nC\n"
    )
    (folder / "sample_001_easy_short_context.txt").write_text("def main(): pass\n" * 50)
    (item,) = load_longbench(folder)
    assert item.answer == "C" and item.meta["Length"] == "short"
    (task,) = make_tasks("longbench-codeqa", [], 5, seed=0, data_dir=tmp_path)
    assert task.label == "short" and task.gold == "C" and "(C) three" in task.question


def test_unknown_benchmark() -> None:
    with pytest.raises(ConfigError, match="unknown benchmark"):
        make_tasks("nope", [4096], 1)
